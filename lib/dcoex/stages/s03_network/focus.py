"""Focus-gene (reference gene) L1/L2 neighbourhood metrics in the differential network.

L1 = partners of the focus f in E; L2 = partners of L1 outside L1 ∪ {f}. Edge sets:
direct D = f–L1 edges, W = L1↔L1 edges, X = L1→L2 edges, outer = W ∪ X, full = D ∪ outer.
Definitions and the NaN rule are written out in docs/stage03.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from dcoex.stages.s03_network.classify import CLASS_LABELS

#: Metrics written per reference gene, in the order of rewiring_hubs.tsv (after
#: gene_idx, gene_id, n_sig_edges_diff).
METRIC_NAMES: tuple[str, ...] = (
    "focus_deg_low", "focus_deg_high",
    "L1_n_nodes", "L1_n_disappear", "L1_n_new", "L1_n_sign_chg", "L1_n_strengthen", "L1_n_weaken",
    "L1_rewire", "L1_frac_disappear", "L1_frac_new", "L1_frac_rewire",
    "L1_conn_low", "L1_conn_high", "L1_conn_diff", "L1_conn_mean_low", "L1_conn_mean_high",
    "L1_mean_abs_dr", "L1_mean_delta", "L1_clique_density", "L1_n_edges_low", "L1_n_edges_high",
    "L2_n_nodes", "L2_n_edges", "L2_n_disappear", "L2_n_new", "L2_n_sign_chg", "L2_n_strengthen",
    "L2_n_weaken", "L2_rewire", "L2_conn_low", "L2_conn_high", "L2_conn_diff",
    "L2_conn_mean_low", "L2_conn_mean_high", "L2_mean_abs_dr", "L2_mean_delta",
    "L2_n_edges_low", "L2_n_edges_high",
    "full_n_edges", "full_rewire", "full_conn_low", "full_conn_high", "full_conn_diff",
    "full_mean_abs_dr", "full_mean_delta", "n_l1_to_l1_edges", "n_l1_to_l2_edges",
    "L2L1_deg", "L2L1_rewire", "L2L1_conn", "HL_conn_L1", "HL_conn_L2",
)

#: Metrics that are counts (integers); all others are floats.
INTEGER_METRICS: frozenset[str] = frozenset(
    name for name in METRIC_NAMES
    if name.startswith(("focus_deg_", "n_l1_")) or "_n_" in name or name in ("L1_rewire", "L2_rewire", "full_rewire")
)

_SHORT = {"sign_change": "sign_chg"}


@dataclass(frozen=True)
class Neighbourhood:
    """L1 and L2 node sets (sorted int32) and the edge masks D, W, X over E."""

    l1: np.ndarray
    l2: np.ndarray
    direct: np.ndarray
    l1_l1: np.ndarray
    l1_l2: np.ndarray


def neighbourhood(gene_i: np.ndarray, gene_j: np.ndarray, focus: int, n_genes: int) -> Neighbourhood:
    """The focus gene's L1/L2 node sets and edge masks, from the edge list of E."""
    gene_i = np.asarray(gene_i, dtype=np.int64)
    gene_j = np.asarray(gene_j, dtype=np.int64)
    direct = (gene_i == focus) | (gene_j == focus)
    in_l1 = np.zeros(n_genes, dtype=bool)
    in_l1[gene_i[direct]] = True
    in_l1[gene_j[direct]] = True
    in_l1[focus] = False
    a, b = in_l1[gene_i], in_l1[gene_j]
    l1_l1 = a & b
    is_focus_i, is_focus_j = gene_i == focus, gene_j == focus
    l1_l2 = (a & ~b & ~is_focus_j) | (b & ~a & ~is_focus_i)
    other = np.where(a, gene_j, gene_i)[l1_l2]
    in_l2 = np.zeros(n_genes, dtype=bool)
    in_l2[other] = True
    return Neighbourhood(
        np.flatnonzero(in_l1).astype(np.int32), np.flatnonzero(in_l2).astype(np.int32),
        direct, l1_l1, l1_l2,
    )


def _ratio(num: float, den: float, undefined: float) -> float:
    return float(num) / float(den) if den != 0 else undefined


def edge_set_stats(
    mask: np.ndarray,
    codes: np.ndarray,
    *,
    present_low: np.ndarray,
    present_high: np.ndarray,
    r_low: np.ndarray,
    r_high: np.ndarray,
    delta: np.ndarray,
    undefined: float,
) -> dict[str, float | int]:
    """Counts per class, presence counts, connectivity sums and means over the edges in ``mask``."""
    counts = np.bincount(codes[mask].astype(np.int64), minlength=len(CLASS_LABELS))
    stats: dict[str, float | int] = {"n_edges": int(mask.sum())}
    for code, label in enumerate(CLASS_LABELS):
        stats[f"n_{_SHORT.get(label, label)}"] = int(counts[code])
    stats["rewire"] = int(counts[1] + counts[2] + counts[3])
    low, high = mask & present_low, mask & present_high
    stats["n_edges_low"] = int(low.sum())
    stats["n_edges_high"] = int(high.sum())
    abs_delta = np.abs(delta[mask].astype(np.float64))
    stats["conn_low"] = float(np.abs(r_low[low].astype(np.float64)).sum())
    stats["conn_high"] = float(np.abs(r_high[high].astype(np.float64)).sum())
    stats["conn_diff"] = float(abs_delta.sum())
    stats["conn_mean_low"] = _ratio(stats["conn_low"], stats["n_edges_low"], undefined)
    stats["conn_mean_high"] = _ratio(stats["conn_high"], stats["n_edges_high"], undefined)
    stats["mean_abs_dr"] = _ratio(stats["conn_diff"], stats["n_edges"], undefined)
    stats["mean_delta"] = _ratio(delta[mask].astype(np.float64).sum(), stats["n_edges"], undefined)
    return stats


def focus_metrics(
    hood: Neighbourhood,
    codes: np.ndarray,
    *,
    present_low: np.ndarray,
    present_high: np.ndarray,
    r_low: np.ndarray,
    r_high: np.ndarray,
    delta: np.ndarray,
    undefined: float = float("nan"),
) -> tuple[dict[str, float | int], dict[str, dict[str, float | int]]]:
    """(metrics in METRIC_NAMES order, per-edge-set stats {"direct", "outer", "full"})."""
    stats_of = partial(edge_set_stats, codes=codes, present_low=present_low, present_high=present_high, r_low=r_low,
                       r_high=r_high, delta=delta, undefined=undefined)
    outer = hood.l1_l1 | hood.l1_l2
    d = stats_of(hood.direct)
    o = stats_of(outer)
    f = stats_of(hood.direct | outer)
    n1, n2 = int(hood.l1.size), int(hood.l2.size)
    n_w, n_x = int(hood.l1_l1.sum()), int(hood.l1_l2.sum())
    m: dict[str, float | int] = {"focus_deg_low": d["n_edges_low"], "focus_deg_high": d["n_edges_high"], "L1_n_nodes": n1}
    for level, s in (("L1", d), ("L2", o)):
        if level == "L2":
            m["L2_n_nodes"] = n2
            m["L2_n_edges"] = s["n_edges"]
        for cls in ("disappear", "new", "sign_chg", "strengthen", "weaken"):
            m[f"{level}_n_{cls}"] = s[f"n_{cls}"]
        m[f"{level}_rewire"] = s["rewire"]
        if level == "L1":
            m["L1_frac_disappear"] = _ratio(s["n_disappear"], n1, undefined)
            m["L1_frac_new"] = _ratio(s["n_new"], n1, undefined)
            m["L1_frac_rewire"] = _ratio(s["rewire"], n1, undefined)
        for key in ("conn_low", "conn_high", "conn_diff", "conn_mean_low", "conn_mean_high", "mean_abs_dr", "mean_delta"):
            m[f"{level}_{key}"] = s[key]
        if level == "L1":
            m["L1_clique_density"] = _ratio(n_w, n1 * (n1 - 1) / 2, undefined)
        m[f"{level}_n_edges_low"] = s["n_edges_low"]
        m[f"{level}_n_edges_high"] = s["n_edges_high"]
    m["full_n_edges"] = f["n_edges"]
    m["full_rewire"] = f["rewire"]
    for key in ("conn_low", "conn_high", "conn_diff"):
        m[f"full_{key}"] = f[key]
    m["full_mean_abs_dr"] = f["mean_abs_dr"]
    m["full_mean_delta"] = f["mean_delta"]
    m["n_l1_to_l1_edges"] = n_w
    m["n_l1_to_l2_edges"] = n_x
    m["L2L1_deg"] = _ratio(n2, n1, undefined)
    m["L2L1_rewire"] = _ratio(o["rewire"], d["rewire"], undefined)
    m["L2L1_conn"] = _ratio(o["conn_diff"], d["conn_diff"], undefined)
    m["HL_conn_L1"] = _ratio(d["conn_high"], d["conn_low"], undefined)
    m["HL_conn_L2"] = _ratio(o["conn_high"], o["conn_low"], undefined)
    ordered = {name: m[name] for name in METRIC_NAMES}
    return ordered, {"direct": d, "outer": o, "full": f}
