"""Reconstruct the differential network of one reference gene from its inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dcoex.stages.params import CORR_THRESHOLD, MIN_EFFECT, NO_CI_FILTER
from dcoex.stages.s03_network.classify import CLASS_LABELS, class_counts, classify, presence, select_edges
from dcoex.stages.s03_network.focus import focus_metrics, neighbourhood
from dcoex.stages.s03_network.io import NETWORK_FORMAT, GeneInputs
from dcoex.stages.s03_network.topology import global_topology


@dataclass(frozen=True)
class NetworkOptions:
    """Stage 03 options (docs/design.md §4.7)."""

    min_effect: float = MIN_EFFECT.default
    corr_threshold: float = CORR_THRESHOLD.default
    ci_filter: bool = not NO_CI_FILTER.default
    zero_undefined: bool = False

    @property
    def undefined(self) -> float:
        """The value written for undefined quotients and statistics over empty sets."""
        return 0.0 if self.zero_undefined else float("nan")

    def meta(self) -> dict[str, Any]:
        return {
            "min_effect": float(self.min_effect),
            "corr_threshold": float(self.corr_threshold),
            "require_ci_exclude_zero": bool(self.ci_filter),
            "zero_undefined": bool(self.zero_undefined),
        }


@dataclass
class Network:
    """Everything written to ``networks/{gi}_{gene}.h5`` (see io.write_network)."""

    meta: dict[str, Any]
    #: every network edge column (io.NETWORK_EDGE_DTYPES), in memory
    edges: dict[str, np.ndarray]
    #: what the file stores of them: ``selected`` (bool over the candidate rows E0) and
    #: ``qual_score`` (int8 per network edge); the rest is read from 02a/02b (io.iter_network_edges)
    stored: dict[str, np.ndarray]
    qual_summary: dict[str, int]
    topology: dict[str, tuple[dict[str, Any], np.ndarray]]
    focus: dict[str, Any]


def reconstruct(inputs: GeneInputs, options: NetworkOptions) -> Network:
    """Filter E0 to E, classify, compute topology and the focus-gene metrics."""
    e0 = inputs.edges
    n = inputs.n_genes
    und = options.undefined
    keep = select_edges(e0["delta"], e0["ci_low"], e0["ci_high"], options.min_effect, options.ci_filter)
    # the reader usually applied the same filter: then the columns are used as read (no copy)
    e = e0 if keep.all() else {k: v[keep] for k, v in e0.items()}
    present_low = presence(e["r_low"], e["sig_low"], options.corr_threshold)
    present_high = presence(e["r_high"], e["sig_high"], options.corr_threshold)
    codes = classify(e["r_low"], e["r_high"], present_low, present_high)
    gi, gj = e["gene_i"].astype(np.int32, copy=False), e["gene_j"].astype(np.int32, copy=False)
    edges = {
        "pair_index": e["pair_index"].astype(np.int64, copy=False),
        "gene_i": gi,
        "gene_j": gj,
        "delta_base": e["delta"].astype(np.float32, copy=False),
        "delta_boot_mean": e["delta_mean"].astype(np.float32, copy=False),
        "delta_boot_std": e["delta_std"].astype(np.float32, copy=False),
        "ci_low": e["ci_low"].astype(np.float32, copy=False),
        "ci_high": e["ci_high"].astype(np.float32, copy=False),
        "bias": e["bias"].astype(np.float32, copy=False),
        "r_low": e["r_low"].astype(np.float32, copy=False),
        "r_high": e["r_high"].astype(np.float32, copy=False),
        "pval_diff": e["p_diff"].astype(np.float64, copy=False),
        "qval_diff": e["q_diff"].astype(np.float64, copy=False),
        "pval_boot": e["bootstrap_pval"].astype(np.float64, copy=False),
        "sig_low": e["sig_low"].astype(bool, copy=False),
        "sig_high": e["sig_high"].astype(bool, copy=False),
        "present_low": present_low,
        "present_high": present_high,
        "qual_score": codes,
        "qual_label": np.asarray(CLASS_LABELS, dtype=object)[codes],
    }
    selected = np.ones(inputs.n_candidates, dtype=bool) if inputs.selected is None else inputs.selected.copy()
    rows = np.flatnonzero(selected)
    selected[rows[~keep]] = False
    stored = {"selected": selected, "qual_score": codes}
    counts = class_counts(codes)
    topology = {
        "low": global_topology(gi[present_low], gj[present_low], n, und),
        "high": global_topology(gi[present_high], gj[present_high], n, und),
        "diff": global_topology(gi, gj, n, und),
    }
    hood = neighbourhood(gi, gj, inputs.gene_index, n)
    metrics, stats = focus_metrics(hood, codes, present_low=present_low, present_high=present_high, r_low=e["r_low"],
                                   r_high=e["r_high"], delta=e["delta"], undefined=und)
    focus = {
        "attrs": {
            "gene_index": inputs.gene_index,
            "n_direct_partners": int(hood.l1.size),
            "n_indirect_partners": int(hood.l2.size),
        },
        "direct_partners": hood.l1,
        "indirect_partners": hood.l2,
        "direct_stats": stats["direct"],
        "two_layer_stats": stats["outer"],
        "full_stats": stats["full"],
        "metrics": metrics,
    }
    abs_delta = np.abs(e["delta"].astype(np.float64, copy=False))
    meta: dict[str, Any] = {
        "format": NETWORK_FORMAT,
        "n_genes": n,
        "gene_index_used": inputs.gene_index,
        "gene_name": inputs.gene_name,
        "focus_gene": inputs.gene_index,
        "edge_selection": "",
        "ci_alpha": float("nan"),
        "n_bootstrap": -1,
        **inputs.upstream,
        **options.meta(),
        "n_candidate_edges": inputs.n_candidates,
        "n_significant": int(keep.sum()),
        **counts,
        "mean_abs_delta": float(abs_delta.mean()) if abs_delta.size else und,
        "max_abs_delta": float(abs_delta.max()) if abs_delta.size else und,
    }
    return Network(meta, edges, stored, counts, topology, focus)
