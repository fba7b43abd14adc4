"""Exit codes and the error types stage CLIs turn into one-line messages."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

#: Some genes of a task failed; the others were written.
EXIT_GENES_FAILED = 1
#: Bad input or bad flags: one line on stderr, nothing written.
EXIT_BAD_INPUT = 2
#: The work does not fit the memory allocation (planned, or a MemoryError at run time).
#: Never 99/100, which mean requeue / error state under SGE.
EXIT_OUT_OF_MEMORY = 3

#: errno values meaning the file system refuses every write (full, over quota, read-only):
#: a per-gene task stops at the first instead of failing gene after gene.
FILESYSTEM_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
#: errno values reported as one line and exit 2 (EXIT_BAD_INPUT) rather than a traceback.
WRITE_REFUSED_ERRNOS = FILESYSTEM_ERRNOS | {errno.EACCES, errno.EPERM}


def write_refused_message(exc: BaseException | None) -> str | None:
    """One line such as ``no space left on device: /out/base_correlations/0001_A.h5`` when
    ``exc`` (or an exception it was raised from) is an OSError of WRITE_REFUSED_ERRNOS, else None.

    The path is the error's file name, or the one HDF5 names in its message; a temporary
    ``.NAME.tmp-PID`` is reported as the output ``NAME`` it stood for.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in WRITE_REFUSED_ERRNOS:
            text = os.strerror(exc.errno).lower()
            path = exc.filename
            if path is None:
                match = re.search(r"filename = '([^']*)'", str(exc))
                path = match.group(1) if match else None
            if path is None:
                return text
            match = re.fullmatch(r"\.(.+)\.tmp-\d+", Path(path).name)
            shown = Path(path).with_name(match.group(1)) if match else Path(path)
            return f"{text}: {shown}"
        exc = exc.__cause__ or exc.__context__
    return None


class InputError(Exception):
    """Bad input: the message is one line naming the file, row/column and problem."""


class GenesFailedError(Exception):
    """Some reference genes of a task could not be processed (others were)."""

    def __init__(self, failures: dict[int, str], done: dict[str, list[int]] | None = None):
        self.failures = failures
        #: What the task did manage: {"written": [...], "skipped": [...]}.
        self.done = done or {"written": [], "skipped": []}
        names = ", ".join(f"{gi} ({why})" for gi, why in sorted(failures.items()))
        super().__init__(f"{len(failures)} gene(s) failed: {names}")
