"""Shared options and value parsers of the stage CLIs (errors and exit codes: hpc.cli)."""

from __future__ import annotations

from collections.abc import Callable

import click

from hpc.errors import InputError
from memfit.units import format_bytes


def parse_positive_int(name: str, text: str) -> int:
    """The whole number >= 1 written in ``text`` (the value of option ``name``), or InputError."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise InputError(f"{name} {text!r}: expected a whole number") from None
    if value < 1:
        raise InputError(f"{name} must be >= 1, got {value}")
    return value


def parse_batch_size(value: str) -> int | str:
    """A ``--batch-size`` value: ``"auto"``, ``"all"`` (every item at once) or an int >= 1."""
    text = str(value).strip()
    if text == "auto":
        return "auto"
    if text == "all":
        return 2**62
    return parse_positive_int("--batch-size", text)


def report_memory_error(estimate_bytes: int, limit_bytes: int) -> str:
    """The advice printed when a stage runs out of memory."""
    return (
        f"estimated peak {format_bytes(estimate_bytes)}, limit {format_bytes(limit_bytes)}: "
        "request more memory or use a smaller --batch-size"
    )


#: ``--force`` of every stage: recompute even an output that is current (docs/design.md §7.4).
force_option = click.option("--force", is_flag=True,
                            help="Recompute outputs that are current (record the wanted provenance).")


def gene_selection_options(func: Callable) -> Callable:
    """Click options shared by the per-gene stages (02a, 02b, 03)."""
    options = [
        click.option("--gene-index", type=int, multiple=True, help="Reference gene(s), 0-based; repeatable."),
        click.option("--gene-range", default=None, help="Half-open range a:b of reference genes (0-based)."),
        click.option("--genes-per-task", type=int, default=None, help="Genes per array task; the task comes from --task-id or SGE_TASK_ID/SLURM_ARRAY_TASK_ID (1-based)."),
        click.option("--task-id", type=int, default=None, help="1-based array task id (overrides the scheduler's)."),
        click.option("--gene-list", type=click.Path(), default=None, help="File of genes, one a line: a name, or index:N (0-based): the universe --genes-per-task cuts into tasks."),
        force_option,
        click.option("--quiet", is_flag=True, help="No progress bar."),
    ]
    for option in reversed(options):
        func = option(func)
    return func
