"""The one HDF5 I/O layer of dcoex: opening inputs, attributes, dataset filters.

Every writer in the project goes through this module (docs/file_formats.md):

- ``write_attrs(obj, mapping)``: Python values → HDF5 attributes with one coercion rule
  (``attr_for_h5``): str/bytes/Path as UTF-8 variable-length strings, booleans as int64
  0/1 (h5py would write an HDF5 enum, which R's rhdf5 reads as NA), other integers as
  int64, floats as float64, sequences as arrays of those types; ``None`` is skipped.
- ``dataset_options(...)`` / ``write_dataset(...)``: the compression policy (shuffle + gzip
  level 4 by default, chunks of about ``CHUNK_BYTES`` along the first axis; empty or tiny
  datasets stored contiguous and unfiltered).
- ``read_meta(group)``: attributes back as plain Python values (``attr_value``).
- ``link_dataset(group, alias, target)``: a second name for an existing dataset (an HDF5
  hard link: no data copied), used for the established pipeline's names.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

import h5py
import numpy as np

from hpc.errors import InputError

#: Default gzip (deflate) level of every filtered dataset (the established pipeline's level).
GZIP_LEVEL = 4
#: Target bytes of one chunk (chunks span whole rows of the trailing axes).
CHUNK_BYTES = 1 << 20
#: Datasets smaller than this (bytes) are stored contiguous, without filters.
MIN_FILTERED_BYTES = 4096
#: Variable-length UTF-8 string type of every string dataset and attribute.
STRING_DTYPE = h5py.string_dtype("utf-8")
#: Compressions accepted by ``dataset_options``.
COMPRESSIONS = ("gzip", "lzf", "none")


def open_h5_input(path: str | os.PathLike, what: str, context: str = "") -> h5py.File:
    """Open ``path`` read-only; InputError naming ``what`` it should be if it cannot."""
    prefix = f"{context}: " if context else ""
    try:
        return h5py.File(Path(path), "r")
    except FileNotFoundError:
        raise InputError(f"{prefix}{what} {path} is missing (no such file)") from None
    except OSError as exc:
        raise InputError(f"{prefix}{what} {path} is not an HDF5 file or is unreadable ({exc})") from None


# --------------------------------------------------------------------------- attributes


def attr_for_h5(value: Any) -> Any:
    """The value an HDF5 attribute stores for ``value`` (``None`` for "write nothing").

    bool → int64 0/1 (like every integer); int → int64; float → float64; str/bytes/Path →
    str (UTF-8 variable length); numpy arrays and lists/tuples → arrays with the same element
    rule (strings as variable-length UTF-8). TypeError for anything else (dicts, objects).
    """
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return np.int64(1 if value else 0)
    if isinstance(value, (int, np.integer)):
        return np.int64(value)
    if isinstance(value, (float, np.floating)):
        return np.float64(value)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, (str, PurePath)):
        return str(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        array = np.asarray(value)
        if array.dtype.kind in "biu":
            return array.astype(np.int64)
        if array.dtype.kind == "f":
            return array.astype(np.float64)
        if array.dtype.kind in "USO":
            return np.array([str(attr_value(v)) for v in array.ravel()], dtype=object).reshape(array.shape)
    raise TypeError(f"cannot store {type(value).__name__} {value!r} as an HDF5 attribute")


def write_attrs(obj: h5py.HLObject, mapping: Mapping[str, Any]) -> None:
    """Set the attributes of ``obj`` (file, group or dataset) from ``mapping`` by the rule
    of ``attr_for_h5``; ``None`` values are skipped (an existing attribute is left alone)."""
    for key, value in mapping.items():
        stored = attr_for_h5(value)
        if stored is None:
            continue
        if isinstance(stored, str) or (isinstance(stored, np.ndarray) and stored.dtype == object):
            obj.attrs.create(key, stored, dtype=STRING_DTYPE)
        else:
            obj.attrs[key] = stored


def attr_value(value: Any) -> Any:
    """An HDF5 attribute value as a plain Python value (bytes decoded, numpy scalars
    unboxed, arrays as lists)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [attr_value(v) for v in value.tolist()] if value.dtype == object else value.tolist()
    return value


def plain_attr(value: Any) -> Any:
    """What reading back ``write_attrs({k: value})`` gives (``read_meta``'s value): compare
    expected parameters with stored ones through it (True → 1, numpy → Python)."""
    return attr_value(attr_for_h5(value))


def read_meta(obj: h5py.HLObject) -> dict[str, Any]:
    """The attributes of ``obj`` as plain Python values (str, int, float, lists)."""
    return {key: attr_value(value) for key, value in obj.attrs.items()}


def decode_strings(values: Iterable[object]) -> list[str]:
    """UTF-8 strings of an HDF5 string dataset's values."""
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


# --------------------------------------------------------------------------- datasets


def dataset_options(
    shape: Sequence[int],
    dtype: Any,
    *,
    compression: str = "gzip",
    level: int = GZIP_LEVEL,
    chunks: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """``create_dataset`` keyword arguments of the compression policy.

    A dataset of at least ``MIN_FILTERED_BYTES`` bytes (variable-length strings count 16
    bytes per element) is chunked — ``chunks`` if given, else whole trailing rows, about
    ``CHUNK_BYTES`` per chunk — and filtered: shuffle + gzip ``level`` ("gzip"), shuffle +
    LZF ("lzf"), nothing ("none"). Smaller or empty datasets: contiguous, no filter.
    """
    filters = filter_options(compression, level)
    shape = tuple(int(s) for s in shape)
    dt = np.dtype(dtype)
    itemsize = 16 if dt.kind == "O" else dt.itemsize
    n_bytes = int(np.prod(shape, dtype=np.int64)) * itemsize
    if not shape or n_bytes < MIN_FILTERED_BYTES:
        return {}
    if chunks is None:
        row_bytes = max(1, int(np.prod(shape[1:], dtype=np.int64)) * itemsize)
        chunks = (max(1, min(shape[0], CHUNK_BYTES // row_bytes)), *shape[1:])
    return {"chunks": tuple(chunks), **filters}


def filter_options(compression: str = "gzip", level: int | None = GZIP_LEVEL) -> dict[str, Any]:
    """The filter part of ``dataset_options`` alone, for a chunked dataset whose chunks the
    caller chooses (resizable or directly written datasets): shuffle + gzip ``level``
    (``None`` = ``GZIP_LEVEL``), shuffle + LZF, or nothing."""
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": GZIP_LEVEL if level is None else int(level), "shuffle": True}
    if compression == "lzf":
        return {"compression": "lzf", "shuffle": True}
    if compression == "none":
        return {}
    raise ValueError(f"unknown compression {compression!r}; expected one of {', '.join(COMPRESSIONS)}")


def write_dataset(
    group: h5py.Group,
    name: str,
    data: Any,
    *,
    dtype: Any = None,
    compression: str = "gzip",
    level: int = GZIP_LEVEL,
) -> h5py.Dataset:
    """Create ``group[name]`` from ``data`` (converted to ``dtype`` if given) with the
    options of ``dataset_options``; strings become variable-length UTF-8. Deterministic
    bytes (no timestamps are stored by h5py)."""
    array = np.asarray(data)
    if dtype is not None and np.dtype(dtype).kind != "O":
        array = np.ascontiguousarray(array, dtype=dtype)
    if array.dtype.kind in "USO":
        array = np.array([str(attr_value(v)) for v in array.ravel()], dtype=object).reshape(array.shape)
        return group.create_dataset(name, data=array, dtype=STRING_DTYPE,
                                    **dataset_options(array.shape, object, compression=compression, level=level))
    return group.create_dataset(name, data=array,
                                **dataset_options(array.shape, array.dtype, compression=compression, level=level))


def link_dataset(group: h5py.Group, alias: str, target: str) -> None:
    """Make ``group[alias]`` a hard link to the existing dataset ``group[target]`` (same
    data, no copy; both names are equal in HDF5). Intermediate groups are created."""
    group[alias] = group[target]
