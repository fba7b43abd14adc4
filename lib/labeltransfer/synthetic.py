"""Synthetic count data with learnable cell types (tests and benchmarks)."""

from __future__ import annotations

import anndata
import numpy as np
import pandas as pd
import scipy.sparse as sp


def synthetic_counts(
    n_cells: int,
    n_genes: int,
    *,
    n_types: int = 4,
    seed: int = 0,
    markers_per_type: int = 20,
    mean_count: float = 0.3,
    batch_shift: float = 0.0,
    label_key: str = "cell_type",
    type_weights: list[float] | None = None,
) -> anndata.AnnData:
    """Poisson-gamma counts (float32 CSR) where each type up-regulates its own marker genes.

    ``mean_count`` is the average expected count of a non-marker gene (sets the sparsity);
    ``batch_shift`` scales every gene by exp(N(0, batch_shift)) to mimic a second technology.
    """
    rng = np.random.default_rng(seed)
    weights = np.ones(n_types) if type_weights is None else np.asarray(type_weights, dtype=float)
    types = rng.choice(n_types, size=n_cells, p=weights / weights.sum())
    gene_rng = np.random.default_rng(12345)  # gene means and markers are shared by every data set
    base = mean_count * gene_rng.gamma(1.0, 1.0, size=n_genes)
    if batch_shift:
        base = base * np.exp(rng.normal(0.0, batch_shift, size=n_genes))
    marker_rng = gene_rng
    markers = [marker_rng.choice(n_genes, size=markers_per_type, replace=False) for _ in range(n_types)]
    library = rng.lognormal(0.0, 0.3, size=n_cells)
    rows = []
    block = max(1, 2_000_000 // max(n_genes, 1))
    for start in range(0, n_cells, block):
        stop = min(n_cells, start + block)
        rate = np.tile(base, (stop - start, 1))
        for t in range(n_types):
            sel = np.flatnonzero(types[start:stop] == t)
            if sel.size:
                rate[np.ix_(sel, markers[t])] *= 6.0
        rate *= library[start:stop, None]
        rows.append(sp.csr_matrix(rng.poisson(rate).astype(np.float32)))
    x = sp.vstack(rows, format="csr")
    obs = pd.DataFrame(
        {label_key: pd.Categorical([f"type_{t}" for t in types])},
        index=[f"cell{seed}_{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(index=[f"gene{g}" for g in range(n_genes)])
    return anndata.AnnData(X=x, obs=obs, var=var)
