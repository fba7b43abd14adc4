"""Exit codes and the error types stage CLIs turn into one-line messages."""

from __future__ import annotations

#: Some genes of a task failed; the others were written.
EXIT_GENES_FAILED = 1
#: Bad input or bad flags: one line on stderr, nothing written.
EXIT_BAD_INPUT = 2
#: The work does not fit the memory allocation (planned, or a MemoryError at run time).
#: Never 99/100, which mean requeue / error state under SGE.
EXIT_OUT_OF_MEMORY = 3


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
