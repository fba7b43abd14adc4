"""Opening HDF5 inputs with one-line errors, and decoding their strings and attributes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np

from hpc.errors import InputError


def open_h5_input(path: str | os.PathLike, what: str, context: str = "") -> h5py.File:
    """Open ``path`` read-only; InputError naming ``what`` it should be if it cannot."""
    prefix = f"{context}: " if context else ""
    try:
        return h5py.File(Path(path), "r")
    except FileNotFoundError:
        raise InputError(f"{prefix}{what} {path} is missing (no such file)") from None
    except OSError as exc:
        raise InputError(f"{prefix}{what} {path} is not an HDF5 file or is unreadable ({exc})") from None


def attr_value(value: Any) -> Any:
    """An HDF5 attribute value as a plain Python value (bytes decoded, numpy scalars unboxed)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def decode_strings(values: Iterable[object]) -> list[str]:
    """UTF-8 strings of an HDF5 string dataset's values."""
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]
