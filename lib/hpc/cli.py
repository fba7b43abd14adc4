"""The CLI error wrapper shared by every command line tool (stages, label transfer, helpers).

Known failures become one line on stderr and an exit code from :mod:`hpc.errors`.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

import click

from hpc.errors import (
    EXIT_BAD_INPUT,
    EXIT_GENES_FAILED,
    EXIT_OUT_OF_MEMORY,
    GenesFailedError,
    InputError,
    write_refused_message,
)
from hpc.schedulers import SubmitError
from memfit.plan import MemoryPlanError


def run_command(command: click.Command, args: Sequence[str] | None = None, *, prog: str | None = None) -> NoReturn:
    """Run a click command; turn known failures into one line on stderr and an exit code.

    InputError (and a refused submission, SubmitError) -> 2; a write the file system refuses
    (full, read-only, no permission: ``write_refused_message``) -> 2; MemoryPlanError / MemoryError
    -> 3 (with the estimate, the limit and what to change); GenesFailedError -> 1; anything
    else -> the traceback followed by a one-line summary, exit 1.
    """
    prog = prog or command.name or "dcoex"
    try:
        command.main(args=list(args) if args is not None else None, prog_name=prog, standalone_mode=False)
    except click.exceptions.Abort:
        print(f"{prog}: aborted", file=sys.stderr)
        sys.exit(1)
    except click.ClickException as exc:
        print(f"{prog}: error: {exc.format_message()}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except (InputError, SubmitError) as exc:
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
        refused = write_refused_message(exc)
        if refused:  # a full, read-only or forbidden file system: one line
            print(f"{prog}: error: {refused}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        traceback.print_exc()
        print(f"{prog}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
    sys.exit(0)
