"""Compiled per-edge pass of stage 02b (numba, parallel over replicates).

:func:`scale_into` turns a replicate block's exact sums into r = (float32(sum)·scale_i)·scale_j
and writes it into (or subtracts it from) the block's Δ rows: the gather of each edge's sum
from the core product, the scaling and Δ = r_H − r_L in one pass over the edges, where NumPy
made five (gather, two scale gathers and products, subtraction). Each output element is
computed by one thread with numpy's float32 operations in numpy's order, so Δ has the bits
of the NumPy passes whatever the thread count.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange


def set_threads(n_threads: int) -> int:
    """Use ``n_threads`` numba threads (at most numba's pool); returns the number set."""
    n = max(1, min(int(n_threads), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n


@njit(cache=True, nogil=True, parallel=True)
def scale_into(raw, index, edges, scale, gene_i, gene_j, out, subtract):  # noqa: PLR0917 - numba kernels take no keyword-only arguments
    """For each replicate b of the block and edge e of ``edges``:
    r = (float32(raw[b, index[e]])·scale[b, gene_i[edges[e]]])·scale[b, gene_j[edges[e]]]
    (float32, numpy's order), then out[b, edges[e]] = r, or −= r when ``subtract``."""
    nb = out.shape[0]
    for b in prange(nb):
        row = raw[b]
        s = scale[b]
        o = out[b]
        for e in range(edges.size):
            edge = edges[e]
            r = np.float32(row[index[e]])
            r *= s[gene_i[edge]]
            r *= s[gene_j[edge]]
            if subtract:
                o[edge] -= r
            else:
                o[edge] = r


@njit(cache=True, nogil=True, parallel=True)
def core_into(rows, cols, edge_ptr, edge_row, edge_col, edges, scale, gene_i, gene_j, out, subtract, row_block):  # noqa: PLR0917 - numba kernels take no keyword-only arguments
    """The core edges of a replicate block, product and scaling fused per block of rows.

    For replicate b and each run of ``row_block`` core rows [r0, r1): the product
    rows[b, r0:r1] · cols[b]ᵀ (BLAS, exact integer sums; small enough to stay in cache),
    then for its edges e in edge_ptr[r0]..edge_ptr[r1] (the core edges ordered by row):
    r = (float32(product[edge_row[e] − r0, edge_col[e]])·scale_i)·scale_j written into
    out[b, edges[e]], or subtracted when ``subtract``. Rows without edges are skipped."""
    nb, n_rows = rows.shape[0], rows.shape[1]
    n_cols = cols.shape[1]
    for b in prange(nb):
        product = np.empty((row_block, n_cols), rows.dtype)
        s = scale[b]
        o = out[b]
        right = cols[b].T
        for r0 in range(0, n_rows, row_block):
            r1 = min(r0 + row_block, n_rows)
            e0, e1 = edge_ptr[r0], edge_ptr[r1]
            if e0 == e1:
                continue
            part = product[: r1 - r0]
            np.dot(rows[b, r0:r1], right, part)
            for e in range(e0, e1):
                edge = edges[e]
                r = np.float32(part[edge_row[e] - r0, edge_col[e]])
                r *= s[gene_i[edge]]
                r *= s[gene_j[edge]]
                if subtract:
                    o[edge] -= r
                else:
                    o[edge] = r
