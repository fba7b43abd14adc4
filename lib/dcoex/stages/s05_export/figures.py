"""Stage 05 figures, each written as PNG and PDF with fixed metadata (no timestamps, no
version strings), so a rerun writes identical bytes. matplotlib's Agg canvas; no pyplot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import h5py
import networkx as nx
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from dcoex.stages.s03_network.classify import CLASS_LABELS
from dcoex.stages.s03_network.io import iter_network_edges
from dcoex.stages.s05_export.permutation import HubPvalues, NullValues

#: Colour of each edge class (qual_score order: unchanged, disappear, new, sign_change, strengthen, weaken).
CLASS_COLOURS = ("#9e9e9e", "#1f77b4", "#d62728", "#9467bd", "#ff7f0e", "#2ca02c")
PNG_METADATA = {"Software": None}
PDF_METADATA = {"Creator": None, "Producer": None, "CreationDate": None}
#: Genes in the hub ranking, hubs in the null figure, partners drawn in the ego figure,
#: points in the r_low/r_high scatter, reference genes in the heatmap.
RANKED_GENES = 30
NULL_PANELS = 6
EGO_PARTNERS = 40
SCATTER_POINTS = 20_000
HEATMAP_REFS = 40
HEATMAP_FOCUS = 60
SIGNIFICANCE = 0.05


def save(fig: Figure, stem: Path) -> list[Path]:
    """Write ``stem``.png and ``stem``.pdf; returns both paths."""
    FigureCanvasAgg(fig)
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    fig.savefig(png, dpi=110, metadata=PNG_METADATA)
    fig.savefig(pdf, metadata=PDF_METADATA)
    return [png, pdf]


def hub_ranking(stem: Path, genes: Sequence[str], values: np.ndarray, metric: str,
                pvalues: HubPvalues | None) -> list[Path]:
    """Horizontal bars of the top genes by ``metric``; significant ones (q, else p < 0.05)
    coloured and starred when stage 08's p-values exist."""
    n = len(genes)
    fig = Figure(figsize=(7, 1.2 + 0.25 * max(n, 1)))
    ax = fig.add_subplot()
    colours = ["#7f7f7f"] * n
    note = "no permutation p-values (stages 07/08 not run)"
    if pvalues is not None:
        use_q = pvalues.has_q
        table = pvalues.qval if use_q else pvalues.pval
        label = "q" if use_q else "p (uncorrected)"
        tested = 0
        for k, g in enumerate(genes):
            v = table.get(g, math.nan)
            if not math.isnan(v):
                tested += 1
                colours[k] = "#d62728" if v < SIGNIFICANCE else "#1f77b4"
                ax.text(float(values[k]) if np.isfinite(values[k]) else 0.0, k,
                        f" {label.split()[0]}={v:.2g}" + (" *" if v < SIGNIFICANCE else ""), va="center", fontsize=7)
        note = f"red: {label} < {SIGNIFICANCE:g} (permutation test); blue: not significant; grey: not tested"
        if tested == 0:
            note = f"p-values present, but none for these genes ({metric})"
    if n == 0:
        note = "no reference gene has edges: no hubs"
    y = np.arange(n)
    ax.barh(y, np.nan_to_num(values, nan=0.0), color=colours)
    ax.set_yticks(y, list(genes), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(metric)
    ax.set_title(f"Top {n} rewiring hubs by {metric}", fontsize=10)
    fig.text(0.01, 0.005, note, fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return save(fig, stem)


def null_distributions(stem: Path, null: NullValues, genes: Sequence[str], observed: Sequence[float],
                       metric: str) -> list[Path]:
    """Per hub, the histogram of the permutation null of ``metric`` and the observed value."""
    n = len(genes)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.3 * cols, 2.6 * rows))
    for k, (gene, obs) in enumerate(zip(genes, observed)):
        ax = fig.add_subplot(rows, cols, k + 1)
        values = null.values(gene, metric)
        values = values[np.isfinite(values)]
        ax.hist(values, bins=30, color="#9e9e9e")
        ax.axvline(obs, color="#d62728", linewidth=2, label="observed")
        share = float(np.mean(values >= obs)) if values.size else math.nan
        ax.set_title(f"{gene}: {share:.0%} of {values.size} null ≥ observed", fontsize=8)
        ax.set_xlabel(metric, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"Observed {metric} (red) against the permutation null", fontsize=10)
    fig.tight_layout()
    return save(fig, stem)


def ego_network(stem: Path, graph: nx.Graph, ego: str) -> list[Path]:
    """The ego network of a hub: the hub and its EGO_PARTNERS partners with the largest |Δ|,
    every edge among them coloured by class, node size by degree in the drawing."""
    direct = sorted(graph[ego].items(), key=lambda kv: (-kv[1].get("abs_delta", 0.0), kv[0]))
    keep = [ego, *[v for v, _ in direct[:EGO_PARTNERS]]]
    sub = graph.subgraph(keep)
    pos = nx.spring_layout(sub, seed=1) if sub.number_of_nodes() > 1 else {ego: np.zeros(2)}
    fig = Figure(figsize=(7, 7))
    ax = fig.add_subplot()
    edges = list(sub.edges(data=True))
    if edges:
        segments = [(pos[a], pos[b]) for a, b, _ in edges]
        colours = [CLASS_COLOURS[int(d.get("qual_score", 0))] for _, _, d in edges]
        widths = [0.5 + 3 * float(d.get("abs_delta", 0.0)) for _, _, d in edges]
        ax.add_collection(LineCollection(segments, colors=colours, linewidths=widths, alpha=0.8, zorder=1))
    nodes = list(sub.nodes)
    xy = np.array([pos[v] for v in nodes])
    size = np.array([30 + 15 * sub.degree(v) for v in nodes], dtype=float)
    ax.scatter(xy[:, 0], xy[:, 1], s=size, c=["#d62728" if v == ego else "#ffffff" for v in nodes],
               edgecolors="#333333", zorder=2)
    for v, (x, y) in zip(nodes, xy):
        ax.text(x, y, f" {v}", fontsize=7 if v != ego else 9, zorder=3)
    shown = sorted({int(d.get("qual_score", 0)) for _, _, d in edges})
    ax.legend(handles=[Line2D([0], [0], color=CLASS_COLOURS[c], lw=2, label=CLASS_LABELS[c]) for c in shown],
              loc="best", fontsize=7, title="edge class", title_fontsize=7)
    total = graph.degree(ego)
    ax.set_title(f"Ego network of {ego} in its own differential network"
                 + (f" ({EGO_PARTNERS} of {total} partners, largest |Δr|)" if total > EGO_PARTNERS else ""), fontsize=9)
    ax.set_axis_off()
    ax.autoscale_view()
    ax.margins(0.15)
    return save(fig, stem)


def delta_distribution(stem: Path, network: h5py.File, gene: str) -> list[Path]:
    """Δr = r_high − r_low over a hub's differential network, by edge class, and r_low
    against r_high (an even subsample of at most SCATTER_POINTS edges)."""
    wanted = {"delta_base": np.float64, "r_low": np.float64, "r_high": np.float64, "qual_score": np.int64}
    parts: dict[str, list[np.ndarray]] = {name: [np.zeros(0, dtype)] for name, dtype in wanted.items()}
    for chunk in iter_network_edges(network):
        for name, dtype in wanted.items():
            parts[name].append(chunk[name].astype(dtype))
    delta, r_low, r_high, code = (np.concatenate(parts[name]) for name in wanted)
    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    bins = np.linspace(-2, 2, 81)
    present = [c for c in range(len(CLASS_LABELS)) if np.any(code == c)]
    if present:
        ax1.hist([delta[code == c] for c in present], bins=bins, stacked=True,
                 color=[CLASS_COLOURS[c] for c in present], label=[CLASS_LABELS[c] for c in present])
        ax1.legend(fontsize=7)
    ax1.set_xlabel("Δr = r_high − r_low")
    ax1.set_ylabel("edges")
    ax1.set_title(f"Δr of the {delta.size} edges of {gene}'s network", fontsize=9)
    pick = np.unique(np.linspace(0, delta.size - 1, min(delta.size, SCATTER_POINTS)).astype(np.int64)) \
        if delta.size else np.zeros(0, dtype=np.int64)
    ax2.scatter(r_low[pick], r_high[pick], s=4, c=[CLASS_COLOURS[c] for c in code[pick]], alpha=0.7)
    ax2.plot([-1, 1], [-1, 1], color="#333333", linewidth=0.8)
    ax2.set_xlim(-1, 1)
    ax2.set_ylim(-1, 1)
    ax2.set_xlabel("r in LOW")
    ax2.set_ylabel("r in HIGH")
    ax2.set_title("r_low against r_high" + (f" ({pick.size} of {delta.size} edges)" if pick.size < delta.size else ""),
                  fontsize=9)
    ax2.legend(handles=[Patch(color=CLASS_COLOURS[c], label=CLASS_LABELS[c]) for c in present], fontsize=7)
    fig.tight_layout()
    return save(fig, stem)


def focus_heatmap(stem: Path, degrees: np.ndarray, ref_names: Sequence[str], focus_names: Sequence[str]
                  ) -> list[Path]:
    """Degree of the first HEATMAP_FOCUS focus genes (columns) in the differential networks of
    the HEATMAP_REFS reference genes (rows) where they are most connected."""
    total_focus = len(focus_names)
    degrees, focus_names = degrees[:, :HEATMAP_FOCUS], list(focus_names)[:HEATMAP_FOCUS]
    order = np.lexsort((np.arange(degrees.shape[0]), -degrees.sum(axis=1)))[:HEATMAP_REFS]
    shown = degrees[order]
    fig = Figure(figsize=(2.5 + 0.3 * max(len(focus_names), 15), 1.5 + 0.22 * max(len(order), 4)))
    ax = fig.add_subplot()
    if shown.size == 0:
        ax.text(0.5, 0.5, "no focus genes (no reference gene has edges)", ha="center", va="center")
        ax.set_axis_off()
        return save(fig, stem)
    # quads, not an image: imshow resamples to the output's pixels in float64 (~100 MB at 60 columns)
    image = ax.pcolormesh(np.arange(shown.shape[1] + 1) - 0.5, np.arange(shown.shape[0] + 1) - 0.5, shown,
                          cmap="viridis")
    ax.invert_yaxis()
    ax.set_xticks(np.arange(len(focus_names)), list(focus_names), rotation=90, fontsize=7)
    ax.set_yticks(np.arange(len(order)), [ref_names[i] for i in order], fontsize=7)
    ax.set_xlabel("focus gene")
    ax.set_ylabel("reference gene (network)")
    ax.set_title("Focus-gene degree in each reference gene's differential network"
                 + (f" (first {HEATMAP_FOCUS} of {total_focus} focus genes)" if total_focus > HEATMAP_FOCUS else ""),
                 fontsize=9)
    fig.colorbar(image, ax=ax, label="degree")
    fig.tight_layout()
    return save(fig, stem)
