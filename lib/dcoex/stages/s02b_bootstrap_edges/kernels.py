"""Compiled per-edge passes of stage 02b (numba, parallel over replicates).

- :func:`core_deltas` (the host path of the dense core): per replicate and block of core
  rows, both groups' products (BLAS, small enough to stay in cache) and at once each edge's
  r_H, r_L and Δ = r_H − r_L, where NumPy wrote each whole product to memory and made six
  passes over the edges (two gathers, four scale gathers and products, the subtraction);
- :func:`rank_products`, :func:`rank_scales`: the resamples' integer ranks (one BLAS
  product per run of replicates, the runs in parallel) and each gene's scale in one pass;
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
def rank_products(counts, signs_t, out, n_parts):
    """out[b0:b1] = counts[b0:b1] · signs_t for ``n_parts`` runs of replicates in parallel
    (BLAS inside each, single-threaded): the resamples' integer ranks from the sign matrices,
    exact integer sums whatever the blocking."""
    nb = counts.shape[0]
    step = (nb + n_parts - 1) // n_parts
    for part in prange(n_parts):
        b0 = part * step
        b1 = min(b0 + step, nb)
        if b0 < b1:
            np.dot(counts[b0:b1], signs_t, out[b0:b1])


@njit(cache=True, nogil=True, parallel=True)
def sorted_ranks(counts, order, tie_row, first, last, kr, u):  # noqa: PLR0917 - numba kernels take no keyword-only arguments
    """u[b, g, order[g, s]] = 2·cum_s − w_s − kr along gene g's sorted order (w_s the count of
    its s-th smallest value in resample b, cum_s the inclusive cumulative count: below minus
    above); a gene with ties (tie_row[g] = t >= 0) gives every value of a tie run spanning
    sorted positions f..l = first[t, s]..last[t, s] (cum_f − w_f) + cum_l − kr. Integer counts
    in float32 (exact); the (replicate, gene) pairs in parallel."""
    nb, g, k = u.shape
    for t in prange(nb * g):
        b = t // g
        i = t % g
        row = tie_row[i]
        if row < 0:
            cum = np.float32(0.0)
            for s in range(k):
                p = order[i, s]
                w = counts[b, p]
                cum += w
                u[b, i, p] = (cum * np.float32(2.0) - w) - kr
        else:
            cums = np.empty(k, np.float32)
            cum = np.float32(0.0)
            for s in range(k):
                cum += counts[b, order[i, s]]
                cums[s] = cum
            for s in range(k):
                f, la = first[row, s], last[row, s]
                u[b, i, order[i, s]] = ((cums[f] - counts[b, order[i, f]]) + cums[la]) - kr


@njit(cache=True, nogil=True, parallel=True)
def rank_scales(u, counts, scale):
    """scale[b, g] = float32(1 / sqrt(Σ_p counts[b, p]·u[b, g, p]²)), the sum an exact integer
    in float64; NaN where it is 0 (a gene constant in the resample)."""
    nb, g, k = u.shape
    for b in prange(nb):
        for i in range(g):
            total = 0.0
            for p in range(k):
                v = np.float64(u[b, i, p])
                total += np.float64(counts[b, p]) * (v * v)
            scale[b, i] = np.float32(1.0 / np.sqrt(total)) if total > 0 else np.float32(np.nan)


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
def core_deltas(u_h, counts_h, scale_h, u_l, counts_l, scale_l, n_rows, n_cols, row_ptr, edge_col, edges, out,  # noqa: PLR0917 - numba kernels take no keyword-only arguments
                row_block, n_runs):
    """The core edges' Δ of a replicate block, both groups' products and the Δ fused per
    block of rows.

    The core's rows are ranks u[b, 0:n_rows] and its columns u[b, n_rows:n_rows + n_cols]
    (EdgeLayout's ranked order). For replicate b and each run of ``row_block`` rows
    [r0, r1): the rows weighted by the resample's counts, their products with the columns
    (BLAS, exact integer sums; small enough to stay in cache) in both groups, then for each
    row r its edges e in row_ptr[r]..row_ptr[r + 1] (column c = edge_col[e]):
    r_G = (float32(product_G[r − r0, c])·scale_G[b, r])·scale_G[b, n_rows + c] and
    out[b, edges[e]] = r_H − r_L (float32, numpy's operations in numpy's order). Rows
    without edges are skipped. ``n_runs`` runs of (replicate, row block) pairs (the caller
    gives 4 per thread) run in parallel, each with its own buffers, so a block of one replicate
    (large groups, many genes) still uses every thread; the results do not depend on the runs."""
    nb, k_h, k_l = u_h.shape[0], u_h.shape[2], u_l.shape[2]
    n_blocks = (n_rows + row_block - 1) // row_block
    total = nb * n_blocks
    n_runs = max(1, min(total, n_runs))
    for run in prange(n_runs):  # runs of (replicate, row block) pairs: parallel even for one replicate
        prod_h = np.empty((row_block, n_cols), u_h.dtype)
        prod_l = np.empty((row_block, n_cols), u_l.dtype)
        left_h = np.empty((row_block, k_h), u_h.dtype)
        left_l = np.empty((row_block, k_l), u_l.dtype)
        for t in range(run * total // n_runs, (run + 1) * total // n_runs):
            b = t // n_blocks
            r0 = (t % n_blocks) * row_block
            r1 = min(r0 + row_block, n_rows)
            if row_ptr[r0] != row_ptr[r1]:
                _core_block(u_h[b], counts_h[b], scale_h[b], u_l[b], counts_l[b], scale_l[b], n_rows, n_cols, r0,
                            r1, row_ptr, edge_col, edges, out[b], prod_h[: r1 - r0], prod_l[: r1 - r0],
                            left_h[: r1 - r0], left_l[: r1 - r0])


@njit(cache=True, nogil=True)
def _core_block(u_h, ch, sh, u_l, cl, sl, n_rows, n_cols, r0, r1, row_ptr, edge_col, edges, o, prod_h, prod_l,  # noqa: PLR0917 - numba kernels take no keyword-only arguments
                left_h, left_l):
    """core_deltas for one replicate's rows [r0, r1), in the caller's buffers of r1 − r0 rows."""
    k_h, k_l = left_h.shape[1], left_l.shape[1]
    for r in range(r0, r1):
        for p in range(k_h):
            left_h[r - r0, p] = u_h[r, p] * ch[p]
        for p in range(k_l):
            left_l[r - r0, p] = u_l[r, p] * cl[p]
    np.dot(left_h, u_h[n_rows : n_rows + n_cols].T, prod_h)
    np.dot(left_l, u_l[n_rows : n_rows + n_cols].T, prod_l)
    for r in range(r0, r1):
        sh_i, sl_i = sh[r], sl[r]
        ph, pl = prod_h[r - r0], prod_l[r - r0]
        for e in range(row_ptr[r], row_ptr[r + 1]):
            c = edge_col[e]
            vh = np.float32(ph[c])
            vh *= sh_i
            vh *= sh[n_rows + c]
            vl = np.float32(pl[c])
            vl *= sl_i
            vl *= sl[n_rows + c]
            o[edges[e]] = vh - vl


@njit(cache=True, nogil=True)
def _value(x, mean, squared):
    """A replicate as summed: x, or (x − mean)² in float32 when ``squared``; 0 if not finite."""
    if not np.isfinite(x):
        return 0.0
    if squared:
        c = x - mean
        return np.float64(c * c)
    return np.float64(x)


def sum_program(n_boot: int) -> np.ndarray:
    """numpy's ``sum(dtype=np.float64)`` of n_boot float32 values as a postfix program for
    row_moments (rows (op, lo, n); compiled code runs it without recursion): op 0 pushes the
    pairwise sum of values lo..lo + n (n <= PAIRWISE_BLOCK: 8 lanes, numpy's pairwise_sum
    leaf), 1 pops two sums and pushes theirs, 2 pops one and adds it to the total. The blocks
    split as numpy splits them (halves rounded down to a multiple of 8); numpy casts in chunks
    of its buffer (UFUNC_BUFFER values), each summed pairwise and added to the total in order."""
    ops: list[tuple[int, int, int]] = []

    def node(lo: int, n: int) -> None:
        if n <= PAIRWISE_BLOCK:
            ops.append((0, lo, n))
            return
        half = n // 2
        half -= half % 8
        node(lo, half)
        node(lo + half, n - half)
        ops.append((1, 0, 0))

    for c0 in range(0, int(n_boot), UFUNC_BUFFER):
        node(c0, min(UFUNC_BUFFER, int(n_boot) - c0))
        ops.append((2, 0, 0))
    return np.array(ops, dtype=np.int64).reshape(-1, 3)


@njit(cache=True, nogil=True)
def _leaf(a, lo, n, s0, w, means, squared, out, acc):  # noqa: PLR0917 - numba kernels take no keyword-only arguments
    """out[e] = numpy's pairwise_sum leaf (n <= PAIRWISE_BLOCK) of _value(a[lo:lo + n, s0 + e])
    for e < w: in order below 8 values, else 8 lanes combined as numpy combines them."""
    if n < 8:
        for e in range(w):
            out[e] = -0.0
        for i in range(lo, lo + n):
            for e in range(w):
                out[e] += _value(a[i, s0 + e], means[e], squared)
        return
    for j in range(8):
        for e in range(w):
            acc[j, e] = _value(a[lo + j, s0 + e], means[e], squared)
    stop = n - n % 8
    i = 8
    while i < stop:
        for j in range(8):
            row = lo + i + j
            for e in range(w):
                acc[j, e] += _value(a[row, s0 + e], means[e], squared)
        i += 8
    for e in range(w):
        out[e] = ((acc[0, e] + acc[1, e]) + (acc[2, e] + acc[3, e])) + ((acc[4, e] + acc[5, e]) + (acc[6, e] + acc[7, e]))
    while i < n:
        for e in range(w):
            out[e] += _value(a[lo + i, s0 + e], means[e], squared)
        i += 1


@njit(cache=True, nogil=True)
def _column_sums(a, s0, w, means, squared, program, out, stack, acc):  # noqa: PLR0917 - numba kernels take no keyword-only arguments
    """out[e] = numpy's float64 sum of _value over all B rows of column s0 + e (e < w), the
    columns side by side (contiguous in ``a``'s rows), by ``program`` (sum_program);
    ``stack`` (depth, >= w) and ``acc`` (8, >= w) are scratch."""
    for e in range(w):
        out[e] = 0.0
    top = 0
    for step in range(program.shape[0]):
        op = program[step, 0]
        if op == 0:
            _leaf(a, program[step, 1], program[step, 2], s0, w, means, squared, stack[top], acc)
            top += 1
        elif op == 1:
            for e in range(w):
                stack[top - 2, e] += stack[top - 1, e]
            top -= 1
        else:
            for e in range(w):
                out[e] += stack[top - 1, e]
            top -= 1


@njit(cache=True, nogil=True, parallel=True)
def row_moments(by_replicate, e0, block, total, squares, n_finite, n_pos, n_neg, program, n_workers):  # noqa: PLR0917 - numba kernels take no keyword-only arguments
    """For edges e0..e0 + n (n = len(block)) of ``by_replicate`` (B, E), any row stride: a
    C-ordered copy of their replicates into ``block`` (n, B), and per edge over its finite
    replicates: the count, how many are > 0 and < 0, the float64 sum and the float64 sum of
    (x − float32(sum/count))² (float32 differences and squares) — the sums numpy's
    ``sum(axis=1, dtype=np.float64)`` gives, bit for bit, for the edge's row with its
    non-finite values as 0 (``program``: sum_program(B)). Edges go in runs of EDGE_RUN,
    computed side by side from the replicate rows (contiguous); workers take runs in turn."""
    n, n_boot = block.shape
    n_runs = (n + EDGE_RUN - 1) // EDGE_RUN
    for worker in prange(n_workers):
        acc = np.empty((8, EDGE_RUN))
        stack = np.empty((program.shape[0] + 1, EDGE_RUN))
        sums = np.empty(EDGE_RUN)
        means = np.zeros(EDGE_RUN, np.float32)
        nf = np.empty(EDGE_RUN, np.int64)
        pos = np.empty(EDGE_RUN, np.int64)
        neg = np.empty(EDGE_RUN, np.int64)
        for run in range(worker, n_runs, n_workers):
            s0 = e0 + run * EDGE_RUN
            w = min(EDGE_RUN, n - run * EDGE_RUN)
            r0 = run * EDGE_RUN
            for b0 in range(0, n_boot, 16):  # the copy, in 16-replicate strips
                b1 = min(b0 + 16, n_boot)
                for e in range(w):
                    for b in range(b0, b1):
                        block[r0 + e, b] = by_replicate[b, s0 + e]
            for e in range(w):  # from the copy's rows; branch-free (NaN compares false)
                row = block[r0 + e]
                count = above = below = 0
                for b in range(n_boot):
                    x = row[b]
                    count += np.isfinite(x)
                    above += x > 0
                    below += x < 0
                nf[e], pos[e], neg[e] = count, above, below
            _column_sums(by_replicate, s0, w, means, False, program, sums, stack, acc)
            for e in range(w):
                means[e] = np.float32(sums[e] / max(nf[e], 1))
                total[r0 + e] = sums[e]
                n_finite[r0 + e], n_pos[r0 + e], n_neg[r0 + e] = nf[e], pos[e], neg[e]
            _column_sums(by_replicate, s0, w, means, True, program, sums, stack, acc)
            for e in range(w):
                squares[r0 + e] = sums[e]
