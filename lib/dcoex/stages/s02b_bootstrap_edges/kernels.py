"""Compiled per-edge passes of stage 02b (numba, parallel over replicates).

- :func:`core_deltas` (the host path of the dense core): per replicate and block of core
  rows, both groups' products (BLAS, small enough to stay in cache) and at once each edge's
  r_H, r_L and Δ = r_H − r_L, where NumPy wrote each whole product to memory and made six
  passes over the edges (two gathers, four scale gathers and products, the subtraction);
- :func:`row_moments`: the per-edge counts and float64 sums of the statistics
  (science.boot_stats) with numpy's summation order, and the C-ordered copy numpy's sort
  then orders for the percentiles (a SIMD sort beats a compiled selection here);
- :func:`gathered_sums`: the edges outside the dense core, Σ_p c_p·u_i,p·u_j,p per replicate
  straight from the rank rows (where NumPy gathered both rows of every edge into scratch
  arrays, multiplied and summed them: ~10× the time, memory-bound);
- :func:`scale_into`: sums already computed (gathered dot products; a GPU's gathered core
  sums) → r = (float32(sum)·scale_i)·scale_j written into, or subtracted from, the Δ rows.

Each output element is computed by one thread with numpy's operations in numpy's order, so
Δ and the statistics have the bits of the NumPy passes whatever the thread count.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

#: numpy's pairwise summation block (PW_BLOCKSIZE).
PAIRWISE_BLOCK = 128
#: numpy's ufunc buffer (elements): a float32 → float64 sum is added in chunks of it.
UFUNC_BUFFER = 8192
#: Rows row_moments copies together from the strided (B, E) buffer (512 bytes of each row).
EDGE_RUN = 128


def set_threads(n_threads: int) -> int:
    """Use ``n_threads`` numba threads (at most numba's pool); returns the number set."""
    n = max(1, min(int(n_threads), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n


@njit(cache=True, nogil=True, parallel=True)
def gathered_sums(u, counts, li, lj, out):  # noqa: PLR0917 - numba kernels take no keyword-only arguments
    """out[b, e] = Σ_p (u[b, li[e], p]·u[b, lj[e], p])·counts[b, p] in u's dtype: integer
    products and partial sums below 2**24 (float32) or 2**53 (float64), so exact in any
    order and equal to numpy's gathered products."""
    nb, k = u.shape[0], u.shape[2]
    for b in prange(nb):
        ub = u[b]
        cb = counts[b]
        ob = out[b]
        for e in range(li.size):
            ri = ub[li[e]]
            rj = ub[lj[e]]
            acc = ri[0] * 0
            for p in range(k):
                acc += (ri[p] * rj[p]) * cb[p]
            ob[e] = acc


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
def core_deltas(rows_h, cols_h, scale_h, rows_l, cols_l, scale_l, row_ptr, row_gene, edge_col, edge_gene_j, edges,  # noqa: PLR0917 - numba kernels take no keyword-only arguments
                out, row_block):
    """The core edges' Δ of a replicate block, both groups' products and the Δ fused per
    block of rows.

    For replicate b and each run of ``row_block`` core rows [r0, r1): the products
    rows[b, r0:r1] · cols[b]ᵀ of both groups (BLAS, exact integer sums; small enough to stay
    in cache), then for each row r (gene row_gene[r]) its edges e in row_ptr[r]..row_ptr[r + 1]:
    r_G = (float32(product_G[r − r0, edge_col[e]])·scale_G[b, gene_i])·scale_G[b, edge_gene_j[e]]
    and out[b, edges[e]] = r_H − r_L (float32, numpy's operations in numpy's order). Rows
    without edges are skipped."""
    nb, n_rows = rows_h.shape[0], rows_h.shape[1]
    n_cols = cols_h.shape[1]
    for b in prange(nb):
        prod_h = np.empty((row_block, n_cols), rows_h.dtype)
        prod_l = np.empty((row_block, n_cols), rows_l.dtype)
        sh, sl, o = scale_h[b], scale_l[b], out[b]
        right_h, right_l = cols_h[b].T, cols_l[b].T
        for r0 in range(0, n_rows, row_block):
            r1 = min(r0 + row_block, n_rows)
            if row_ptr[r0] == row_ptr[r1]:
                continue
            np.dot(rows_h[b, r0:r1], right_h, prod_h[: r1 - r0])
            np.dot(rows_l[b, r0:r1], right_l, prod_l[: r1 - r0])
            for r in range(r0, r1):
                gene = row_gene[r]
                sh_i, sl_i = sh[gene], sl[gene]
                ph, pl = prod_h[r - r0], prod_l[r - r0]
                for e in range(row_ptr[r], row_ptr[r + 1]):
                    c, gene_j = edge_col[e], edge_gene_j[e]
                    vh = np.float32(ph[c])
                    vh *= sh_i
                    vh *= sh[gene_j]
                    vl = np.float32(pl[c])
                    vl *= sl_i
                    vl *= sl[gene_j]
                    o[edges[e]] = vh - vl


@njit(cache=True, nogil=True)
def _pairwise(a, lo, n):
    """numpy's pairwise float64 sum of a[lo:lo + n] (float32 values converted): the same
    additions in the same order (numpy's pairwise_sum, blocks of PAIRWISE_BLOCK, 8 lanes)."""
    if n < 8:
        res = -0.0
        for i in range(lo, lo + n):
            res += np.float64(a[i])
        return res
    if n <= PAIRWISE_BLOCK:
        r0, r1 = np.float64(a[lo]), np.float64(a[lo + 1])
        r2, r3 = np.float64(a[lo + 2]), np.float64(a[lo + 3])
        r4, r5 = np.float64(a[lo + 4]), np.float64(a[lo + 5])
        r6, r7 = np.float64(a[lo + 6]), np.float64(a[lo + 7])
        stop = n - n % 8
        i = 8
        while i < stop:
            r0 += np.float64(a[lo + i])
            r1 += np.float64(a[lo + i + 1])
            r2 += np.float64(a[lo + i + 2])
            r3 += np.float64(a[lo + i + 3])
            r4 += np.float64(a[lo + i + 4])
            r5 += np.float64(a[lo + i + 5])
            r6 += np.float64(a[lo + i + 6])
            r7 += np.float64(a[lo + i + 7])
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += np.float64(a[lo + i])
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise(a, lo, n2) + _pairwise(a, lo + n2, n - n2)


@njit(cache=True, nogil=True)
def _row_sum(a, n):
    """numpy's ``a[:n].sum(dtype=np.float64)`` of a float32 row: pairwise within each chunk of
    numpy's cast buffer (UFUNC_BUFFER elements), chunks added in order."""
    total = 0.0
    for c0 in range(0, n, UFUNC_BUFFER):
        total += _pairwise(a, c0, min(UFUNC_BUFFER, n - c0))
    return total


@njit(cache=True, nogil=True, parallel=True)
def row_moments(deltas, e0, block, total, squares, n_finite, n_pos, n_neg, n_workers):  # noqa: PLR0917 - numba kernels take no keyword-only arguments
    """For rows e0..e0 + n of ``deltas`` (E, B), any strides (the transposed (B, E) buffer):
    a C-ordered copy into ``block`` (n, B), and per row over its finite values: the count,
    how many are > 0 and < 0, the float64 sum and the float64 sum of (x − float32(sum/count))²
    (float32 differences and squares) — the sums numpy's ``sum(axis=1, dtype=np.float64)``
    gives, bit for bit, for the row with its non-finite values as 0. Rows are copied in runs
    of EDGE_RUN (whole pages of the strided source); workers take runs in turn."""
    n, n_boot = block.shape
    n_runs = (n + EDGE_RUN - 1) // EDGE_RUN
    for worker in prange(n_workers):
        work = np.empty(n_boot, np.float32)
        for run in range(worker, n_runs, n_workers):
            s0 = run * EDGE_RUN
            s1 = min(s0 + EDGE_RUN, n)
            for b in range(n_boot):
                for e in range(s0, s1):
                    block[e, b] = deltas[e0 + e, b]
            for e in range(s0, s1):
                row = block[e]
                nf = pos = neg = 0
                for b in range(n_boot):  # branch-free (NaN compares false)
                    x = row[b]
                    nf += np.isfinite(x)
                    pos += x > 0
                    neg += x < 0
                if nf == n_boot:
                    sum1 = _row_sum(row, n_boot)
                    m32 = np.float32(sum1 / max(nf, 1))
                    for b in range(n_boot):
                        c = row[b] - m32
                        work[b] = c * c
                else:
                    for b in range(n_boot):
                        work[b] = row[b] if np.isfinite(row[b]) else np.float32(0)
                    sum1 = _row_sum(work, n_boot)
                    m32 = np.float32(sum1 / max(nf, 1))
                    for b in range(n_boot):
                        x = row[b]
                        c = x - m32
                        work[b] = c * c if np.isfinite(x) else np.float32(0)
                total[e], squares[e] = sum1, _row_sum(work, n_boot)
                n_finite[e], n_pos[e], n_neg[e] = nf, pos, neg
