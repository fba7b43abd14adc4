"""Tiny .h5ad files for the label-transfer tests (written with anndata, checked with numpy)."""

from __future__ import annotations

import sys
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "src" / "scripts" / "labeltransfer" / "label_transfer.py"
SLURM_SCRIPT = ROOT / "src" / "SLURM_scripts" / "run_label_transfer.sh"
SGE_SCRIPT = ROOT / "src" / "SGE_scripts" / "run_label_transfer.sh"
PYTHON = sys.executable


def counts_adata(
    n_cells: int,
    genes: list[str],
    *,
    seed: int = 0,
    n_types: int = 3,
    label_key: str = "cell_type",
    rare: dict[str, int] | None = None,
    dense: bool = False,
    dtype=np.float32,
) -> anndata.AnnData:
    """Poisson counts of ``n_types`` learnable types; ``rare`` relabels the first cells as small types."""
    import zlib

    from labeltransfer.synthetic import synthetic_counts

    # every gene name maps to a fixed column of one 1000-gene universe, so a gene has the same
    # distribution (and marker role) in every file whatever its position
    data = synthetic_counts(n_cells, 1000, n_types=n_types, seed=seed, mean_count=0.4, label_key=label_key,
                            markers_per_type=100)
    columns = [zlib.crc32(g.encode()) % 1000 for g in genes]
    labels = data.obs[label_key].astype(str).to_numpy().copy()
    if rare:
        start = 0
        for name, count in rare.items():
            labels[start : start + count] = name
            start += count
    x = sp.csr_matrix(data.X[:, columns]).astype(dtype)
    obs = pd.DataFrame({label_key: pd.Categorical(labels), "batch": "b0"}, index=[f"s{seed}_c{i}" for i in range(n_cells)])
    var = pd.DataFrame(index=pd.Index(genes))
    return anndata.AnnData(X=x.toarray() if dense else sp.csr_matrix(x), obs=obs, var=var)


def gene_names(n: int, prefix: str = "g") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def write(adata: anndata.AnnData, path: Path) -> Path:
    adata.write_h5ad(path)
    return path


def dense_of(adata: anndata.AnnData) -> np.ndarray:
    return adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)


def invoke(args: list[str], capsys) -> tuple[int, str]:
    """Run the label_transfer CLI in this process: (exit code, stderr)."""
    import pytest

    from hpc.cli import run_command
    from labeltransfer.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        run_command(main, args)
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.err + captured.out
