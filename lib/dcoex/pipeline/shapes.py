"""The data's shape and gene names, read from file headers without loading the matrix."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dcoex.expression_tsv import open_tsv_text
from hpc.errors import InputError


@dataclass(frozen=True)
class DataShape:
    """Genes × samples of the expression matrix, and the gene names (row order)."""

    n_genes: int
    n_samples: int
    gene_names: tuple[str, ...]


def shape_from_tsv(path: str | os.PathLike) -> DataShape:
    """Shape of a genes × samples TSV (header = sample names, first column = gene names).

    Streams the file: only the first column of each row is kept (gene names, for the
    gene subset and the per-gene file names).
    """
    path = Path(path)
    try:
        with open_tsv_text(path) as handle:
            handle.readline()  # header: sample names
            names: list[str] = []
            width = None
            for line in handle:
                if not line.strip():
                    continue
                first, _, rest = line.partition("\t")
                names.append(first.strip())
                if width is None:
                    width = rest.count("\t") + 1 if rest else 0
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, EOFError) as exc:
        raise InputError(f"{path}: not a text TSV ({exc})") from None
    if not names or width is None or width == 0:
        raise InputError(f"{path}: no data rows (need a header of sample names and one row per gene)")
    return DataShape(len(names), width, tuple(names))


def shape_from_h5(path: str | os.PathLike) -> DataShape:
    """Shape and gene names of an expression store (``/expr`` (N, S), ``/gene_names``)."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            if "expr" not in h5:
                raise InputError(f"{path}: not an expression store (no /expr dataset)")
            n_genes, n_samples = (int(x) for x in h5["expr"].shape)
            names = tuple(
                n.decode() if isinstance(n, bytes) else str(n) for n in h5["gene_names"][()]
            ) if "gene_names" in h5 else tuple(str(i) for i in range(n_genes))
    except InputError:
        raise
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({exc})") from None
    return DataShape(n_genes, n_samples, names)


def read_shape(expr_tsv: str | None, expr_h5: str | None) -> DataShape:
    """The shape from whichever input was given (exactly one must be)."""
    return shape_from_tsv(expr_tsv) if expr_tsv else shape_from_h5(expr_h5)  # type: ignore[arg-type]
