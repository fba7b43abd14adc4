"""The expression store ``expression.h5``: a genes × samples float32 matrix with names.

Layout (docs/design.md §3.2):

- ``/expr``: float32 (N, S), chunked by rows (``ROW_CHUNK_BYTES`` per chunk);
- ``/gene_names`` (N,) and ``/sample_names`` (S,): UTF-8 variable-length strings;
- root attrs ``n_genes``, ``n_samples`` and ``content_sha256``.

``content_sha256`` is the hex SHA-256 of, in this order:

1. the float32 matrix as little-endian bytes in C order (row 0 first, N·S·4 bytes);
2. every gene name, UTF-8 encoded, each followed by one ``\\n`` byte;
3. every sample name, UTF-8 encoded, each followed by one ``\\n`` byte.

It identifies the numbers and the names (not the compression or the file), so two stores
converted from the same TSV with different filters share it. Later stages record it and
refuse inputs whose sha differs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import h5py
import numpy as np

from dcoex.h5io import decode_strings, filter_options, open_h5_input, write_attrs, write_dataset
from hpc.errors import InputError

#: Target size of one ``/expr`` chunk (bytes): a block of whole rows.
ROW_CHUNK_BYTES = 256 * 1024


def rows_per_chunk(n_samples: int) -> int:
    """Rows per ``/expr`` chunk: whole rows, about ``ROW_CHUNK_BYTES`` bytes, 1..64."""
    return int(max(1, min(64, ROW_CHUNK_BYTES // (4 * max(n_samples, 1)))))


class ContentHasher:
    """Incremental ``content_sha256``: feed row blocks in order, then the names."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def update_rows(self, rows: np.ndarray) -> None:
        """Add a (rows, S) block of the matrix (converted to little-endian float32, C order)."""
        block = np.ascontiguousarray(rows, dtype="<f4")
        self._sha.update(memoryview(block).cast("B"))

    def hexdigest(self, gene_names: Iterable[str], sample_names: Iterable[str]) -> str:
        """Finish with the names; returns the hex digest (the hasher is not reusable)."""
        for names in (gene_names, sample_names):
            for name in names:
                self._sha.update(str(name).encode("utf-8") + b"\n")
        return self._sha.hexdigest()


def content_sha256(matrix: np.ndarray, gene_names: Sequence[str], sample_names: Sequence[str]) -> str:
    """``content_sha256`` of an in-memory matrix and its names (see the module docstring)."""
    hasher = ContentHasher()
    hasher.update_rows(matrix)
    return hasher.hexdigest(gene_names, sample_names)


class ExpressionStore:
    """An open ``expression.h5`` (read-only). Use as a context manager or call ``close()``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._file = open_h5_input(self.path, "expression store")
        try:
            self._validate()
        except InputError:
            self._file.close()
            raise

    def _validate(self) -> None:
        f = self._file
        for name in ("expr", "gene_names", "sample_names"):
            if name not in f or not isinstance(f[name], h5py.Dataset):
                raise InputError(f"{self.path}: not an expression store: missing dataset /{name}")
        expr = f["expr"]
        if expr.ndim != 2 or expr.dtype.kind != "f":
            raise InputError(
                f"{self.path}: /expr must be a 2-D float matrix, found {expr.ndim}-D {expr.dtype}"
            )
        self.n_genes, self.n_samples = (int(x) for x in expr.shape)
        self.gene_names = decode_strings(f["gene_names"][()])
        self.sample_names = decode_strings(f["sample_names"][()])
        if len(self.gene_names) != self.n_genes:
            raise InputError(
                f"{self.path}: /gene_names has {len(self.gene_names)} names for {self.n_genes} rows of /expr"
            )
        if len(self.sample_names) != self.n_samples:
            raise InputError(
                f"{self.path}: /sample_names has {len(self.sample_names)} names for {self.n_samples} columns of /expr"
            )
        self._sha = f.attrs.get("content_sha256")
        if isinstance(self._sha, bytes):
            self._sha = self._sha.decode()

    @property
    def expr(self) -> h5py.Dataset:
        """The ``/expr`` dataset (lazy)."""
        return self._file["expr"]

    @property
    def content_sha256(self) -> str:
        """The stored ``content_sha256``; computed from the data if the attribute is missing."""
        if not self._sha:
            hasher = ContentHasher()
            step = max(1, rows_per_chunk(self.n_samples) * 16)
            for start in range(0, self.n_genes, step):
                hasher.update_rows(self.read_rows(slice(start, start + step)))
            self._sha = hasher.hexdigest(self.gene_names, self.sample_names)
        return str(self._sha)

    def read_rows(self, rows: slice | Sequence[int] | np.ndarray) -> np.ndarray:
        """Rows of the matrix as a float32 (len(rows), S) array, in the order asked."""
        if isinstance(rows, slice):
            return np.asarray(self.expr[rows], dtype=np.float32)
        wanted = np.asarray(rows, dtype=np.int64).reshape(-1)
        if wanted.size == 0:
            return np.empty((0, self.n_samples), dtype=np.float32)
        if wanted.min() < 0 or wanted.max() >= self.n_genes:
            raise InputError(f"{self.path}: row index out of range 0..{self.n_genes - 1}")
        unique, inverse = np.unique(wanted, return_inverse=True)
        if unique.size == unique[-1] - unique[0] + 1:
            block = self.expr[int(unique[0]) : int(unique[-1]) + 1]
        else:
            block = self.expr[unique]
        return np.asarray(block, dtype=np.float32)[inverse]

    def read_all(self) -> np.ndarray:
        """The whole matrix, float32 (N, S)."""
        return self.read_rows(slice(None))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ExpressionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_expression(path: str | os.PathLike) -> ExpressionStore:
    """Open ``expression.h5`` for reading; InputError naming the file and what is missing."""
    return ExpressionStore(path)


class ExpressionWriter:
    """Stream rows into a new ``expression.h5`` at ``path`` (the caller makes it atomic).

    ``append(names, rows)`` adds a block of genes; ``finish()`` writes the names and the
    attributes and returns the content sha. Memory: one row block plus the gene names.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        sample_names: Sequence[str],
        compression: str = "gzip",
        compression_level: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.sample_names = [str(s) for s in sample_names]
        n_samples = len(self.sample_names)
        self._file = h5py.File(self.path, "w")
        self._expr = self._file.create_dataset(
            "expr",
            shape=(0, n_samples),
            maxshape=(None, n_samples),
            dtype=np.float32,
            chunks=(rows_per_chunk(n_samples), n_samples),
            **filter_options(compression, compression_level),
        )
        self.gene_names: list[str] = []
        self._hasher = ContentHasher()

    @property
    def file(self) -> h5py.File:
        """The open h5py file (for extra attributes such as ``/memfit``)."""
        return self._file

    def append(self, gene_names: Sequence[str], rows: np.ndarray) -> None:
        """Append a block of rows (float32-convertible, shape (len(gene_names), S))."""
        block = np.ascontiguousarray(rows, dtype=np.float32)
        if block.shape != (len(gene_names), len(self.sample_names)):
            raise ValueError(f"block shape {block.shape} does not match {len(gene_names)} names")
        start = self._expr.shape[0]
        self._expr.resize(start + block.shape[0], axis=0)
        self._expr[start:] = block
        self._hasher.update_rows(block)
        self.gene_names.extend(str(g) for g in gene_names)

    def finish(self) -> str:
        """Write names and attributes; returns ``content_sha256``. The file stays open."""
        f = self._file
        write_dataset(f, "gene_names", np.array(self.gene_names, dtype=object))
        write_dataset(f, "sample_names", np.array(self.sample_names, dtype=object))
        sha = self._hasher.hexdigest(self.gene_names, self.sample_names)
        shape = {"n_genes": len(self.gene_names), "n_samples": len(self.sample_names)}
        write_attrs(f, {**shape, "content_sha256": sha})
        write_attrs(self._expr, shape)  # the established pipeline's /expr attributes
        return sha

    def close(self) -> None:
        self._file.close()


def write_expression(
    path: str | os.PathLike,
    matrix: np.ndarray,
    gene_names: Sequence[str],
    sample_names: Sequence[str],
    *,
    compression: str = "gzip",
    compression_level: int | None = None,
) -> str:
    """Write an in-memory matrix as ``expression.h5`` (not atomic; for tests and examples)."""
    writer = ExpressionWriter(path, sample_names, compression, compression_level)
    try:
        writer.append(gene_names, matrix)
        return writer.finish()
    finally:
        writer.close()
