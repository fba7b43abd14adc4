"""Stage 02a science: Spearman r of every gene pair in LOW and HIGH, tests and BH.

Per reference gene (docs/design.md §4.2–§4.5): rank each gene once per group (average ranks), double
and centre them (integers u = 2·rank − (k+1)), then r = (U·Uᵀ)·scaleᵢ·scaleⱼ with
scale = 1/||u|| one tile of ``tile_rows`` gene rows at a time (upper triangle only). The
integer products are exact in float32 (float64 when k(k−1)² >= 2**24), so r is identical
for any tile size and thread count:

1. one pass over the tiles collects the BH candidates of the three families (|r_L|, |r_H|
   as float32, |Z| of the Fisher test as float64) — only tests whose p can be <= alpha
   (bh.py) — and, for the differential candidates, their pair index and r values;
2. BH of each family from its candidates; the stored edges are the differential
   candidates with q_diff < alpha. When there are more than ``DIFF_DETAIL_CAP``
   differential candidates (large alpha), their details are dropped and a second pass
   over the tiles collects the significant pairs instead.

Pairs with a gene constant within a group leave that group's family, and the differential
family if constant in either group. Memory: O(N·k) ranks + O(tile_rows·N) per tile + the
candidates (4, 4 and 8 bytes each, + 24 for kept differential details) + the stored
edges; never an N×N or N(N−1)/2 array.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dcoex.bh import BHFamily
from dcoex.ranks import IntegerRanks
from dcoex.stages.s02a_base_correlations.estimator import DIFF_DETAIL_CAP, FILTER_CELLS
from dcoex.stats import (
    fisher_z,
    flat_index,
    n_pairs,
    pair_from_flat,
    r_critical,
    t_pvalue,
    z_critical,
    z_pvalue,
)

#: Candidate cuts are lowered by this relative margin so float rounding never drops a test.
CUT_MARGIN = 1e-5
#: Absolute margin (Z units) of the float32 pre-filter of the differential test.
Z_PREFILTER_MARGIN = 1e-2
#: DIFF_DETAIL_CAP: differential candidates whose pair and r values are kept in pass 1
#: (24 bytes each); above it the tiles are computed again to collect the significant pairs.
#: FILTER_CELLS: tile cells the differential filter works on at once (bounds its temporaries).
EDGE_FIELDS = (
    "pair_index", "gene_i", "gene_j", "r_low", "r_high", "delta",
    "p_low", "p_high", "p_diff", "q_low", "q_high", "q_diff", "sig_low", "sig_high",
)


@dataclass
class BaseResult:
    """Edges (sig_differential, ascending pair_index) and the counts of one reference gene."""

    edges: dict[str, np.ndarray]
    attrs: dict[str, object] = field(default_factory=dict)


class _Tiles:
    """Correlation tiles of the upper triangle: rows [a, b) against columns [a, N).

    r = (u_i·u_j)·scale_i·scale_j from integer ranks (dcoex.ranks.IntegerRanks): the
    products are exact, so r does not depend on the tile shape or BLAS threads. Pairs
    outside the family (lower triangle or diagonal of the tile, or a gene constant in the
    group: scale 0) get r = 0 exactly, so any cut > 0 drops them without a mask.
    """

    def __init__(self, low: IntegerRanks, high: IntegerRanks, tile_rows: int) -> None:
        self.low, self.high = low, high
        self.n = low.u.shape[0]
        self.tile_rows = max(1, int(tile_rows))
        size = min(self.tile_rows, max(self.n - 1, 1)) * self.n
        self._buf = (np.empty(size, np.float32), np.empty(size, np.float32))
        wide = [np.empty(size, np.float64) if g.dtype == np.float64 else None for g in (low, high)]
        self._wide = wide

    def _product(self, ranks: IntegerRanks, wide: np.ndarray | None, a: int, b: int, out: np.ndarray) -> None:
        if wide is None:
            np.matmul(ranks.u[a:b], ranks.u[a:].T, out=out)
        else:
            product = wide[: out.size].reshape(out.shape)
            np.matmul(ranks.u[a:b], ranks.u[a:].T, out=product)
            out[...] = product
        out *= ranks.scale[a:b, None]
        out *= ranks.scale[None, a:]

    def __iter__(self):
        n = self.n
        for a in range(0, n - 1, self.tile_rows):
            b = min(a + self.tile_rows, n - 1)
            shape = (b - a, n - a)
            r_low = self._buf[0][: shape[0] * shape[1]].reshape(shape)
            r_high = self._buf[1][: shape[0] * shape[1]].reshape(shape)
            self._product(self.low, self._wide[0], a, b, r_low)
            self._product(self.high, self._wide[1], a, b, r_high)
            lower = np.arange(b - a)[None, :] <= np.arange(b - a)[:, None]
            r_low[:, : b - a][lower] = 0.0
            r_high[:, : b - a][lower] = 0.0
            yield a, r_low, r_high


def _upper(a: int, shape: tuple[int, int]) -> np.ndarray:
    return np.arange(shape[1])[None, :] > np.arange(shape[0])[:, None]


def _pair_ok(a: int, shape: tuple[int, int], constant: np.ndarray) -> np.ndarray:
    """Upper-triangle pairs of the tile with no constant gene (for a cut of 0)."""
    return _upper(a, shape) & ~constant[a : a + shape[0], None] & ~constant[None, a:]


class _Above:
    """|r| of a tile's entries with |r| >= cut (and ok), float32; reuses its buffers."""

    def __init__(self) -> None:
        self._abs = np.empty(0, np.float32)
        self._mask = np.empty(0, bool)

    def __call__(self, r: np.ndarray, cut: float, ok: np.ndarray | None) -> np.ndarray:
        if self._abs.size < r.size:
            self._abs, self._mask = np.empty(r.size, np.float32), np.empty(r.size, bool)
        magnitude = self._abs[: r.size].reshape(r.shape)
        mask = self._mask[: r.size].reshape(r.shape)
        np.abs(r, out=magnitude)
        np.greater_equal(magnitude, np.float32(cut), out=mask)
        if ok is not None:
            mask &= ok
        return magnitude[mask]


class _DiffFilter:
    """Pairs of a tile whose Fisher |Z| >= cut: float32 pre-filter, exact float64 Z."""

    def __init__(self, k_low: int, k_high: int, constant_any: np.ndarray) -> None:
        self.k_low, self.k_high = k_low, k_high
        self.se_inv = np.float32(1.0 / np.sqrt(1.0 / (k_low - 3) + 1.0 / (k_high - 3)))
        self.constant_any = constant_any
        self._buf: tuple[np.ndarray, np.ndarray] | None = None

    def _approx_mask(self, r_low: np.ndarray, r_high: np.ndarray, cut: float) -> np.ndarray:
        if self._buf is None or self._buf[0].size < r_low.size:
            self._buf = (np.empty(r_low.size, np.float32), np.empty(r_low.size, np.float32))
        zl = self._buf[0][: r_low.size].reshape(r_low.shape)
        zh = self._buf[1][: r_low.size].reshape(r_low.shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            np.arctanh(r_low, out=zl)
            np.arctanh(r_high, out=zh)
            np.subtract(zh, zl, out=zh)
        np.abs(zh, out=zh)
        zh *= self.se_inv
        # |r| at or past 1 (float32 rounding) gives inf or NaN: kept for the exact test
        mask = self._buf[0][: r_low.size].view(np.uint8)[: r_low.size].view(bool).reshape(r_low.shape)
        np.less(zh, np.float32(cut - Z_PREFILTER_MARGIN), out=mask)
        np.logical_not(mask, out=mask)
        return mask

    def __call__(self, a: int, r_low: np.ndarray, r_high: np.ndarray, cut: float) -> tuple[np.ndarray, ...]:
        """(rows, cols, r_low, r_high, Z) of the tile's pairs with |Z| >= cut (rows/cols in the
        tile), in row-major order; worked out in row slices of at most FILTER_CELLS cells."""
        step = max(1, FILTER_CELLS // max(r_low.shape[1], 1))
        parts = [self._slice(a, r0, r_low[r0 : r0 + step], r_high[r0 : r0 + step], cut)
                 for r0 in range(0, r_low.shape[0], step)]
        return tuple(np.concatenate([p[c] for p in parts]) for c in range(5))

    def _slice(self, a: int, r0: int, r_low: np.ndarray, r_high: np.ndarray, cut: float) -> tuple[np.ndarray, ...]:
        if cut > 0:
            rows, cols = np.nonzero(self._approx_mask(r_low, r_high, cut))
        else:
            ok = np.arange(r_low.shape[1])[None, :] > np.arange(r0, r0 + r_low.shape[0])[:, None]
            ok &= ~self.constant_any[a + r0 : a + r0 + r_low.shape[0], None] & ~self.constant_any[None, a:]
            rows, cols = np.nonzero(ok)
        if self.constant_any.any():
            keep = ~self.constant_any[rows + a + r0] & ~self.constant_any[cols + a]
            rows, cols = rows[keep], cols[keep]
        rl, rh = r_low[rows, cols], r_high[rows, cols]
        z = fisher_z(rl, rh, self.k_low, self.k_high)
        keep = np.abs(z) >= cut
        return rows[keep] + r0, cols[keep], rl[keep], rh[keep], z[keep]


def base_correlations(
    x_low: np.ndarray,
    x_high: np.ndarray,
    alpha: float,
    *,
    tile_rows: int = 512,
    exact_q: bool = False,
    diff_detail_cap: int = DIFF_DETAIL_CAP,
) -> BaseResult:
    """Tests of every gene pair for one reference gene.

    ``x_low``/``x_high``: expression of all N genes in the LOW/HIGH samples, (N, k_L) and
    (N, k_H). ``exact_q`` makes every test a candidate so every q is exact (slower, more
    memory); otherwise q values at or above alpha are NaN (bh.py). Differential candidates
    keep their pair and r values while there are at most ``diff_detail_cap`` of them;
    beyond that the tiles are computed a second time to collect the significant pairs.
    """
    n, k_low = x_low.shape
    k_high = x_high.shape[1]
    ranks_low, ranks_high = IntegerRanks(x_low), IntegerRanks(x_high)
    const_low, const_high = ranks_low.constant, ranks_high.constant
    const_any = const_low | const_high
    m_low = n_pairs(n - int(const_low.sum()))
    m_high = n_pairs(n - int(const_high.sum()))
    m_diff = n_pairs(n - int(const_any.sum()))
    df_low, df_high = k_low - 2, k_high - 2
    if exact_q:
        cut_low = cut_high = cut_diff = 0.0
    else:
        cut_low = r_critical(alpha, df_low) * (1 - CUT_MARGIN)
        cut_high = r_critical(alpha, df_high) * (1 - CUT_MARGIN)
        cut_diff = z_critical(alpha) * (1 - CUT_MARGIN)
    tiles = _Tiles(ranks_low, ranks_high, tile_rows)
    diff = _DiffFilter(k_low, k_high, const_any)
    above = _Above()

    cand_low, cand_high, cand_diff = [], [], []
    details: list[tuple[np.ndarray, ...]] | None = []
    n_detail = 0
    for a, r_low, r_high in tiles:
        ok_low = _pair_ok(a, r_low.shape, const_low) if cut_low == 0 else None
        ok_high = _pair_ok(a, r_high.shape, const_high) if cut_high == 0 else None
        cand_low.append(above(r_low, cut_low, ok_low))
        cand_high.append(above(r_high, cut_high, ok_high))
        del ok_low, ok_high
        rows, cols, rl, rh, z = diff(a, r_low, r_high, cut_diff)
        cand_diff.append(np.abs(z))
        if details is not None:
            n_detail += rows.size
            if n_detail > diff_detail_cap:
                details = None
            else:
                details.append((flat_index(rows + a, cols + a, n), rl, rh, z))
        del r_low, r_high
    fam_low = BHFamily(_concat(cand_low, np.float32), m_low, lambda s: t_pvalue(s, df_low), alpha, exact_q)
    fam_high = BHFamily(_concat(cand_high, np.float32), m_high, lambda s: t_pvalue(s, df_high), alpha, exact_q)
    fam_diff = BHFamily(_concat(cand_diff, np.float64), m_diff, z_pvalue, alpha, exact_q)

    if details is None:
        details = []
        if fam_diff.n_sig:
            for a, r_low, r_high in tiles:
                rows, cols, rl, rh, z = diff(a, r_low, r_high, fam_diff.cut)
                details.append((flat_index(rows + a, cols + a, n), rl, rh, z))
                del r_low, r_high
    flat, rl, rh, z = (
        np.concatenate([d[c] for d in details]) if details else np.empty(0, t)
        for c, t in enumerate((np.int64, np.float32, np.float32, np.float64))
    )
    details.clear()
    keep = np.abs(z) >= fam_diff.cut
    flat, rl, rh, z = flat[keep], rl[keep], rh[keep], z[keep]
    gi, gj = pair_from_flat(flat, n)
    edges = {
        "pair_index": flat,
        "gene_i": gi.astype(np.int32),
        "gene_j": gj.astype(np.int32),
        "r_low": rl,
        "r_high": rh,
        "delta": rh - rl,
        "p_low": t_pvalue(rl, df_low),
        "p_high": t_pvalue(rh, df_high),
        "p_diff": z_pvalue(z),
        "q_low": fam_low.q_values(np.abs(rl)),
        "q_high": fam_high.q_values(np.abs(rh)),
        "q_diff": fam_diff.q_values(np.abs(z)),
        "sig_low": fam_low.is_significant(np.abs(rl)),
        "sig_high": fam_high.is_significant(np.abs(rh)),
    }
    sig_edges = int((edges["sig_low"] | edges["sig_high"]).sum())
    attrs = {
        "n_genes": n,
        "n_tests": n_pairs(n),
        "n_tests_low": m_low,
        "n_tests_high": m_high,
        "n_tests_diff": m_diff,
        "n_excluded": n_pairs(n) - m_diff,
        "n_const_low": int(const_low.sum()),
        "n_const_high": int(const_high.sum()),
        "k_low": k_low,
        "k_high": k_high,
        "fdr_alpha": float(alpha),
        "n_sig_low": fam_low.n_sig,
        "n_sig_high": fam_high.n_sig,
        "n_sig_differential": fam_diff.n_sig,
        "n_sig_edges": sig_edges,
        "n_candidates_low": fam_low.n,
        "n_candidates_high": fam_high.n,
        "n_candidates_diff": fam_diff.n,
        "q_exact": bool(exact_q),
    }
    return BaseResult(edges, attrs)


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    out = np.concatenate(parts) if parts else np.empty(0, dtype)
    parts.clear()
    return out.astype(dtype, copy=False)
