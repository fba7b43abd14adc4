"""Filter reference cell types, intersect genes, load float32 CSR and concatenate (inner join)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from hpc.errors import InputError
from labeltransfer.io import H5adHeader, load_csr

#: Fewer common genes than this is refused: scVI cannot learn a useful latent space.
MIN_COMMON_GENES = 200
REFERENCE, QUERY = "reference", "query"


@dataclass(frozen=True)
class GeneOverlap:
    """Common genes (reference order) and their column indices in each file."""

    names: list[str]
    reference_index: np.ndarray
    query_index: np.ndarray
    n_reference: int
    n_query: int

    @property
    def n_common(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict:
        return {
            "n_reference_genes": self.n_reference,
            "n_query_genes": self.n_query,
            "n_common": self.n_common,
            "n_reference_only": self.n_reference - self.n_common,
            "n_query_only": self.n_query - self.n_common,
        }


def intersect_genes(
    reference_genes: list[str], query_genes: list[str], min_common: int = MIN_COMMON_GENES
) -> GeneOverlap:
    """Genes present in both files, in reference order; InputError if too few or duplicated."""
    query_set = set(query_genes)
    common = [g for g in reference_genes if g in query_set]
    common_set = set(common)
    dup = sorted(
        {g for g, c in Counter(reference_genes).items() if c > 1 and g in common_set}
        | {g for g, c in Counter(query_genes).items() if c > 1 and g in common_set}
    )
    if dup:
        shown = ", ".join(dup[:5]) + (" ..." if len(dup) > 5 else "")
        raise InputError(f"{len(dup)} duplicate gene name(s) among the common genes: {shown}; make var_names unique")
    if not common:
        raise InputError("reference and query share no gene names (check var_names: symbols vs Ensembl ids?)")
    if len(common) < min_common:
        raise InputError(f"only {len(common)} common genes between reference and query; at least {min_common} are needed")
    ref_pos = {g: i for i, g in enumerate(reference_genes)}
    query_pos = {g: i for i, g in enumerate(query_genes)}
    return GeneOverlap(
        common,
        np.array([ref_pos[g] for g in common], dtype=np.int64),
        np.array([query_pos[g] for g in common], dtype=np.int64),
        len(reference_genes),
        len(query_genes),
    )


@dataclass(frozen=True)
class TypeFilter:
    """Reference rows kept after dropping cell types below the minimum count."""

    rows: np.ndarray
    kept: dict[str, int]
    dropped: dict[str, int]
    n_unlabelled: int

    def message(self, min_cells: int) -> str:
        if not self.dropped:
            return f"kept all {len(self.kept)} cell types (each has >= {min_cells} cells)"
        shown = ", ".join(f"{k} ({v})" for k, v in sorted(self.dropped.items()))
        return f"dropped {len(self.dropped)} cell type(s) with fewer than {min_cells} cells: {shown}"


def filter_cell_types(labels: pd.Series, min_cells: int, label_key: str) -> TypeFilter:
    """Rows whose label has at least ``min_cells`` cells; InputError if none is left."""
    values = labels.to_numpy(dtype=object)
    missing = pd.isna(values)
    counts = Counter(str(v) for v in values[~missing])
    kept = {k: v for k, v in counts.items() if v >= min_cells}
    dropped = {k: v for k, v in counts.items() if v < min_cells}
    if not kept:
        raise InputError(
            f"every reference cell type in {label_key!r} has fewer than {min_cells} cells "
            f"(largest: {max(counts.values()) if counts else 0}); lower --min-cells-per-type"
        )
    keep = np.array([not m and str(v) in kept for v, m in zip(values, missing)], dtype=bool)
    return TypeFilter(np.flatnonzero(keep), kept, dropped, int(missing.sum()))


def load_reference(
    header: H5adHeader, rows: np.ndarray, overlap: GeneOverlap, check_integer: bool = True
) -> sp.csr_matrix:
    """The kept reference rows on the common genes: float32 CSR."""
    return load_csr(header, rows, overlap.reference_index, check_integer, role=REFERENCE)


def load_query(header: H5adHeader, overlap: GeneOverlap, check_integer: bool = True) -> sp.csr_matrix:
    """All query rows on the common genes: float32 CSR."""
    return load_csr(header, np.arange(header.n_obs), overlap.query_index, check_integer, role=QUERY)


def concatenate(reference: sp.csr_matrix, query: sp.csr_matrix) -> tuple[sp.csr_matrix, pd.Categorical]:
    """Stack reference over query (same genes) as float32 CSR, with the ``dataset`` label."""
    if reference.shape[1] != query.shape[1]:
        raise ValueError("reference and query must be cut to the same genes before concatenation")
    combined = sp.vstack([reference, query], format="csr", dtype=np.float32)
    dataset = pd.Categorical(
        [REFERENCE] * reference.shape[0] + [QUERY] * query.shape[0], categories=[REFERENCE, QUERY]
    )
    return combined, dataset
