"""Shared plumbing of the stage CLIs: error handling, exit codes, common options."""

from __future__ import annotations

import sys
import traceback
from typing import Callable, NoReturn, Sequence

import click

from hpc.errors import (
    EXIT_BAD_INPUT,
    EXIT_GENES_FAILED,
    EXIT_OUT_OF_MEMORY,
    GenesFailedError,
    InputError,
)
from memfit.plan import MemoryPlanError
from memfit.units import format_bytes


def run_command(command: click.Command, args: Sequence[str] | None = None) -> NoReturn:
    """Run a click command; turn known failures into one line on stderr and an exit code.

    InputError -> 2; MemoryPlanError / MemoryError -> 3 (with the estimate, the limit
    and what to change); GenesFailedError -> 1; anything else -> the traceback followed
    by a one-line summary, exit 1.
    """
    prog = command.name or "dcoex"
    try:
        command.main(args=list(args) if args is not None else None, prog_name=prog, standalone_mode=False)
    except click.exceptions.Abort:
        print(f"{prog}: aborted", file=sys.stderr)
        sys.exit(1)
    except click.ClickException as exc:
        print(f"{prog}: error: {exc.format_message()}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except InputError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except MemoryPlanError as exc:
        print(exc.estimate.table(), file=sys.stderr)
        print(f"{prog}: out of memory (planned): {exc}", file=sys.stderr)
        sys.exit(EXIT_OUT_OF_MEMORY)
    except MemoryError as exc:
        print(
            f"{prog}: out of memory at run time ({exc or 'MemoryError'}); "
            "see the estimate above; request more memory or lower --batch-size",
            file=sys.stderr,
        )
        sys.exit(EXIT_OUT_OF_MEMORY)
    except GenesFailedError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_GENES_FAILED)
    except Exception as exc:  # noqa: BLE001 - last resort: keep the traceback, add one line
        traceback.print_exc()
        print(f"{prog}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
    sys.exit(0)


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


def gene_selection_options(func: Callable) -> Callable:
    """Click options shared by the per-gene stages (02a, 02b, 03)."""
    options = [
        click.option("--gene-index", type=int, multiple=True, help="Reference gene(s), 0-based; repeatable."),
        click.option("--gene-range", default=None, help="Half-open range a:b of reference genes (0-based)."),
        click.option("--genes-per-task", type=int, default=None, help="Genes per array task; the task comes from --task-id or SGE_TASK_ID/SLURM_ARRAY_TASK_ID (1-based)."),
        click.option("--task-id", type=int, default=None, help="1-based array task id (overrides the scheduler's)."),
        click.option("--gene-list", type=click.Path(), default=None, help="File of gene names or indices: the universe --genes-per-task cuts into tasks."),
        click.option("--force", is_flag=True, help="Recompute genes whose output already exists and validates."),
        click.option("--quiet", is_flag=True, help="No progress bar."),
    ]
    for option in reversed(options):
        func = option(func)
    return func
