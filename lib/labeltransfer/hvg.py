"""Highly variable genes on raw counts (seurat_v3 flavour, dataset as batch)."""

from __future__ import annotations

import warnings

import anndata
import numpy as np


def select_hvg(adata: anndata.AnnData, n_top: int, batch_key: str = "dataset") -> np.ndarray:
    """Boolean mask of the ``n_top`` highly variable genes of ``adata`` (counts in X, CSR).

    0 or ``n_top`` >= the number of genes keeps every gene. ``adata`` is not modified.
    """
    n_genes = adata.n_vars
    if n_top <= 0 or n_top >= n_genes:
        return np.ones(n_genes, dtype=bool)
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = sc.pp.highly_variable_genes(
            adata, flavor="seurat_v3", n_top_genes=int(n_top), batch_key=batch_key, inplace=False, subset=False
        )
    mask = np.asarray(table["highly_variable"].to_numpy(), dtype=bool)
    return mask
