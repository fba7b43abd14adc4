"""Stage 02b science: bootstrap replicates of the selected edges' Δ = r_H − r_L.

A bootstrap resample of a group repeats some of its samples (positions drawn with
replacement). Its Spearman correlation is the Pearson correlation of the resample's
average ranks, where duplicated samples are ties. Only the genes of the selected edges are
ranked, each from its order within the group (computed once per chunk of edges):

- a resample is a vector of counts c_p over the k positions of the group (sum c_p = k_r);
- along a gene's sorted positions, the cumulative sum of counts gives the average rank of
  each value: cum − (c − 1)/2, or for a run of tied values (cum_last + cum_before_first + 1)/2;
- with u = 2·rank − (k_r + 1) (integers), r_ij = Σ_p c_p·u_i,p·u_j,p / sqrt(Σ c u_i² · Σ c u_j²):
  exactly the correlation over the k_r resampled columns. The sums are exact integers in
  float32 (float64 when k_r(k_r−1)² >= 2**24), so r does not depend on how edges are
  chunked or computed.

Edges are processed in chunks (memory O(chunk × B)); within a chunk, replicates in
blocks and edges in sub-blocks so temporaries stay bounded. Within a chunk, a dense core
of high-degree genes (e.g. a rewired module) is computed by matrix products, the other
edges by row gathers. A gene constant within a
resample has no correlation: its replicate is NaN and the statistics use the finite
replicates (``n_finite``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from dcoex.ranks import exact_dtype, tie_bounds
from dcoex.stages.s02b_bootstrap_edges.estimator import GATHER_WORK_BYTES, RANK_WORK_BYTES, STATS_WORK_BYTES

#: Dense-core sizes tried: MIN_CORE, MIN_CORE + CORE_STEP, ... up to MAX_CORE genes.
MIN_CORE = 64
CORE_STEP = 32
MAX_CORE = 2048
#: Cost of one gathered edge relative to one pair of a core matrix product.
GATHER_COST_RATIO = 24.0


def positions_in_group(samples: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Positions of bootstrap sample indices inside the ascending group; ValueError if absent."""
    pos = np.searchsorted(group, samples)
    pos = np.clip(pos, 0, group.size - 1)
    if not np.array_equal(group[pos], samples):
        raise ValueError("bootstrap indices contain samples outside the group")
    return pos


class ResampleSide:
    """One group (LOW or HIGH) of one reference gene for a set of genes: their order within
    the group and the resamples' counts."""

    def __init__(self, x_group: np.ndarray, boot_positions: np.ndarray) -> None:
        """``x_group``: (g, k) values of the genes in the group's samples; ``boot_positions``:
        (B, k_r) positions (0..k−1) of each resample."""
        x_group = np.atleast_2d(x_group)
        self.n_genes, self.k = x_group.shape
        self.n_boot, self.kr = boot_positions.shape
        self.order = np.argsort(x_group, axis=1, kind="stable")
        first, last = tie_bounds(np.take_along_axis(x_group, self.order, axis=1))
        sorted_position = np.empty_like(self.order)
        np.put_along_axis(sorted_position, self.order, np.arange(self.k), axis=1)
        self.rank_index = np.arange(self.n_genes)[:, None] * self.k + sorted_position
        self.tied = np.flatnonzero(np.any(first != last, axis=1))
        self.first, self.last = first[self.tied], last[self.tied]
        flat = (np.arange(self.n_boot)[:, None] * self.k + boot_positions).ravel()
        self.dtype = exact_dtype(self.kr, self.kr - 1)
        self.counts = np.bincount(flat, minlength=self.n_boot * self.k).reshape(self.n_boot, self.k).astype(self.dtype)

    def bytes_per_replicate(self) -> int:
        """Ranking temporaries of one replicate (bytes): four (g, k) arrays of the rank dtype."""
        return self.n_genes * self.k * 4 * np.dtype(self.dtype).itemsize

    def integer_ranks(self, b0: int, b1: int) -> tuple[np.ndarray, np.ndarray]:
        """(u, scale) of replicates b0..b1: u (nb, g, k) = 2·rank − (k_r + 1) of each gene's
        value at each group position in the resample (integers; positions not drawn carry
        count 0), scale (nb, g) = 1/sqrt(Σ_p c_p·u_p²), NaN for a gene constant in the
        resample. r_ij = (Σ_p c_p·u_i,p·u_j,p)·scale_i·scale_j, an exact integer sum."""
        nb, g, k = b1 - b0, self.n_genes, self.k
        weights = self.counts[b0:b1][:, self.order]  # (nb, g, k): counts in sorted order
        avg = np.cumsum(weights, axis=2)
        if self.tied.size:
            cum_t, w_t = avg[:, self.tied], weights[:, self.tied]
            before = np.take_along_axis(cum_t, self.first[None], 2) - np.take_along_axis(w_t, self.first[None], 2)
            tied_avg = (np.take_along_axis(cum_t, self.last[None], 2) + before + 1.0) / 2.0
        weights *= -0.5
        avg += weights
        avg += 0.5
        del weights
        if self.tied.size:
            avg[:, self.tied] = tied_avg
        ranks = avg.reshape(nb, g * k)[:, self.rank_index]
        del avg
        ranks *= 2.0
        ranks -= self.kr + 1  # u = 2·rank − (k_r + 1): integers
        squares = np.einsum("bgk,bgk,bk->bg", ranks, ranks, self.counts[b0:b1], dtype=np.float64)
        with np.errstate(divide="ignore"):
            scale = np.where(squares > 0, 1.0 / np.sqrt(squares), np.nan).astype(np.float32)
        return ranks.astype(self.dtype, copy=False), scale


def replicate_blocks(n_boot: int, per_replicate_bytes: int) -> Iterator[tuple[int, int]]:
    """[b0, b1) blocks of replicates whose temporaries fit RANK_WORK_BYTES."""
    size = int(max(1, min(n_boot, RANK_WORK_BYTES // max(per_replicate_bytes, 1))))
    for b0 in range(0, n_boot, size):
        yield b0, min(b0 + size, n_boot)


def edge_correlations(u: np.ndarray, counts: np.ndarray, li: np.ndarray, lj: np.ndarray) -> np.ndarray:
    """Σ_p c_p·u_i,p·u_j,p, (nb, E), of edges (li, lj) from integer ranks u (nb, g, k) and
    counts (nb, k), in edge sub-blocks (exact: integer products and sums)."""
    nb, k = u.shape[0], u.shape[2]
    step = int(max(1, GATHER_WORK_BYTES // (3 * u.itemsize * nb * k)))
    out = np.empty((nb, li.size), dtype=u.dtype)
    weights = counts[:, None, :]
    for e0 in range(0, li.size, step):
        e1 = min(e0 + step, li.size)
        prod = u[:, li[e0:e1]]
        prod *= u[:, lj[e0:e1]]
        prod *= weights
        out[:, e0:e1] = prod.sum(axis=2)
    return out


class EdgeLayout:
    """Edges of a chunk split into a dense core and the rest.

    Genes are ordered by degree; the core is the prefix of D genes (D <= MAX_CORE) that
    minimises D(D−1)/2 + GATHER_COST_RATIO·(edges outside it). Core edges come from one
    matrix product per replicate (BLAS); the others from row gathers. Both are exact integer
    sums, so r does not depend on the layout, the chunk or the BLAS threads.
    """

    def __init__(self, li: np.ndarray, lj: np.ndarray, n_genes: int) -> None:
        degree = np.bincount(li, minlength=n_genes) + np.bincount(lj, minlength=n_genes)
        order = np.argsort(-degree, kind="stable")
        position = np.empty(n_genes, dtype=np.int64)
        position[order] = np.arange(n_genes)
        a, b = position[li], position[lj]
        top = np.maximum(a, b)
        sorted_top = np.sort(top)
        sizes = np.arange(MIN_CORE, min(MAX_CORE, n_genes) + 1, CORE_STEP)
        size, best = 0, GATHER_COST_RATIO * li.size
        if sizes.size:
            inside = np.searchsorted(sorted_top, sizes)
            cost = sizes * (sizes - 1) / 2 + GATHER_COST_RATIO * (li.size - inside)
            if cost.min() < best:
                size = int(sizes[int(np.argmin(cost))])
        in_core = top < size
        self.core_genes = order[:size]
        self.core_edges = np.flatnonzero(in_core)
        self.core_a, self.core_b = a[in_core], b[in_core]
        self.rest_edges = np.flatnonzero(~in_core)
        self.rest_i, self.rest_j = li[~in_core], lj[~in_core]
        self.gene_i, self.gene_j = li, lj
        self.n_edges = li.size

    def correlations(self, u: np.ndarray, scale: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """r (nb, E) float32 of the chunk's edges from integer ranks u (nb, g, k), their
        scale (nb, g) and the resample counts (nb, k) (see ResampleSide.integer_ranks)."""
        nb = u.shape[0]
        raw = np.empty((nb, self.n_edges), dtype=u.dtype)
        if self.rest_edges.size:
            raw[:, self.rest_edges] = edge_correlations(u, counts, self.rest_i, self.rest_j)
        if self.core_edges.size:
            core = u[:, self.core_genes]  # (nb, D, k)
            weighted = core * counts[:, None, :]
            d = core.shape[1]
            step = int(max(1, GATHER_WORK_BYTES // (u.itemsize * d * d)))
            for b0 in range(0, nb, step):
                gram = np.matmul(core[b0 : b0 + step], weighted[b0 : b0 + step].transpose(0, 2, 1))
                raw[b0 : b0 + step, self.core_edges] = gram[:, self.core_a, self.core_b]
        r = raw.astype(np.float32)
        r *= scale[:, self.gene_i]
        r *= scale[:, self.gene_j]
        return r


def replicate_deltas(
    x_low: np.ndarray, x_high: np.ndarray, pos_low: np.ndarray, pos_high: np.ndarray,
    *,
    gene_i: np.ndarray, gene_j: np.ndarray,
) -> np.ndarray:
    """Δ^b = r_H^b − r_L^b, (E, B) float32, of edges (gene_i, gene_j) given as rows of
    ``x_low`` (g, k_L) / ``x_high`` (g, k_H), the genes' values in the LOW/HIGH samples;
    ``pos_low`` (B, k_rL) / ``pos_high`` (B, k_rH) are resample positions in the groups."""
    genes = np.unique(np.concatenate([gene_i, gene_j]))
    layout = EdgeLayout(np.searchsorted(genes, gene_i), np.searchsorted(genes, gene_j), genes.size)
    low = ResampleSide(x_low[genes], pos_low)
    high = ResampleSide(x_high[genes], pos_high)
    deltas = np.empty((gene_i.size, low.n_boot), dtype=np.float32)
    per_rep = max(low.bytes_per_replicate(), high.bytes_per_replicate())
    for b0, b1 in replicate_blocks(low.n_boot, per_rep):
        r_high = layout.correlations(*high.integer_ranks(b0, b1), high.counts[b0:b1])
        r_low = layout.correlations(*low.integer_ranks(b0, b1), low.counts[b0:b1])
        r_high -= r_low
        deltas[:, b0:b1] = r_high.T
    return deltas


@dataclass
class BootStats:
    """Per-edge bootstrap statistics (float32 except pval float64, n_finite int32)."""

    delta_mean: np.ndarray
    delta_std: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    bias: np.ndarray
    bootstrap_pval: np.ndarray
    n_finite: np.ndarray


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy.percentile's linear interpolation (same formula, float64)."""
    diff = b - a
    return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def boot_stats(deltas: np.ndarray, delta_base: np.ndarray, ci_alpha: float) -> BootStats:
    """Statistics of docs/design.md §4.6 over each row of ``deltas`` (rows sorted in place).

    Over the n finite replicates of an edge: mean, sd (ddof 1), percentile CI at
    100·ci_alpha/2 and 100·(1 − ci_alpha/2) with numpy.percentile's "linear" method
    (virtual index (n−1)·q), bias = mean − Δ_base, and
    bootstrap_pval = max(2·min(#{Δ>0}, #{Δ<0})/n, 1/n). NaN where n < 2. Rows are
    processed in blocks so temporaries stay within STATS_WORK_BYTES.
    """
    n_edges, n_boot = deltas.shape
    step = int(max(1, STATS_WORK_BYTES // max(16 * n_boot, 1)))
    parts = [_block_stats(deltas[e0 : e0 + step], delta_base[e0 : e0 + step], ci_alpha)
             for e0 in range(0, n_edges, step)]
    if not parts:
        parts = [_block_stats(deltas, delta_base, ci_alpha)]
    return BootStats(*(np.concatenate([getattr(p, f) for p in parts]) for f in BootStats.__dataclass_fields__))


def _block_stats(deltas: np.ndarray, delta_base: np.ndarray, ci_alpha: float) -> BootStats:
    finite = np.isfinite(deltas)
    n_f = finite.sum(axis=1)
    n_safe = np.maximum(n_f, 1)
    total = np.where(finite, deltas, 0).sum(axis=1, dtype=np.float64)
    mean = total / n_safe
    centred = np.where(finite, deltas - mean[:, None].astype(np.float32), 0)
    np.square(centred, out=centred)
    var = centred.sum(axis=1, dtype=np.float64) / np.maximum(n_f - 1, 1)
    del centred, finite
    pos = (deltas > 0).sum(axis=1)
    neg = (deltas < 0).sum(axis=1)
    pval = np.maximum(2.0 * np.minimum(pos, neg) / n_safe, 1.0 / n_safe)
    deltas.sort(axis=1)  # NaN last
    bounds = []
    rows = np.arange(deltas.shape[0])
    for q in (ci_alpha / 2.0, 1.0 - ci_alpha / 2.0):
        h = (n_safe - 1) * q
        lo = np.floor(h).astype(np.int64)
        hi = np.minimum(lo + 1, n_safe - 1)
        a = deltas[rows, lo].astype(np.float64)
        b = deltas[rows, hi].astype(np.float64)
        bounds.append(_lerp(a, b, h - lo))
    undefined = n_f < 2
    out = []
    for values in (mean, np.sqrt(var), bounds[0], bounds[1], mean - delta_base.astype(np.float64), pval):
        values = np.asarray(values, dtype=np.float64)
        values[undefined] = np.nan
        out.append(values)
    return BootStats(
        delta_mean=out[0].astype(np.float32), delta_std=out[1].astype(np.float32),
        ci_low=out[2].astype(np.float32), ci_high=out[3].astype(np.float32),
        bias=out[4].astype(np.float32), bootstrap_pval=out[5], n_finite=n_f.astype(np.int32),
    )
