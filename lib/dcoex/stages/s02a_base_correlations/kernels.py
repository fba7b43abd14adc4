"""Per-pair work of stage 02a, fused per correlation tile (numba, one thread).

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
holds one value, and its count is all a BH family needs of it (no collection).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def _w_stat(rl: float, rh: float, clip: float) -> float:
    a = min(max(np.float64(rl), -clip), clip)
    b = min(max(np.float64(rh), -clip), clip)
    return abs(b - a) / (1.0 - a * b)


@njit(cache=True, nogil=True, inline="always")
def _bin(s: float, lo: float, inv: float, nb: int) -> int:
    b = int((s - lo) * inv)
    return nb - 1 if b >= nb else b


@njit(cache=True, nogil=True)
def histogram_tile(d_low, d_high, a, scales, consts, bounds, clip, hists):  # noqa: PLR0917 - numba kernels take no keyword-only arguments
    """Add the tile's statistics >= lo to each family's bins. ``scales`` = (scale_low,
    scale_high), ``consts`` = (const_low, const_high), ``bounds`` = float64 [lo, inv] × 3
    (low, high, diff), ``hists`` = (count, min, max) × 3 (int64, float64, float64)."""
    t, width = d_low.shape
    s_low, s_high = scales
    c_low, c_high = consts
    lo_l, inv_l, lo_h, inv_h, lo_w, inv_w = bounds[0], bounds[1], bounds[2], bounds[3], bounds[4], bounds[5]
    n_l, min_l, max_l, n_h, min_h, max_h, n_d, min_d, max_d = hists
    nb = n_l.size
    for ii in range(t):
        gi = a + ii
        cl_i = c_low[gi]
        ch_i = c_high[gi]
        sl_i = s_low[gi]
        sh_i = s_high[gi]
        for jj in range(ii + 1, width):
            gj = a + jj
            ok_l = not (cl_i or c_low[gj])
            ok_h = not (ch_i or c_high[gj])
            rl = (d_low[ii, jj] * sl_i) * s_low[gj]
            rh = (d_high[ii, jj] * sh_i) * s_high[gj]
            # written out three times: a helper taking the arrays costs ~10x (reference counts)
            if ok_l:
                s = np.float64(abs(rl))
                if s >= lo_l:
                    b = _bin(s, lo_l, inv_l, nb)
                    n_l[b] += 1
                    min_l[b] = min(min_l[b], s)
                    max_l[b] = max(max_l[b], s)
            if ok_h:
                s = np.float64(abs(rh))
                if s >= lo_h:
                    b = _bin(s, lo_h, inv_h, nb)
                    n_h[b] += 1
                    min_h[b] = min(min_h[b], s)
                    max_h[b] = max(max_h[b], s)
            if ok_l and ok_h:
                s = _w_stat(rl, rh, clip)
                if s >= lo_w:
                    b = _bin(s, lo_w, inv_w, nb)
                    n_d[b] += 1
                    min_d[b] = min(min_d[b], s)
                    max_d[b] = max(max_d[b], s)


@njit(cache=True, nogil=True)
def collect_tile(d_low, d_high, a, scales, consts, bounds, clip, windows, masks, outs, n_out):  # noqa: PLR0917 - numba kernels take no keyword-only arguments
    """Append each family's statistics whose bin b is in its window [windows[2f],
    windows[2f+1]) with masks[f][b] set to outs[f] (float64); n_out[f] counts them."""
    t, width = d_low.shape
    s_low, s_high = scales
    c_low, c_high = consts
    lo_l, inv_l, lo_h, inv_h, lo_w, inv_w = bounds[0], bounds[1], bounds[2], bounds[3], bounds[4], bounds[5]
    m_l, m_h, m_d = masks
    o_l, o_h, o_d = outs
    w0, w1, w2, w3, w4, w5 = windows[0], windows[1], windows[2], windows[3], windows[4], windows[5]
    use_l = w1 > w0
    use_h = w3 > w2
    use_d = w5 > w4
    nb = m_l.size
    k_l, k_h, k_d = n_out[0], n_out[1], n_out[2]
    for ii in range(t):
        gi = a + ii
        cl_i = c_low[gi]
        ch_i = c_high[gi]
        sl_i = s_low[gi]
        sh_i = s_high[gi]
        for jj in range(ii + 1, width):
            gj = a + jj
            ok_l = not (cl_i or c_low[gj])
            ok_h = not (ch_i or c_high[gj])
            rl = (d_low[ii, jj] * sl_i) * s_low[gj]
            rh = (d_high[ii, jj] * sh_i) * s_high[gj]
            if use_l and ok_l:
                s = np.float64(abs(rl))
                if s >= lo_l:
                    b = _bin(s, lo_l, inv_l, nb)
                    if w0 <= b < w1 and m_l[b]:
                        o_l[k_l] = s
                        k_l += 1
            if use_h and ok_h:
                s = np.float64(abs(rh))
                if s >= lo_h:
                    b = _bin(s, lo_h, inv_h, nb)
                    if w2 <= b < w3 and m_h[b]:
                        o_h[k_h] = s
                        k_h += 1
            if use_d and ok_l and ok_h:
                s = _w_stat(rl, rh, clip)
                if s >= lo_w:
                    b = _bin(s, lo_w, inv_w, nb)
                    if w4 <= b < w5 and m_d[b]:
                        o_d[k_d] = s
                        k_d += 1
    n_out[0] = k_l
    n_out[1] = k_h
    n_out[2] = k_d


@njit(cache=True, nogil=True)
def emit_rows(d_low, d_high, a, i0, i1, scales, const_any, clip, w_cut, outs):  # noqa: PLR0917 - numba kernels take no keyword-only arguments
    """Pairs of tile rows [i0, i1) with w >= w_cut (no gene constant in either group), in
    row-major (= ascending pair index) order, into ``outs`` = (flat pair index int64, r_low,
    r_high float32, w float64), each holding at least (i1 − i0)·width entries. Returns how many."""
    width = d_low.shape[1]
    n_genes = const_any.size
    s_low, s_high = scales
    out_pair, out_rl, out_rh, out_w = outs
    n = 0
    two_n = 2 * np.int64(n_genes)
    for ii in range(i0, i1):
        gi = np.int64(a + ii)
        if const_any[gi]:
            continue
        sl_i = s_low[gi]
        sh_i = s_high[gi]
        row_start = gi * (two_n - gi - 1) // 2 - gi - 1
        for jj in range(ii + 1, width):
            gj = a + jj
            if const_any[gj]:
                continue
            rl = (d_low[ii, jj] * sl_i) * s_low[gj]
            rh = (d_high[ii, jj] * sh_i) * s_high[gj]
            w = _w_stat(rl, rh, clip)
            if w >= w_cut:
                out_pair[n] = row_start + gj
                out_rl[n] = rl
                out_rh[n] = rh
                out_w[n] = w
                n += 1
    return n


@njit(cache=True, nogil=True)
def table_offsets(table_s, lo, inv, nb):
    """offsets[b] = index of the first table value (ascending) in bin >= b; length nb + 1."""
    offsets = np.empty(nb + 1, np.int64)
    i = 0
    for b in range(nb + 1):
        while i < table_s.size and _bin(table_s[i], lo, inv, nb) < b:
            i += 1
        offsets[b] = i
    return offsets


@njit(cache=True, nogil=True)
def lookup_q(values, lo, inv, offsets, table_s, table_q, out):  # noqa: PLR0917 - numba kernels take no keyword-only arguments
    """out[i] = table_q of the last table value <= values[i] (NaN if none): the bin of the
    value bounds the search (bins are monotone in the value)."""
    nb = offsets.size - 1
    for i in range(values.size):
        s = values[i]
        if s < lo:
            at = -1
        else:
            b = _bin(s, lo, inv, nb)
            first, last = offsets[b], offsets[b + 1]
            while first < last:  # first entry of the bin with a value > s
                mid = (first + last) // 2
                if table_s[mid] <= s:
                    first = mid + 1
                else:
                    last = mid
            at = first - 1
        out[i] = table_q[at] if at >= 0 else np.nan


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
