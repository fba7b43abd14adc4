"""Integer rank products of chosen gene pairs, d = u_i·u_j, from a group's doubled centred ranks
(dcoex.ranks.IntegerRanks.u stored as integers): how readers of a 02a file in the "ranks" r
form (dcoex.edge_files.R_FORMS) get the products 02a computed.

The products of a block of gene rows against every later gene are one BLAS product in the
dtype that holds every partial sum exactly (dcoex.ranks.exact_dtype, as 02a's tiles), so d is
the same integer whatever the blocking; each edge takes its entry. Memory: the ranks in that
dtype (genes × k) and one block of at most BLOCK_CELLS products.
"""

from __future__ import annotations

import numpy as np

from dcoex.ranks import exact_dtype

#: Products held at once (rows of a block × the genes after its first row); at least one row.
BLOCK_CELLS = 1 << 20


class PairProducts:
    """d = u_i·u_j of one group for pairs in ascending (i, j) order, from its integer ranks
    ``u`` (genes × k)."""

    def __init__(self, u: np.ndarray) -> None:
        n, k = u.shape
        self.u = np.asarray(u, dtype=exact_dtype(k, max(k - 1, 1)))
        self.n = n

    def of(self, gene_i: np.ndarray, gene_j: np.ndarray) -> np.ndarray:
        """d of the pairs (gene_i[e], gene_j[e]), gene_i ascending and gene_i < gene_j; in the
        exact dtype (integers)."""
        out = np.empty(gene_i.size, dtype=self.u.dtype)
        if gene_i.size == 0:
            return out
        starts = np.searchsorted(gene_i, np.arange(int(gene_i[0]), int(gene_i[-1]) + 2), side="left")
        first = int(gene_i[0])
        last = int(gene_i[-1])
        a = first
        while a <= last:
            rows = max(1, BLOCK_CELLS // max(self.n - a, 1))
            b = min(last + 1, a + rows)
            lo, hi = starts[a - first], starts[b - first]
            if hi > lo:
                block = self.u[a:b] @ self.u[a:].T
                out[lo:hi] = block[gene_i[lo:hi] - a, gene_j[lo:hi] - a]
            a = b
        return out
