"""Stage 02b science: bootstrap replicates of the selected edges' Δ = r_H − r_L.

A bootstrap resample of a group repeats some of its samples (positions drawn with
replacement). Its Spearman correlation is the Pearson correlation of the resample's
average ranks, where duplicated samples are ties. Only the genes of the selected edges are
ranked, and each is ranked from its dense ranks within the group (computed once):

- a resample is its support (distinct positions p) and counts c_p (sum c_p = k_r);
- the number of resample values at or below a gene's dense value v is a cumulative sum of
  counts, so the average rank of value v is cum_v − (w_v − 1)/2 (w_v = count at v);
- the rank vector centred on (k_r + 1)/2, weighted by sqrt(c_p) and scaled to unit norm
  gives y with r = Σ_p y_i,p·y_j,p: exactly the correlation over the k_r columns.

Edges are processed in chunks (memory O(chunk × B)); within a chunk, replicates in
blocks and edges in sub-blocks so temporaries stay bounded. A gene constant within a
resample has no correlation: its replicate is NaN and the statistics use the finite
replicates (``n_finite``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from dcoex.ranks import dense_ranks
from memfit.estimators.bootstrap_edges import GATHER_WORK_BYTES, RANK_WORK_BYTES


def positions_in_group(samples: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Positions of bootstrap sample indices inside the ascending group; ValueError if absent."""
    pos = np.searchsorted(group, samples)
    pos = np.clip(pos, 0, group.size - 1)
    if not np.array_equal(group[pos], samples):
        raise ValueError("bootstrap indices contain samples outside the group")
    return pos


class ResampleSide:
    """One group (LOW or HIGH) of one reference gene: its genes' dense ranks and resamples."""

    def __init__(self, x_group: np.ndarray, boot_positions: np.ndarray) -> None:
        """``x_group``: (n_g, k) values of the genes in the group's samples; ``boot_positions``:
        (B, k_r) positions (0..k−1) of each resample."""
        self.dense = dense_ranks(x_group)
        self.n_genes, self.k = self.dense.shape
        self.n_boot, self.kr = boot_positions.shape
        counts = np.zeros((self.n_boot, self.k), dtype=np.int64)
        rows = np.repeat(np.arange(self.n_boot), self.kr)
        np.add.at(counts, (rows, boot_positions.ravel()), 1)
        support = counts > 0
        self.m = int(support.sum(axis=1).max())
        order = np.argsort(~support, axis=1, kind="stable")[:, : self.m]
        self.support = order
        self.weights = np.take_along_axis(counts, order, axis=1).astype(np.float64)

    def bytes_per_replicate(self, n_genes: int) -> int:
        """Ranking temporaries of one replicate for ``n_genes`` genes (bytes)."""
        return n_genes * (16 * self.k + 40 * self.m)

    def unit_values(self, genes: np.ndarray, b0: int, b1: int) -> np.ndarray:
        """y (len(genes), b1−b0, m) float32: unit-norm weighted centred resample ranks;
        NaN rows for genes constant in a resample."""
        nb, k, m = b1 - b0, self.k, self.m
        dense = self.dense[genes][:, self.support[b0:b1]]  # (g, nb, m)
        w = self.weights[b0:b1]  # (nb, m)
        offsets = (np.arange(len(genes))[:, None, None] * nb + np.arange(nb)[None, :, None]) * k
        flat = (dense + offsets).ravel()
        counts = np.bincount(flat, weights=np.broadcast_to(w, dense.shape).ravel(), minlength=len(genes) * nb * k)
        counts = counts.reshape(len(genes), nb, k)
        avg = np.cumsum(counts, axis=2)
        avg -= (counts - 1.0) / 2.0
        del counts
        ranks = np.take_along_axis(avg, dense, axis=2)
        del avg, dense
        ranks -= (self.kr + 1) / 2.0
        ranks *= np.sqrt(w)[None, :, :]
        norm = np.sqrt(np.einsum("gbt,gbt->gb", ranks, ranks))
        with np.errstate(invalid="ignore", divide="ignore"):
            ranks /= np.where(norm > 0, norm, np.nan)[:, :, None]
        return ranks.astype(np.float32)


def replicate_blocks(n_boot: int, per_replicate_bytes: int) -> Iterator[tuple[int, int]]:
    """[b0, b1) blocks of replicates whose temporaries fit RANK_WORK_BYTES."""
    size = int(max(1, min(n_boot, RANK_WORK_BYTES // max(per_replicate_bytes, 1))))
    for b0 in range(0, n_boot, size):
        yield b0, min(b0 + size, n_boot)


def edge_correlations(y: np.ndarray, li: np.ndarray, lj: np.ndarray) -> np.ndarray:
    """r (E, nb) float32 of edges (li, lj) from unit values y (g, nb, m), in edge sub-blocks."""
    n_edges = li.size
    nb, m = y.shape[1], y.shape[2]
    step = int(max(1, GATHER_WORK_BYTES // (12 * nb * m)))
    out = np.empty((n_edges, nb), dtype=np.float32)
    for e0 in range(0, n_edges, step):
        e1 = min(e0 + step, n_edges)
        prod = y[li[e0:e1]]
        prod *= y[lj[e0:e1]]
        out[e0:e1] = prod.sum(axis=2)
    return out


def replicate_deltas(low: ResampleSide, high: ResampleSide, gene_i: np.ndarray, gene_j: np.ndarray) -> np.ndarray:
    """Δ^b = r_H^b − r_L^b of edges whose genes are rows of the sides: (E, B) float32."""
    genes = np.unique(np.concatenate([gene_i, gene_j]))
    li, lj = np.searchsorted(genes, gene_i), np.searchsorted(genes, gene_j)
    deltas = np.empty((gene_i.size, low.n_boot), dtype=np.float32)
    per_rep = max(low.bytes_per_replicate(genes.size), high.bytes_per_replicate(genes.size))
    for b0, b1 in replicate_blocks(low.n_boot, per_rep):
        r_high = edge_correlations(high.unit_values(genes, b0, b1), li, lj)
        r_low = edge_correlations(low.unit_values(genes, b0, b1), li, lj)
        np.subtract(r_high, r_low, out=deltas[:, b0:b1])
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
    """Statistics of DESIGN.md §4 over each row of ``deltas`` (sorted in place).

    Over the n finite replicates of an edge: mean, sd (ddof 1), percentile CI at
    100·ci_alpha/2 and 100·(1 − ci_alpha/2) with numpy.percentile's "linear" method
    (virtual index (n−1)·q), bias = mean − Δ_base, and
    bootstrap_pval = max(2·min(#{Δ>0}, #{Δ<0})/n, 1/n). NaN where n < 2.
    """
    finite = np.isfinite(deltas)
    n_f = finite.sum(axis=1)
    n_safe = np.maximum(n_f, 1)
    total = np.where(finite, deltas, 0).sum(axis=1, dtype=np.float64)
    mean = total / n_safe
    centred = np.where(finite, deltas - mean[:, None].astype(np.float32), 0)
    np.square(centred, out=centred)
    var = centred.sum(axis=1, dtype=np.float64) / np.maximum(n_f - 1, 1)
    del centred
    pos = (deltas > 0).sum(axis=1)
    neg = (deltas < 0).sum(axis=1)
    del finite
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
