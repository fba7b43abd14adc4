"""Per-pair work of stage 02a, fused per correlation tile (numba, one thread).

A tile holds r of gene rows [a, a + T) against columns [a, N) (science._Tiles); entry
(ii, jj) is the pair (a + ii, a + jj), used when jj > ii. The three family statistics:

- low / high: s = |r| (float32, as the tile holds it), pairs with no gene constant in the group;
- diff: w = |b − a| / (1 − a·b) (float64) with a, b the group r's clipped to ±clip, pairs with
  no gene constant in either group. tanh(|atanh b − atanh a|) = w, so w orders the pairs as
  the Fisher |Z| = atanh(w)/se does, with no transcendental function per pair.

A statistic s >= lo falls in bin min(nb − 1, int((s − lo)·inv)) (float64 arithmetic); every
kernel computes bins the same way, so counts of bin ranges agree exactly between passes.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _w_stat(rl: float, rh: float, clip: float) -> float:
    a = min(max(np.float64(rl), -clip), clip)
    b = min(max(np.float64(rh), -clip), clip)
    return abs(b - a) / (1.0 - a * b)


@njit(cache=True, nogil=True)
def _bin(s: float, lo: float, inv: float, nb: int) -> int:
    b = int((s - lo) * inv)
    return nb - 1 if b >= nb else b


@njit(cache=True, nogil=True)
def histogram_tile(r_low, r_high, a, const_low, const_high, bounds, clip, h_low, h_high, h_diff):
    """Add the tile's statistics >= lo to the bin counts; ``bounds`` = (lo, inv) of low,
    high, diff as a float64 array of 6 (lo = inf: family not counted)."""
    t, width = r_low.shape
    nb = h_low.size
    lo_l, inv_l, lo_h, inv_h, lo_w, inv_w = bounds[0], bounds[1], bounds[2], bounds[3], bounds[4], bounds[5]
    for ii in range(t):
        cl_i = const_low[a + ii]
        ch_i = const_high[a + ii]
        for jj in range(ii + 1, width):
            ok_l = not (cl_i or const_low[a + jj])
            ok_h = not (ch_i or const_high[a + jj])
            rl = r_low[ii, jj]
            rh = r_high[ii, jj]
            if ok_l:
                s = np.float64(abs(rl))
                if s >= lo_l:
                    h_low[_bin(s, lo_l, inv_l, nb)] += 1
            if ok_h:
                s = np.float64(abs(rh))
                if s >= lo_h:
                    h_high[_bin(s, lo_h, inv_h, nb)] += 1
            if ok_l and ok_h:
                w = _w_stat(rl, rh, clip)
                if w >= lo_w:
                    h_diff[_bin(w, lo_w, inv_w, nb)] += 1


@njit(cache=True, nogil=True)
def collect_tile(r_low, r_high, a, const_low, const_high, bounds, clip, windows, out_low, out_high, out_diff, n_out):
    """Append the statistics whose bin is in the family's window [windows[2f], windows[2f+1])
    to out_low (float32), out_high (float32), out_diff (float64); n_out[f] counts them.
    ``windows`` = int64 [low0, low1, high0, high1, diff0, diff1, number of bins]."""
    t, width = r_low.shape
    lo_l, inv_l, lo_h, inv_h, lo_w, inv_w = bounds[0], bounds[1], bounds[2], bounds[3], bounds[4], bounds[5]
    nbins = windows[6]
    use_l = windows[1] > windows[0]
    use_h = windows[3] > windows[2]
    use_d = windows[5] > windows[4]
    for ii in range(t):
        cl_i = const_low[a + ii]
        ch_i = const_high[a + ii]
        for jj in range(ii + 1, width):
            ok_l = not (cl_i or const_low[a + jj])
            ok_h = not (ch_i or const_high[a + jj])
            rl = r_low[ii, jj]
            rh = r_high[ii, jj]
            if use_l and ok_l:
                s = np.float64(abs(rl))
                if s >= lo_l:
                    b = _bin(s, lo_l, inv_l, nbins)
                    if windows[0] <= b < windows[1]:
                        out_low[n_out[0]] = abs(rl)
                        n_out[0] += 1
            if use_h and ok_h:
                s = np.float64(abs(rh))
                if s >= lo_h:
                    b = _bin(s, lo_h, inv_h, nbins)
                    if windows[2] <= b < windows[3]:
                        out_high[n_out[1]] = abs(rh)
                        n_out[1] += 1
            if use_d and ok_l and ok_h:
                w = _w_stat(rl, rh, clip)
                if w >= lo_w:
                    b = _bin(w, lo_w, inv_w, nbins)
                    if windows[4] <= b < windows[5]:
                        out_diff[n_out[2]] = w
                        n_out[2] += 1


@njit(cache=True, nogil=True)
def emit_rows(r_low, r_high, a, i0, i1, n_genes, const_any, clip, w_cut, out_pair, out_rl, out_rh, out_w):
    """Pairs of tile rows [i0, i1) with w >= w_cut (no gene constant in either group), in
    row-major (= ascending pair index) order: their flat pair index, r's and w. Returns
    how many; the outputs must hold (i1 − i0)·width entries."""
    width = r_low.shape[1]
    n = 0
    two_n = 2 * np.int64(n_genes)
    for ii in range(i0, i1):
        gi = np.int64(a + ii)
        if const_any[gi]:
            continue
        row_start = gi * (two_n - gi - 1) // 2 - gi - 1
        for jj in range(ii + 1, width):
            gj = a + jj
            if const_any[gj]:
                continue
            rl = r_low[ii, jj]
            rh = r_high[ii, jj]
            w = _w_stat(rl, rh, clip)
            if w >= w_cut:
                out_pair[n] = row_start + gj
                out_rl[n] = rl
                out_rh[n] = rh
                out_w[n] = w
                n += 1
    return n
