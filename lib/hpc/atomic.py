"""Write outputs under a temporary name in the same folder; rename when complete."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

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
    """Yield a temporary path; on success rename it to ``path``; on any failure (of the
    block or of the rename) delete it."""
    final = Path(path)
    ensure_writable_dir(final.parent)
    tmp = temporary_name(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename is None:
            exc.filename = str(final)  # name the output in the message (a full disk, say)
        raise


def remove_temporaries(folder: str | os.PathLike, pid: int) -> list[Path]:
    """Delete the temporary files (``temporary_name``) that process ``pid`` left anywhere under
    ``folder``: a process killed by a signal, or by a crash inside a library, cannot remove
    its own. Returns the files removed."""
    suffix = f".tmp-{pid}"
    removed: list[Path] = []
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if name.startswith(".") and name.endswith(suffix):
                path = Path(root, name)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    return removed
