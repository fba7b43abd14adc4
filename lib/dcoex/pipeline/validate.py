"""Which outputs already exist and validate, so a rerun submits only what is missing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from dcoex.genes import gene_file_path
from hpc.errors import InputError


def _h5_ok(path: Path, need: Sequence[str] = (), attrs: dict | None = None) -> bool:
    """The file opens as HDF5, holds the ``need`` objects and ``meta``/root attrs match."""
    if not path.is_file():
        return False
    try:
        import h5py

        with h5py.File(path, "r") as h5:
            if any(name not in h5 for name in need):
                return False
            if attrs:
                meta = h5["meta"].attrs if "meta" in h5 else h5.attrs
                for key, value in attrs.items():
                    if key in meta and _differs(meta[key], value):
                        return False
    except (OSError, KeyError, ValueError):
        return False
    return True


def _differs(stored, wanted) -> bool:
    if isinstance(stored, bytes):
        stored = stored.decode()
    try:
        return abs(float(stored) - float(wanted)) > 1e-12 * max(1.0, abs(float(wanted)))
    except (TypeError, ValueError):
        return str(stored) != str(wanted)


def expression_valid(path: Path, source_tsv: str | os.PathLike | None = None) -> bool:
    """``path`` holds ``/expr``, and (given ``source_tsv``) was converted from that TSV's
    current content (root attribute ``source_sha256``; a file without it is not trusted)."""
    if not _h5_ok(path, need=("expr",)):
        return False
    if source_tsv is None:
        return True
    from dcoex.expression_tsv import tsv_sha256
    from dcoex.h5io import attr_value

    try:
        import h5py

        with h5py.File(path, "r") as h5:
            stored = attr_value(h5.attrs.get("source_sha256"))
        return stored is not None and str(stored) == tsv_sha256(source_tsv)
    except (OSError, InputError):
        return False


def indices_valid(path: Path, params: dict) -> bool:
    wanted = {k: params[k] for k in ("low_frac", "high_frac", "n_bootstrap", "bootstrap_frac", "seed")}
    return _h5_ok(path, need=("indices",), attrs=wanted)


def gene_output_valid(directory: Path, gene_index: int, gene_name: str, n_genes: int) -> bool:
    path = gene_file_path(directory, gene_index, gene_name, n_genes)
    return _h5_ok(path, need=("meta",), attrs={"gene_index_used": gene_index})


def collect_valid(summary: Path, hubs_tsv: Path) -> bool:
    return hubs_tsv.is_file() and _h5_ok(summary)


def missing_tasks(
    directory: Path, task_genes: dict[int, list[int]], gene_names: Sequence[str], n_genes: int
) -> list[int]:
    """Tasks (1-based) with at least one gene whose output is missing or invalid."""
    if not directory.is_dir():
        return sorted(task_genes)
    return sorted(
        task for task, genes in task_genes.items()
        if not all(gene_output_valid(directory, gi, gene_names[gi], n_genes) for gi in genes)
    )
