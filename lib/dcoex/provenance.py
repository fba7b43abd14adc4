"""Provenance: what an output was computed from, and the one rule for "current".

Every output records, in the attribute group ``/provenance`` written by
:func:`write_provenance`: the stage id, its file format name and version, the dcoex version,
the parameters that change its content (only those, as ``param:<name>``) and the digest of
every input it was computed from (``input:<name>``), plus its own ``digest``.

An output is *current* iff its recorded provenance equals the provenance its stage would
record now (:func:`why_stale` returns None). The stage (skip unless ``--force``) and the
planner (resume) both compute the wanted provenance with the stage's contract
(``dcoex.stages.<stage>.contract``), so they cannot disagree. ``dcoex_version`` is
recorded but not compared: a release that changes what a stage computes bumps that stage's
format version. The rule is written down in docs/design.md §7.

The digest of an output is the SHA-256 of its canonical provenance (stage, format, version,
parameters, input digests). Outputs are deterministic functions of exactly these (tested:
same inputs and seed give h5diff-identical files for any batch, task split or scheduler),
so equal digests mean equal content, and a digest can be computed before the output exists:
the planner chains them down the pipeline without reading any data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

GROUP = "provenance"
PARAM_PREFIX = "param:"
INPUT_PREFIX = "input:"


def _plain(value: Any) -> int | float | str:
    """A parameter value in its canonical, HDF5-storable form (bool → 0/1, None → "")."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return ""
    if isinstance(value, (int, float, str)):
        return value
    return str(value)


def digest_of(*parts: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of ``parts``."""
    text = json.dumps([_canonical(p) for p in parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return _plain(value)


@dataclass(frozen=True)
class Provenance:
    """What one output is (stage, format) and was computed from (parameters, input digests)."""

    stage: str
    format: str
    format_version: int
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", {k: _plain(v) for k, v in sorted(self.params.items())})
        object.__setattr__(self, "inputs", {k: str(v) for k, v in sorted(self.inputs.items())})

    @property
    def digest(self) -> str:
        return digest_of(self.stage, self.format, self.format_version, self.params, self.inputs)

    def differences(self, wanted: Provenance) -> list[str]:
        """Why an output with this (recorded) provenance is not ``wanted``: short phrases."""
        why: list[str] = []
        if (self.stage, self.format) != (wanted.stage, wanted.format):
            why.append(f"is a {self.format} file of stage {self.stage}, not {wanted.format}")
        elif self.format_version != wanted.format_version:
            why.append(f"format version {self.format_version} → {wanted.format_version}")
        for name in sorted(set(self.params) | set(wanted.params)):
            old, new = self.params.get(name, "(unset)"), wanted.params.get(name, "(unset)")
            if old != new:
                why.append(f"{name} {_show(old)} → {_show(new)}")
        for name in sorted(set(self.inputs) | set(wanted.inputs)):
            if self.inputs.get(name) != wanted.inputs.get(name):
                why.append(f"input {name} changed")
        return why


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def write_provenance(h5: h5py.File | h5py.Group, prov: Provenance, *, extra: Mapping[str, Any] | None = None) -> None:
    """Write ``prov`` as the attributes of ``h5[/provenance]`` (replacing any); ``extra``
    attributes (not compared) may record facts about the written output itself."""
    from dcoex import __version__

    if GROUP in h5:
        del h5[GROUP]
    attrs = h5.create_group(GROUP).attrs
    attrs["stage"] = prov.stage
    attrs["format"] = prov.format
    attrs["format_version"] = int(prov.format_version)
    attrs["dcoex_version"] = __version__
    attrs["digest"] = prov.digest
    for name, value in prov.params.items():
        attrs[PARAM_PREFIX + name] = value
    for name, value in prov.inputs.items():
        attrs[INPUT_PREFIX + name] = value
    for name, value in (extra or {}).items():
        attrs[name] = _plain(value)


def _value(raw: Any) -> Any:
    if isinstance(raw, bytes):
        return raw.decode("utf-8")
    if isinstance(raw, np.generic):
        return raw.item()
    return raw


def read_provenance(source: str | Path | h5py.File) -> Provenance | None:
    """The provenance recorded in a file (path or open h5py.File), or None if it has none or
    cannot be read."""
    if not isinstance(source, h5py.File):
        try:
            with h5py.File(source, "r") as h5:
                return read_provenance(h5)
        except (OSError, KeyError, ValueError):
            return None
    if GROUP not in source:
        return None
    try:
        attrs = {k: _value(v) for k, v in source[GROUP].attrs.items()}
        return Provenance(
            stage=str(attrs["stage"]), format=str(attrs["format"]), format_version=int(attrs["format_version"]),
            params={k[len(PARAM_PREFIX):]: v for k, v in attrs.items() if k.startswith(PARAM_PREFIX)},
            inputs={k[len(INPUT_PREFIX):]: v for k, v in attrs.items() if k.startswith(INPUT_PREFIX)},
        )
    except (KeyError, ValueError, TypeError):
        return None


def read_provenance_attr(path: str | Path, name: str) -> Any:
    """One extra attribute of the ``/provenance`` group (None if absent or unreadable)."""
    try:
        with h5py.File(path, "r") as h5:
            return _value(h5[GROUP].attrs[name]) if GROUP in h5 and name in h5[GROUP].attrs else None
    except (OSError, KeyError, ValueError):
        return None


def why_stale(path: str | Path, wanted: Provenance) -> str | None:
    """None if ``path`` exists and records exactly ``wanted``; otherwise why it must be
    (re)computed, as one short phrase ("missing", "fdr_alpha 0.05 → 0.3", "input … changed")."""
    path = Path(path)
    if not path.exists():
        return "missing"
    recorded = read_provenance(path)
    if recorded is None:
        return "no provenance (unreadable, or written by an older dcoex)"
    differences = recorded.differences(wanted)
    return "; ".join(differences) if differences else None
