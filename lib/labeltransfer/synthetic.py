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


def novel_type_split(
    n_reference: int, n_query: int, n_genes: int, *, n_types: int = 4, seed: int = 0, mean_count: float = 0.3,
    markers_per_type: int = 20, batch_shift: float = 0.3, label_key: str = "cell_type",
) -> tuple[anndata.AnnData, anndata.AnnData, str]:
    """A reference of ``n_types`` types and a query (a second "technology": ``batch_shift``) of the
    same types plus one planted query-only type; (reference, query, name of the novel type).

    Types share their marker genes across calls (synthetic_counts draws them in type order from
    a fixed generator), so type k is the same type in both sets; the novel type is type ``n_types``
    and has a query share of 1 / (n_types + 1).
    """
    reference = synthetic_counts(n_reference, n_genes, n_types=n_types, seed=2 * seed + 1, mean_count=mean_count,
                                 markers_per_type=markers_per_type, label_key=label_key)
    query = synthetic_counts(n_query, n_genes, n_types=n_types + 1, seed=2 * seed + 2, mean_count=mean_count,
                             markers_per_type=markers_per_type, batch_shift=batch_shift, label_key=label_key)
    return reference, query, f"type_{n_types}"


def sparse_counts(
    n_cells: int, n_genes: int, *, density: float = 0.05, n_types: int = 8, seed: int = 0,
    markers_per_type: int = 200, label_key: str = "cell_type", block_cells: int = 5_000,
) -> anndata.AnnData:
    """Large sparse counts of about ``density`` stored values, made without a dense matrix.

    Each row draws Binomial(n_genes, density × library) gene positions from its type's gene
    distribution (gamma gene weights; the type's markers × 4), duplicates merged (so the
    density is a little lower), values 1 + Poisson(0.6). Memory: the CSR itself plus one block.
    """
    rng = np.random.default_rng(seed)
    gene_rng = np.random.default_rng(12345)
    weights = gene_rng.gamma(0.5, 1.0, size=n_genes)
    cdfs = []
    for _ in range(n_types):
        w = weights.copy()
        w[gene_rng.choice(n_genes, size=min(markers_per_type, n_genes), replace=False)] *= 4.0
        cdfs.append(np.cumsum(w) / w.sum())
    types = rng.integers(0, n_types, size=n_cells)
    library = np.clip(rng.lognormal(0.0, 0.3, size=n_cells), 0.2, 1.0 / max(density, 1e-9))
    data, indices, indptr = [], [], [np.zeros(1, dtype=np.int64)]
    offset = 0
    for start in range(0, n_cells, block_cells):
        stop = min(n_cells, start + block_cells)
        k = rng.binomial(n_genes, np.clip(density * library[start:stop], 0, 1))
        row = np.repeat(np.arange(stop - start, dtype=np.int64), k)
        u = rng.random(len(row))
        col = np.empty(len(row), dtype=np.int64)
        cell_type = types[start:stop][row]
        for t in range(n_types):
            sel = cell_type == t
            col[sel] = np.minimum(np.searchsorted(cdfs[t], u[sel]), n_genes - 1)
        key = np.unique(row * n_genes + col)
        r, c = key // n_genes, (key % n_genes).astype(np.int32)
        data.append((1 + rng.poisson(0.6, size=len(key))).astype(np.float32))
        indices.append(c)
        indptr.append(offset + np.cumsum(np.bincount(r, minlength=stop - start)))
        offset += len(key)
    x = sp.csr_matrix((np.concatenate(data), np.concatenate(indices), np.concatenate(indptr)), shape=(n_cells, n_genes))
    obs = pd.DataFrame({label_key: pd.Categorical([f"type_{t}" for t in types])},
                       index=[f"cell{seed}_{i}" for i in range(n_cells)])
    var = pd.DataFrame(index=[f"gene{g}" for g in range(n_genes)])
    return anndata.AnnData(X=x, obs=obs, var=var)
