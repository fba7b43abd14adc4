"""Stage 07 science: the permutation null of the direct (L1) hub metrics of every gene at once.

Under H0 (g's extremes are no different from any other samples) a random LOW/HIGH split of
sizes k_L, k_H drawn from all S samples does not depend on the reference gene. So one
permutation is one full differential network — exactly the tests of stage 02a (Spearman r
per group, t-test, Fisher z, BH over all N(N−1)/2 pairs per family), the edge selection of
02b (``sig_differential`` or ``sig_edges``), the ``min_effect`` cut and the presence rule of
stage 03 — and from that one network every gene's null value of every tested metric
(docs/stage07.md). P permutations cost P runs of the 02a kernel, not N × P.

The network is consumed as **chunks of edge columns** (``HubAccumulator.add``): per-gene
sums over the edges touching the gene, so a permutation never holds its edge list. Sums of
|r| and Δ are accumulated in exact fixed point (int64 units of 2⁻⁴⁰), so a metric does not
depend on how the edges are chunked. The observed value of gene g (stage 08) is the same
accumulator run over g's own 02a edges: the same quantity as its null, bootstrap CI filter
excluded on both sides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from dcoex.backend import Backend
from dcoex.stages.s02a_base_correlations.science import differential_edges
from dcoex.stages.s03_network.classify import CLASS_LABELS, DISAPPEAR, NEW, SIGN_CHANGE, classify, presence

#: SeedSequence spawn key of permutation b is (PERM_STREAM, b): stage 01's gene streams are (g,).
PERM_STREAM = 7
RNG_SCHEME = ("permutation b: Generator(PCG64(SeedSequence(seed, spawn_key=(7, b)))).choice(S, k_L + k_H, "
              "replace=False); first k_L = pseudo-LOW, rest = pseudo-HIGH (each sorted)")
#: Fixed-point unit of the |r| and delta sums (exact, order-free integer sums).
FIXED = float(2**40)
#: Edges per chunk handed to the accumulator.
CHUNK_EDGES = 1 << 18

#: The tested metrics (rewiring_hubs.tsv names) and their sidedness: "upper" tests T = x,
#: "abs" T = |x| (a signed mean, two-sided), "abs_log" T = |ln x| (a high/low ratio, two-sided).
TESTED_METRICS: tuple[tuple[str, str], ...] = (
    ("n_sig_edges_diff", "upper"),
    ("focus_deg_low", "upper"), ("focus_deg_high", "upper"),
    ("L1_n_nodes", "upper"), ("L1_n_disappear", "upper"), ("L1_n_new", "upper"), ("L1_n_sign_chg", "upper"),
    ("L1_n_strengthen", "upper"), ("L1_n_weaken", "upper"), ("L1_rewire", "upper"),
    ("L1_frac_disappear", "upper"), ("L1_frac_new", "upper"), ("L1_frac_rewire", "upper"),
    ("L1_conn_low", "upper"), ("L1_conn_high", "upper"), ("L1_conn_diff", "upper"),
    ("L1_conn_mean_low", "upper"), ("L1_conn_mean_high", "upper"), ("L1_mean_abs_dr", "upper"),
    ("L1_mean_delta", "abs"), ("L1_n_edges_low", "upper"), ("L1_n_edges_high", "upper"),
    ("HL_conn_L1", "abs_log"),
)
METRICS: tuple[str, ...] = tuple(name for name, _ in TESTED_METRICS)
SIDES: dict[str, str] = dict(TESTED_METRICS)


@dataclass(frozen=True)
class EdgeRules:
    """What makes an edge of the network and its presence (stages 02b and 03, no CI filter)."""

    edge_selection: str = "sig_differential"
    min_effect: float = 0.0
    corr_threshold: float = 1e-4


def permutation_groups(n_samples: int, k_low: int, k_high: int, seed: int, perm: int) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-LOW and pseudo-HIGH sample indices of permutation ``perm`` (sorted int64): disjoint,
    of the real sizes, drawn from all samples; a function of (seed, perm) only."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=(PERM_STREAM, int(perm)))))
    draw = rng.choice(int(n_samples), size=int(k_low) + int(k_high), replace=False)
    return np.sort(draw[:k_low]).astype(np.int64), np.sort(draw[k_low:]).astype(np.int64)


class HubAccumulator:
    """Per-gene sums over the edges of one differential network, fed in chunks of edge columns
    (``gene_i``, ``gene_j``, ``r_low``, ``r_high``, ``delta``, ``sig_low``, ``sig_high``: the
    sig_differential edges of 02a); :meth:`metrics` turns them into the tested metrics."""

    def __init__(self, n_genes: int, rules: EdgeRules) -> None:
        self.n = int(n_genes)
        self.rules = rules
        self.n_edges = 0
        self.degree = np.zeros(self.n, np.int64)
        self.classes = np.zeros((len(CLASS_LABELS), self.n), np.int64)
        self.n_low = np.zeros(self.n, np.int64)
        self.n_high = np.zeros(self.n, np.int64)
        self.sums = {k: np.zeros(self.n, np.int64) for k in ("conn_low", "conn_high", "conn_diff", "delta")}

    def add(self, chunk: Mapping[str, np.ndarray]) -> None:
        """Accumulate one chunk of edges (any length, any order)."""
        delta = np.asarray(chunk["delta"], dtype=np.float64)
        keep = np.abs(delta) >= self.rules.min_effect
        sig_low, sig_high = np.asarray(chunk["sig_low"], bool), np.asarray(chunk["sig_high"], bool)
        if self.rules.edge_selection == "sig_edges":
            keep &= sig_low | sig_high
        if not keep.any():
            return
        gi = np.asarray(chunk["gene_i"], np.int64)[keep]
        gj = np.asarray(chunk["gene_j"], np.int64)[keep]
        r_low = np.asarray(chunk["r_low"])[keep]
        r_high = np.asarray(chunk["r_high"])[keep]
        delta = delta[keep]
        present_low = presence(r_low, sig_low[keep], self.rules.corr_threshold)
        present_high = presence(r_high, sig_high[keep], self.rules.corr_threshold)
        codes = classify(r_low, r_high, present_low, present_high)
        ends = np.concatenate([gi, gj])
        self.n_edges += int(gi.size)
        self.degree += np.bincount(ends, minlength=self.n)
        codes2 = np.tile(codes, 2)
        for code in range(len(CLASS_LABELS)):
            self.classes[code] += np.bincount(ends[codes2 == code], minlength=self.n)
        self.n_low += np.bincount(ends[np.tile(present_low, 2)], minlength=self.n)
        self.n_high += np.bincount(ends[np.tile(present_high, 2)], minlength=self.n)
        terms = {
            "conn_low": np.where(present_low, np.abs(r_low.astype(np.float64)), 0.0),
            "conn_high": np.where(present_high, np.abs(r_high.astype(np.float64)), 0.0),
            "conn_diff": np.abs(delta),
            "delta": delta,
        }
        for key, values in terms.items():
            fixed = np.rint(values * FIXED).astype(np.int64)
            np.add.at(self.sums[key], ends, np.tile(fixed, 2))

    def metrics(self) -> dict[str, np.ndarray]:
        """Every tested metric of every gene (float64 (N,)); NaN where a quotient has denominator 0
        (stage 03's rule without ``--zero-undefined``)."""
        deg = self.degree.astype(np.float64)
        c = self.classes.astype(np.float64)
        s = {k: v.astype(np.float64) / FIXED for k, v in self.sums.items()}
        n_low, n_high = self.n_low.astype(np.float64), self.n_high.astype(np.float64)
        rewire = c[DISAPPEAR] + c[NEW] + c[SIGN_CHANGE]
        out = {
            "n_sig_edges_diff": np.full(self.n, float(self.n_edges)),
            "focus_deg_low": n_low, "focus_deg_high": n_high, "L1_n_nodes": deg,
            "L1_n_disappear": c[DISAPPEAR], "L1_n_new": c[NEW], "L1_n_sign_chg": c[SIGN_CHANGE],
            "L1_n_strengthen": c[CLASS_LABELS.index("strengthen")], "L1_n_weaken": c[CLASS_LABELS.index("weaken")],
            "L1_rewire": rewire,
            "L1_frac_disappear": _ratio(c[DISAPPEAR], deg), "L1_frac_new": _ratio(c[NEW], deg),
            "L1_frac_rewire": _ratio(rewire, deg),
            "L1_conn_low": s["conn_low"], "L1_conn_high": s["conn_high"], "L1_conn_diff": s["conn_diff"],
            "L1_conn_mean_low": _ratio(s["conn_low"], n_low), "L1_conn_mean_high": _ratio(s["conn_high"], n_high),
            "L1_mean_abs_dr": _ratio(s["conn_diff"], deg), "L1_mean_delta": _ratio(s["delta"], deg),
            "L1_n_edges_low": n_low.copy(), "L1_n_edges_high": n_high.copy(),
            "HL_conn_L1": _ratio(s["conn_high"], s["conn_low"]),
        }
        return {name: out[name] for name in METRICS}


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den != 0, num / np.where(den != 0, den, 1.0), np.nan)


#: The edge columns the accumulator reads (02a computes no p-values for the null).
NULL_COLUMNS = ("pair_index", "gene_i", "gene_j", "r_low", "r_high", "delta", "sig_low", "sig_high")


def null_metrics(expr: np.ndarray, low: np.ndarray, high: np.ndarray, *, alpha: float, rules: EdgeRules,
                 tile_rows: int, backend: Backend | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Every gene's tested metrics in the differential network of one split (LOW = ``low``,
    HIGH = ``high`` sample indices of ``expr``, N × S); also 02a's counts of that network.
    ``backend``: where 02a's rank products run (default numpy on the host)."""
    acc = HubAccumulator(expr.shape[0], rules)
    attrs = differential_edges(expr[:, low], expr[:, high], alpha, tile_rows=tile_rows, sink=acc.add,
                               columns=NULL_COLUMNS, backend=backend)
    return acc.metrics(), attrs


def observed_metrics(chunks: Iterable[Mapping[str, np.ndarray]], gene: int, n_genes: int,
                     rules: EdgeRules) -> dict[str, float]:
    """The tested metrics of reference gene ``gene`` from its own 02a edges (sig_differential,
    in chunks of edge columns as ``edge_files.iter_base_edges`` yields them), with the rules of
    its null (no bootstrap CI filter)."""
    acc = HubAccumulator(n_genes, rules)
    for chunk in chunks:
        acc.add(chunk)
    return {name: float(values[gene]) for name, values in acc.metrics().items()}
