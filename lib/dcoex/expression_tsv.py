"""Stream a genes × samples expression TSV (optionally gzip-compressed) in row blocks.

Accepted layouts: a header of sample names with or without a leading name for the gene
column (R's ``write.table`` omits it), then one row per gene: the gene name followed by
one number per sample. Quoted fields are unquoted. Every problem is an InputError whose
one-line message names the file, the line (1-based, header = line 1) or column, and the
problem.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, TextIO

import numpy as np

from hpc.errors import InputError

#: Fewest samples a matrix may have.
MIN_SAMPLES = 10
#: Genes parsed per block: bounds the parser's memory whatever the number of genes.
DEFAULT_BLOCK_ROWS = 256

csv.field_size_limit(2**31 - 1)


def _open_bytes(path: Path) -> BinaryIO:
    """The file's bytes, decompressed when it starts with the gzip magic (whatever its name)."""
    try:
        with open(path, "rb") as probe:
            magic = probe.read(2)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def open_tsv_text(path: str | os.PathLike) -> TextIO:
    """A TSV (plain or gzip) as UTF-8 text, line endings kept; InputError if unreadable."""
    return io.TextIOWrapper(_open_bytes(Path(path)), encoding="utf-8", newline="")


def tsv_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of the TSV's decompressed bytes: the same for a file and its gzip copy."""
    sha = hashlib.sha256()
    try:
        with _open_bytes(Path(path)) as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                sha.update(chunk)
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    return sha.hexdigest()


class TsvExpressionReader:
    """Header, layout and row blocks of an expression TSV; use as a context manager."""

    def __init__(
        self,
        path: str | os.PathLike,
        block_rows: int = DEFAULT_BLOCK_ROWS,
        min_samples: int = MIN_SAMPLES,
    ) -> None:
        self.path = Path(path)
        self.block_rows = max(1, int(block_rows))
        self._handle = open_tsv_text(self.path)
        self._rows = csv.reader(self._handle, delimiter="\t")
        try:
            self._read_header(min_samples)
        except (UnicodeDecodeError, EOFError, OSError, csv.Error) as exc:
            self.close()
            raise InputError(f"{self.path}: cannot parse as TSV ({exc})") from None
        except InputError:
            self.close()
            raise

    def _next_row(self) -> list[str] | None:
        for row in self._rows:
            if row and any(cell.strip() for cell in row):
                return row
        return None

    def _read_header(self, min_samples: int) -> None:
        header = self._next_row()
        if header is None:
            raise InputError(f"{self.path}: empty file (no header, no data)")
        self._header_line = self._rows.line_num
        first = self._next_row()
        if first is None:
            raise InputError(f"{self.path}: header only, no data rows")
        if len(first) == len(header) + 1:
            samples = header
        elif len(first) == len(header):
            samples = header[1:]
        else:
            raise InputError(
                f"{self.path}: line {self._rows.line_num}: {len(first)} fields but the header "
                f"(line {self._header_line}) has {len(header)} (ragged rows)"
            )
        self.sample_names = [s.strip() for s in samples]
        self.n_samples = len(self.sample_names)
        if self.n_samples < min_samples:
            raise InputError(
                f"{self.path}: line {self._header_line}: {self.n_samples} samples, "
                f"at least {min_samples} are needed"
            )
        seen: dict[str, int] = {}
        for column, name in enumerate(self.sample_names):
            if "\x00" in name:  # HDF5 strings end at NUL
                raise InputError(f"{self.path}: line {self._header_line}: sample name {name!r} contains a NUL character")
            if name in seen:
                raise InputError(
                    f"{self.path}: line {self._header_line}: duplicate sample name {name!r} "
                    f"(sample columns {seen[name] + 1} and {column + 1})"
                )
            seen[name] = column
        self._pending: tuple[int, list[str]] | None = (self._rows.line_num, first)
        self._gene_lines: dict[str, int] = {}

    def _check_row(self, line: int, row: list[str]) -> str:
        if len(row) != self.n_samples + 1:
            raise InputError(
                f"{self.path}: line {line}: {len(row)} fields, expected {self.n_samples + 1} "
                f"(gene name + {self.n_samples} samples) (ragged rows)"
            )
        gene = row[0].strip()
        if "\x00" in gene:  # HDF5 strings end at NUL
            raise InputError(f"{self.path}: line {line}: gene name {gene!r} contains a NUL character")
        if gene in self._gene_lines:
            raise InputError(
                f"{self.path}: line {line}: duplicate gene name {gene!r} "
                f"(first on line {self._gene_lines[gene]})"
            )
        self._gene_lines[gene] = line
        return gene

    def _convert(self, lines: list[int], genes: list[str], cells: list[list[str]]) -> np.ndarray:
        try:
            with np.errstate(over="ignore"):
                block = np.array(cells, dtype=np.float32)
        except ValueError:
            block = None
        if block is None or block.shape != (len(cells), self.n_samples):
            for line, gene, row in zip(lines, genes, cells):
                for column, cell in enumerate(row):
                    try:
                        float(cell)
                    except ValueError:
                        raise InputError(
                            f"{self.path}: line {line}, column {column + 2} (gene {gene!r}, "
                            f"sample {self.sample_names[column]!r}): non-numeric value {cell.strip()[:40]!r}"
                        ) from None
            raise InputError(f"{self.path}: lines {lines[0]}-{lines[-1]}: cannot convert to numbers")
        finite = np.isfinite(block)
        if not finite.all():
            r, c = (int(x) for x in np.argwhere(~finite)[0])
            raise InputError(
                f"{self.path}: line {lines[r]}, column {c + 2}: {cells[r][c].strip()!r} for gene "
                f"{genes[r]!r}, sample {self.sample_names[c]!r} (NaN/inf, or beyond float32 range, not allowed)"
            )
        return block

    def blocks(self) -> Iterator[tuple[list[str], np.ndarray]]:
        """Yield (gene names, float32 (rows, S) block) in file order."""
        lines: list[int] = []
        genes: list[str] = []
        cells: list[list[str]] = []
        try:
            while True:
                if self._pending is not None:
                    line, row = self._pending
                    self._pending = None
                else:
                    row = self._next_row()
                    if row is None:
                        break
                    line = self._rows.line_num
                genes.append(self._check_row(line, row))
                lines.append(line)
                cells.append(row[1:])
                if len(cells) >= self.block_rows:
                    yield genes, self._convert(lines, genes, cells)
                    lines, genes, cells = [], [], []
        except (UnicodeDecodeError, EOFError, OSError, csv.Error) as exc:
            raise InputError(f"{self.path}: cannot parse as TSV ({exc})") from None
        if cells:
            yield genes, self._convert(lines, genes, cells)

    def read_all(self) -> tuple[list[str], np.ndarray]:
        """All genes and the whole float32 matrix (N, S)."""
        names: list[str] = []
        parts: list[np.ndarray] = []
        for genes, block in self.blocks():
            names.extend(genes)
            parts.append(block)
        return names, np.concatenate(parts, axis=0)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> TsvExpressionReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

