"""Write outputs under a temporary name in the same folder; rename when complete."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from hpc.errors import InputError


def temporary_name(path: str | os.PathLike) -> Path:
    """The hidden temporary sibling used while ``path`` is being written."""
    final = Path(path)
    return final.with_name(f".{final.name}.tmp-{os.getpid()}")


def ensure_writable_dir(directory: str | os.PathLike) -> Path:
    """Create ``directory`` if missing; InputError if it cannot be written."""
    folder = Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{folder}: cannot create output folder ({exc.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{folder}: output folder is not writable")
    return folder


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success rename it to ``path``, on failure delete it."""
    final = Path(path)
    ensure_writable_dir(final.parent)
    tmp = temporary_name(final)
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.replace(tmp, final)
