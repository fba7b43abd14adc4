"""The stage contract: what a stage declares once, and everything derived from it.

A :class:`StageContract` names the stage (id, package, output), its upstream stages, its
parameters (:class:`Param`: flag, default, validation, whether it enters provenance and
whether the driver offers it) and how the digests of its inputs are found. From that one
declaration come: the stage's click options (:meth:`StageContract.click_options`), the
driver's science flags and their help (``dcoex.pipeline.options``), the wanted provenance
used by the stage and by the planner (:meth:`StageContract.wanted`), and the docs tables
(``python -m dcoex.stages`` prints them).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import click

from dcoex.provenance import Provenance
from hpc.errors import InputError


@dataclass(frozen=True)
class Param:
    """One parameter of a stage. ``parse`` turns command-line text into the value (raising
    InputError with one line); ``content``: it changes the output (enters provenance);
    ``driver``: ``run_bootstrap_pipeline.sh`` offers it and passes it on; ``added``: a content
    parameter added after outputs without it were written, whose default is what they hold:
    it enters provenance only when set to another value, so those outputs stay current
    (docs/design.md §7.2)."""

    name: str
    default: Any
    help: str
    parse: Callable[[str], Any]
    content: bool = True
    driver: bool = True
    switch: bool = False
    metavar: str = "X"
    added: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def value(self, raw: Any) -> Any:
        """The validated value of ``raw`` (text or already typed; None → the default)."""
        if raw is None:
            return self.default
        if self.switch:
            return bool(raw)
        return self.parse(str(raw))

    def click_option(self) -> Callable:
        if self.switch:
            return click.option(self.flag, self.name, is_flag=True, default=False, help=self.help)
        show = self.default is not None
        return click.option(self.flag, self.name, type=_ClickParse(self), default=self.default,
                            show_default=show, metavar=self.metavar, help=self.help)


class _ClickParse(click.ParamType):
    """A click type that validates with the Param's own parser (one-line errors)."""

    def __init__(self, param: Param) -> None:
        self.param = param
        self.name = param.metavar

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None or not isinstance(value, str):
            return value
        return self.param.parse(value)  # InputError: one line, exit 2 (dcoex.cli.run_command)


class MissingUpstream(InputError):
    """An input a stage needs does not exist or records no provenance."""


class Upstream(Protocol):
    """Where a stage's input digests come from: the files on disk (the stage running), or
    the planner's chain of wanted provenance (resume)."""

    def provenance(self, stage: str, gene: int | None) -> Provenance:
        """The provenance of ``stage``'s output (of ``gene`` for a per-gene stage); raises
        MissingUpstream if there is none."""


@dataclass(frozen=True)
class StageContract:
    """One stage, declared once. ``inputs_of(params, upstream, gene)`` gives the digests of the
    inputs an output of this stage is computed from."""

    stage: str
    package: str
    title: str
    output: str
    per_gene: bool
    upstream: tuple[str, ...]
    params: tuple[Param, ...]
    format: str
    format_version: int
    inputs_of: Callable[[Mapping[str, Any], Upstream, int | None], dict[str, str]]
    notes: str = ""
    files: tuple[str, ...] = field(default_factory=tuple)
    #: An array stage over its own work units (not genes): ``parts(values)`` = the file names,
    #: in ``output``, of units 0, 1, …; unit u is array task u + 1.
    parts: Callable[[Mapping[str, Any]], list[str]] | None = None
    #: Run only when named in the driver's ``--stages``.
    optional: bool = False
    #: Stages it waits for, and reruns after, when they run in the same chain, without reading
    #: their provenance (05: the optional permutation results of 07/08, digested from the files).
    runs_after: tuple[str, ...] = field(default_factory=tuple)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"stage {self.stage} has no parameter {name!r}")

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def resolve(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Every parameter's validated value: from ``values`` where given, else its default."""
        return {p.name: p.value(values.get(p.name)) for p in self.params}

    def content_params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters that enter provenance, with their values (defaults filled in)."""
        resolved = self.resolve(values)
        return {p.name: resolved[p.name] for p in self.params
                if p.content and not (p.added and resolved[p.name] == p.default)}

    def wanted(self, values: Mapping[str, Any], upstream: Upstream, gene: int | None = None) -> Provenance:
        """The provenance this stage records for its output (of ``gene``) given ``values``."""
        return Provenance(stage=self.stage, format=self.format, format_version=self.format_version,
                          params=self.content_params(values), inputs=self.inputs_of(values, upstream, gene))

    def click_options(self, func: Callable) -> Callable:
        """Decorate a click command with this stage's parameters (in declaration order)."""
        for p in reversed(self.params):
            func = p.click_option()(func)
        return func

    @property
    def module(self) -> str:
        """The module ``python -m`` runs: ``dcoex.stages.<package>``."""
        return f"dcoex.stages.{self.package}"

    @property
    def estimator(self) -> Callable[..., Any]:
        """The stage's memory estimator, ``estimator.estimate`` beside this contract (bytes)."""
        return importlib.import_module(f"{self.module}.estimator").estimate

    def output_path(self, out_dir: Path) -> Path:
        """The output (file, or folder of per-gene files) in a run's ``out_dir``."""
        return Path(out_dir) / self.output
