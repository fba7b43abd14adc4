"""Per-pair work of stage 02a, fused per correlation tile (numba, parallel over tile rows).

A tile holds the integer rank products of gene rows [a, a + T) against columns [a, N)
(science._Tiles); entry (ii, jj) is the pair (a + ii, a + jj), used when jj > ii. The kernels
scale it, r = (d·scale_i)·scale_j in float32 (the order numpy used), so r is the same
whichever kernel computes it. The three family statistics:

- low / high: s = |r| (float32, as the tile holds it), pairs with no gene constant in the group;
- diff: w = |b − a| / (1 − a·b) (float64) with a, b the group r's clipped to ±clip, pairs with
  no gene constant in either group. tanh(|atanh b − atanh a|) = w, so w orders the pairs as
  the Fisher |Z| = atanh(w)/se does, with no transcendental function per pair.

A statistic s >= lo falls in bin min(nb − 1, int((s − lo)·inv)) (float64 arithmetic); every
kernel computes bins the same way, so counts of bin ranges agree exactly between passes. The
histogram also keeps each bin's smallest and largest statistic: a bin whose two are equal
holds one value, and its count is all a BH family needs of it (no collection). A group pair
of two genes without ties there (``tie_free``) is counted by its integer product instead:
|d| // 4 indexes its distinct |r| exactly (|d| mod 4 is the same for all: science.py).

Threads: the tile's rows are split over ``parts`` (one per numba thread; part p takes rows p,
p + P, …) with private histograms, summed afterwards; collection appends to private bounded
buffers flushed in part order between rounds (the order of collected values does not matter:
they are sorted); emission writes each row to its own segment and joins the segments in row
order. Every result is therefore the same for any thread count. Thread count: numba's
(``numba.set_num_threads``, set by dcoex.threads.blas_threads to the task's CPUs).
"""

from __future__ import annotations

import os

import numba
import numpy as np
from numba import njit, prange

if "NUMBA_THREADING_LAYER" not in os.environ:
    # workers that sleep between parallel regions: OpenMP's spin (its default) burns CPU time
    # between the many short regions of emission, 4x the kernels' own on a loaded node
    numba.config.THREADING_LAYER = "workqueue"


@njit(cache=True, nogil=True, inline="always")
def _w_stat(rl: float, rh: float, clip: float) -> float:
    a = min(max(np.float64(rl), -clip), clip)
    b = min(max(np.float64(rh), -clip), clip)
    return abs(b - a) / (1.0 - a * b)


@njit(cache=True, nogil=True, inline="always")
def _bin(s: float, lo: float, inv: float, nb: int) -> int:
    b = int((s - lo) * inv)
    return nb - 1 if b >= nb else b


@njit(cache=True, nogil=True, parallel=True)
def histogram_tile(d_low, d_high, a, scales, consts, tie_free, bounds, clip, hist, exact, rows, slots):  # noqa: PLR0917 - numba kernels take no keyword-only arguments
    """Add the tile's statistics >= lo to each part's bins: ``hist`` is (P, 3, nb + 1, 3)
    float64, per family (low, high, diff) and bin its count (float64: exact below 2**53),
    smallest and largest statistic side by side (one cache line per update); bin nb is a
    sink for the statistics below lo. ``scales`` = (scale_low, scale_high), ``consts`` =
    (const_low, const_high), ``bounds`` = float64 [lo, inv] × 3. ``tie_free`` = (low, high)
    bool per gene: a group pair of two such genes with |r| >= lo is counted in ``exact``
    (P, 2, n + 1) int32 or int64 at |d| // 4 instead of in the bins (slot n: a sink).

    ``rows`` (P, 3, >= width) float64 and ``slots`` (P, 5, >= width) int32 are scratch. A
    row is taken in two loops: the first, without branches (vectorised), computes each pair's
    statistics and the slot each one goes to (exact count, bin, or a sink); the second adds
    them, also without branches but for the pairs with a tied gene (few in real data): a branch
    per pair and family that goes either way costs more than the always-taken sink."""
    t, width = d_low.shape
    n_parts = hist.shape[0]
    nb = hist.shape[2] - 1
    sink = exact.shape[2] - 1
    s_low, s_high = scales
    c_low, c_high = consts
    e_low, e_high = tie_free
    lo_l, inv_l, lo_h, inv_h, lo_w, inv_w = bounds[0], bounds[1], bounds[2], bounds[3], bounds[4], bounds[5]
    for p in prange(n_parts):
        h, ex = hist[p], exact[p]
        abs_l, abs_h, stat_w = rows[p, 0], rows[p, 1], rows[p, 2]
        x_l, x_h, b_l, b_h, b_w = slots[p, 0], slots[p, 1], slots[p, 2], slots[p, 3], slots[p, 4]
        for ii in range(p, t, n_parts):
            gi = a + ii
            ok_li = not c_low[gi]
            ok_hi = not c_high[gi]
            el_i = e_low[gi]
            eh_i = e_high[gi]
            sl_i = s_low[gi]
            sh_i = s_high[gi]
            for jj in range(ii + 1, width):
                gj = a + jj
                dl = d_low[ii, jj]
                dh = d_high[ii, jj]
                rl = (dl * sl_i) * s_low[gj]
                rh = (dh * sh_i) * s_high[gj]
                sl = np.float64(abs(rl))
                sh = np.float64(abs(rh))
                sw = _w_stat(rl, rh, clip)
                abs_l[jj] = sl
                abs_h[jj] = sh
                stat_w[jj] = sw
                in_l = ok_li and not c_low[gj] and sl >= lo_l
                in_h = ok_hi and not c_high[gj] and sh >= lo_h
                exact_l = el_i and e_low[gj]
                exact_h = eh_i and e_high[gj]
                x_l[jj] = (np.int32(abs(dl)) >> 2) if (in_l and exact_l) else sink
                x_h[jj] = (np.int32(abs(dh)) >> 2) if (in_h and exact_h) else sink
                b_l[jj] = _bin(sl, lo_l, inv_l, nb) if (in_l and not exact_l) else -1
                b_h[jj] = _bin(sh, lo_h, inv_h, nb) if (in_h and not exact_h) else -1
                in_w = ok_li and ok_hi and not (c_low[gj] or c_high[gj]) and sw >= lo_w
                b_w[jj] = _bin(sw, lo_w, inv_w, nb) if in_w else nb
            for jj in range(ii + 1, width):
                ex[0, x_l[jj]] += 1
                ex[1, x_h[jj]] += 1
                b = b_w[jj]
                s = stat_w[jj]
                h[2, b, 0] += 1.0
                h[2, b, 1] = min(h[2, b, 1], s)
                h[2, b, 2] = max(h[2, b, 2], s)
                # written out twice: a helper taking the arrays costs ~10x (reference counts)
                b = b_l[jj]
                if b >= 0:
                    s = abs_l[jj]
                    h[0, b, 0] += 1.0
                    h[0, b, 1] = min(h[0, b, 1], s)
                    h[0, b, 2] = max(h[0, b, 2], s)
                b = b_h[jj]
                if b >= 0:
                    s = abs_h[jj]
                    h[1, b, 0] += 1.0
                    h[1, b, 1] = min(h[1, b, 1], s)
                    h[1, b, 2] = max(h[1, b, 2], s)


@njit(cache=True, nogil=True)
def _flush(out, n_out, f, local, local_n):
    """Append local[:local_n[f]] to out at n_out[f]; empty the local buffer."""
    k = local_n[f]
    out[n_out[f] : n_out[f] + k] = local[:k]
    n_out[f] += k
    local_n[f] = 0


@njit(cache=True, nogil=True, parallel=True)
def collect_tile(d_low, d_high, a, scales, consts, tie_free, bounds, clip, windows, masks, outs, n_out, local, local_n):  # noqa: PLR0917 - numba kernels take no keyword-only arguments
    """Append each family's statistics whose bin b is in its window [windows[2f],
    windows[2f+1]) with masks[f, b] set to outs[f] (float64); n_out[f] counts them. Group
    pairs of two ``tie_free`` genes are not collected (histogram_tile counts them exactly).
    ``local`` (P, 3, cap) float64 with cap >= the tile width and ``local_n`` (P, 3) int64
    are the parts' private buffers: each part stops before a row that might not fit, and
    the buffers are flushed (part order) until every row is done."""
    t, width = d_low.shape
    n_parts, _, cap = local.shape
    nb = masks.shape[1]
    s_low, s_high = scales
    c_low, c_high = consts
    e_low, e_high = tie_free
    lo_l, inv_l, lo_h, inv_h, lo_w, inv_w = bounds[0], bounds[1], bounds[2], bounds[3], bounds[4], bounds[5]
    w0, w1, w2, w3, w4, w5 = windows[0], windows[1], windows[2], windows[3], windows[4], windows[5]
    use_l = w1 > w0
    use_h = w3 > w2
    use_d = w5 > w4
    o_l, o_h, o_d = outs
    next_row = np.arange(n_parts)
    while True:
        for p in prange(n_parts):
            buf = local[p]
            k_l, k_h, k_d = local_n[p, 0], local_n[p, 1], local_n[p, 2]
            ii = next_row[p]
            while ii < t and cap - max(k_l, max(k_h, k_d)) >= width - ii - 1:
                gi = a + ii
                cl_i = c_low[gi]
                ch_i = c_high[gi]
                el_i = e_low[gi]
                eh_i = e_high[gi]
                sl_i = s_low[gi]
                sh_i = s_high[gi]
                for jj in range(ii + 1, width):
                    gj = a + jj
                    ok_l = not (cl_i or c_low[gj])
                    ok_h = not (ch_i or c_high[gj])
                    rl = (d_low[ii, jj] * sl_i) * s_low[gj]
                    rh = (d_high[ii, jj] * sh_i) * s_high[gj]
                    if use_l and ok_l and not (el_i and e_low[gj]):
                        s = np.float64(abs(rl))
                        if s >= lo_l:
                            b = _bin(s, lo_l, inv_l, nb)
                            if w0 <= b < w1 and masks[0, b]:
                                buf[0, k_l] = s
                                k_l += 1
                    if use_h and ok_h and not (eh_i and e_high[gj]):
                        s = np.float64(abs(rh))
                        if s >= lo_h:
                            b = _bin(s, lo_h, inv_h, nb)
                            if w2 <= b < w3 and masks[1, b]:
                                buf[1, k_h] = s
                                k_h += 1
                    if use_d and ok_l and ok_h:
                        s = _w_stat(rl, rh, clip)
                        if s >= lo_w:
                            b = _bin(s, lo_w, inv_w, nb)
                            if w4 <= b < w5 and masks[2, b]:
                                buf[2, k_d] = s
                                k_d += 1
                ii += n_parts
            next_row[p] = ii
            local_n[p, 0] = k_l
            local_n[p, 1] = k_h
            local_n[p, 2] = k_d
        done = True
        for part in range(n_parts):  # written out: a tuple of the outputs here would be copied
            _flush(o_l, n_out, 0, local[part, 0], local_n[part])
            _flush(o_h, n_out, 1, local[part, 1], local_n[part])
            _flush(o_d, n_out, 2, local[part, 2], local_n[part])
            done = done and next_row[part] >= t
        if done:
            return


@njit(cache=True, nogil=True, parallel=True)
def emit_rows(d_low, d_high, a, i0, i1, scales, const_any, clip, w_cut, outs, row_n):  # noqa: PLR0917 - numba kernels take no keyword-only arguments
    """Pairs of tile rows [i0, i1) with w >= w_cut (no gene constant in either group), in
    row-major (= ascending pair index) order, into ``outs`` = (flat pair index int64, r_low,
    r_high float32, w float64, d_low, d_high float32: the integer rank products), each holding
    at least (i1 − i0)·width entries; ``row_n`` (int64, >= i1 − i0) is scratch. Returns how many."""
    width = d_low.shape[1]
    n_genes = const_any.size
    s_low, s_high = scales
    out_pair, out_rl, out_rh, out_w, out_dl, out_dh = outs
    two_n = 2 * np.int64(n_genes)
    for ii in prange(i0, i1):  # names inside differ from those after: numba would share them
        seg = (ii - i0) * width
        at = seg
        gi = np.int64(a + ii)
        if not const_any[gi]:
            sl_i = s_low[gi]
            sh_i = s_high[gi]
            row_start = gi * (two_n - gi - 1) // 2 - gi - 1
            for jj in range(ii + 1, width):
                gj = a + jj
                if const_any[gj]:
                    continue
                dl = d_low[ii, jj]
                dh = d_high[ii, jj]
                rl = (dl * sl_i) * s_low[gj]
                rh = (dh * sh_i) * s_high[gj]
                w = _w_stat(rl, rh, clip)
                if w >= w_cut:
                    out_pair[at] = row_start + gj
                    out_rl[at] = rl
                    out_rh[at] = rh
                    out_w[at] = w
                    out_dl[at] = dl
                    out_dh[at] = dh
                    at += 1
        row_n[ii - i0] = at - seg
    n = 0
    for row in range(i1 - i0):  # join the row segments in row order (never overlapping: n <= the segment start)
        start = row * width
        k = row_n[row]
        if n != start:
            for e in range(k):
                out_pair[n + e] = out_pair[start + e]
                out_rl[n + e] = out_rl[start + e]
                out_rh[n + e] = out_rh[start + e]
                out_w[n + e] = out_w[start + e]
                out_dl[n + e] = out_dl[start + e]
                out_dh[n + e] = out_dh[start + e]
        n += k
    return n


@njit(cache=True, nogil=True)
def table_offsets(table_s, lo, inv, offsets):
    """offsets[b] = index of the first table value (ascending) in bin >= b of the bins of width
    1/inv from lo, b < offsets.size (the last entry: the table's size)."""
    nb = offsets.size - 1
    i = 0
    for b in range(nb + 1):
        while i < table_s.size and _bin(table_s[i], lo, inv, nb) < b:
            i += 1
        offsets[b] = i


@njit(cache=True, nogil=True, parallel=True)
def lookup_q(values, lo, inv, nb, offsets, inv_o, table_s, table_q, span, out):  # noqa: PLR0917 - numba kernels take no keyword-only arguments
    """For values whose bin (of the family's nb bins, width 1/inv) is in [span[0], span[1]) (a
    value < lo has bin −1): out[i] = table_q of the last table value <= values[i], or span[2]
    if none (the q carried in from below the table); other entries of ``out`` are left as they
    are. ``offsets`` indexes the table by bins of width 1/inv_o (table_offsets): the value's
    bin there bounds the search (bins are monotone in the value), so a finer index leaves
    fewer steps of binary search, each a cache miss in a large table."""
    no = offsets.size - 1
    b_lo, b_hi, carry = int(span[0]), int(span[1]), span[2]
    for i in prange(values.size):
        s = values[i]
        b = _bin(s, lo, inv, nb) if s >= lo else -1
        if b < b_lo or b >= b_hi:
            continue
        at = -1
        if b >= 0:
            fb = _bin(s, lo, inv_o, no)
            first, last = np.int64(offsets[fb]), np.int64(offsets[fb + 1])
            while first < last:  # first entry of the bin with a value > s
                mid = (first + last) // 2
                if table_s[mid] <= s:
                    first = mid + 1
                else:
                    last = mid
            at = first - 1
        out[i] = table_q[at] if at >= 0 else carry


@njit(cache=True, nogil=True)
def unique_counts(values, counts):
    """Distinct values of ascending ``values`` into values[:k] (in place) and their counts
    into counts[:k]; returns k."""
    k = 0
    for i in range(values.size):
        if k and values[i] == values[k - 1]:
            counts[k - 1] += 1
        else:
            values[k] = values[i]
            counts[k] = 1
            k += 1
    return k


@njit(cache=True, nogil=True)
def merge_counts(values, counts, k, more_values, more_counts):
    """Merge ascending distinct ``more_values`` (with ``more_counts``) into values[:k] /
    counts[:k] (ascending, distinct) in place, equal values adding their counts; both arrays
    need room for k + more_values.size entries. Returns the merged length."""
    i = k - 1
    j = more_values.size - 1
    out = k + more_values.size - 1
    while j >= 0:  # from the back: out - i >= j + 1 > 0, so no value is overwritten before it is read
        if i >= 0 and values[i] > more_values[j]:
            values[out] = values[i]
            counts[out] = counts[i]
            i -= 1
        elif i >= 0 and values[i] == more_values[j]:
            values[out] = values[i]
            counts[out] = counts[i] + more_counts[j]
            i -= 1
            j -= 1
        else:
            values[out] = more_values[j]
            counts[out] = more_counts[j]
            j -= 1
        out -= 1
    gap = out - i  # equal values merged: close the gap between values[:i + 1] and the merged tail
    size = k + more_values.size - gap
    if gap:
        for e in range(i + 1, size):
            values[e] = values[e + gap]
            counts[e] = counts[e + gap]
    return size


@njit(cache=True, nogil=True)
def q_runs(values, scaled, last_q, started):
    """BH q's of a group of the table, in place: q = min(1, running minimum of ``scaled``
    (p·m/C), also of ``last_q`` when the table has ``started``); values[:k] / scaled[:k]
    become the first value and the q of each run of equal q. Returns (k, q of the last value)."""
    k = 0
    low = np.inf
    prev = last_q
    q = last_q
    for i in range(values.size):
        low = min(low, scaled[i])
        q = min(low, last_q) if started else low
        q = min(q, 1.0)
        if (i == 0 and not (started and q == last_q)) or (i > 0 and q != prev):
            values[k] = values[i]
            scaled[k] = q
            k += 1
        prev = q
    return k, q


@njit(cache=True, nogil=True)
def bin_run(values, at, lo, inv, nb):
    """(first, stop, bin) of the run of ascending ``values`` around index ``at`` that share
    values[at]'s bin."""
    b = _bin(values[at], lo, inv, nb)
    first = at
    while first > 0 and _bin(values[first - 1], lo, inv, nb) == b:
        first -= 1
    stop = at + 1
    while stop < values.size and _bin(values[stop], lo, inv, nb) == b:
        stop += 1
    return first, stop, b
