"""Stage 05 tables: one reference gene's network as TSV edge and node tables, and its ego
network (the gene, its partners L1 and the edges among them) as GraphML.

Edges are read in chunks of ``EDGE_CHUNK`` and written as they are read; only the ego
network is held in memory (as a networkx graph). GraphML attributes are plain Python
str / int / float / bool (GraphML types string / long / double / boolean); a float that is
NaN is left out for that element (GraphML has no missing value).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import h5py
import networkx as nx
import numpy as np
from networkx.readwrite.graphml import GraphMLWriter

from dcoex.stages.s03_network.io import iter_network_edges
from dcoex.stages.s04_focus_topology.science import METRICS, incident_metrics

EDGE_FIELDS = ("gene_i", "gene_j", "delta_base", "r_low", "r_high", "ci_low", "ci_high", "qval_diff",
               "present_low", "present_high", "qual_score", "qual_label")
DIFF_COLUMNS = ("from", "to", "delta", "r_low", "r_high", "abs_delta", "qual_label", "ci_low", "ci_high",
                "qval_diff", "present_low", "present_high")
GROUP_COLUMNS = ("from", "to", "r", "abs_r")
NODE_COLUMNS = ("gene_id", "gene_idx", "degree_low", "degree_high", "degree_diff", "n_disappear", "n_new",
                "n_sign_change", "rewiring_score", "sum_abs_delta", "n_strengthen", "n_weaken")
#: nodes.tsv column → stage 04 metric.
_NODE_METRIC = {"degree_low": "degree_low", "degree_high": "degree_high", "degree_diff": "degree_diff",
                "n_disappear": "n_disappear", "n_new": "n_new", "n_sign_change": "n_sign_change",
                "rewiring_score": "n_rewire", "sum_abs_delta": "sum_abs_delta", "n_strengthen": "n_strengthen",
                "n_weaken": "n_weaken"}
#: Edges formatted at a time (each becomes about a dozen Python objects while it is written).
EXPORT_CHUNK = 1 << 15
FILES = ("edges_diff.tsv", "edges_low.tsv", "edges_high.tsv", "nodes.tsv", "ego.graphml")


def _f4(v: float) -> str:
    return f"{v:.4f}"


def _chunks(network: h5py.File):
    """The network's edges (``EDGE_FIELDS``) in chunks of at most EXPORT_CHUNK candidate edges."""
    for chunk in iter_network_edges(network, chunk_edges=EXPORT_CHUNK):
        yield {k: chunk[k] for k in EDGE_FIELDS}


def write_edge_tables(network: h5py.File, folder: Path, names: Sequence[str]) -> None:
    """edges_diff.tsv (all of E), edges_low.tsv / edges_high.tsv (the edges present in LOW /
    HIGH, r of that group), in the file's edge order."""
    with (open(folder / "edges_diff.tsv", "w") as diff, open(folder / "edges_low.tsv", "w") as low,
          open(folder / "edges_high.tsv", "w") as high):
        diff.write("\t".join(DIFF_COLUMNS) + "\n")
        low.write("\t".join(GROUP_COLUMNS) + "\n")
        high.write("\t".join(GROUP_COLUMNS) + "\n")
        for c in _chunks(network):
            a = [names[i] for i in c["gene_i"].tolist()]
            b = [names[j] for j in c["gene_j"].tolist()]
            rl, rh, d = c["r_low"].tolist(), c["r_high"].tolist(), c["delta_base"].tolist()
            pl, ph = c["present_low"].tolist(), c["present_high"].tolist()
            rows = zip(a, b, d, rl, rh, c["qual_label"].tolist(), c["ci_low"].tolist(), c["ci_high"].tolist(),
                       c["qval_diff"].tolist(), pl, ph)
            diff.writelines(
                f"{x}\t{y}\t{_f4(dv)}\t{_f4(lv)}\t{_f4(hv)}\t{_f4(abs(dv))}\t{lab}\t{_f4(cl)}\t{_f4(ch)}\t{q:.4g}"
                f"\t{int(p)}\t{int(h)}\n" for x, y, dv, lv, hv, lab, cl, ch, q, p, h in rows)
            for out, r, present in ((low, rl, pl), (high, rh, ph)):
                out.writelines(f"{x}\t{y}\t{_f4(v)}\t{_f4(abs(v))}\n"
                               for x, y, v, keep in zip(a, b, r, present) if keep)


def node_table(network: h5py.File, n_genes: int) -> np.ndarray:
    """(N, len(METRICS)) per-gene metrics of this network (stage 04's definitions)."""
    return incident_metrics(network, np.arange(n_genes, dtype=np.int64), n_genes)


def write_nodes(path: Path, table: np.ndarray, names: Sequence[str]) -> None:
    """nodes.tsv: the genes with at least one edge, ascending index."""
    cols = [METRICS.index(_NODE_METRIC[c]) for c in NODE_COLUMNS[2:]]
    with open(path, "w") as out:
        out.write("\t".join(NODE_COLUMNS) + "\n")
        for g in np.flatnonzero(table[:, METRICS.index("degree_diff")] > 0).tolist():
            cells = [str(int(table[g, k])) if NODE_COLUMNS[2 + i] != "sum_abs_delta" else _f4(table[g, k])
                     for i, k in enumerate(cols)]
            out.write("\t".join((names[g], str(g), *cells)) + "\n")


def _finite(attrs: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in attrs.items() if not (isinstance(v, float) and math.isnan(v))}


def ego_graph(network: h5py.File, names: Sequence[str], table: np.ndarray) -> nx.Graph:
    """The ego network of the file's reference gene: the gene, its partners (L1) and every edge
    of E among them, with GraphML-legal attributes (docs/stage05.md)."""
    ego = int(network["meta"].attrs["gene_index_used"])
    partners = network["focus_gene/direct_partners"][()].astype(np.int64)
    members = np.zeros(len(names), dtype=bool)
    members[ego] = True
    members[partners] = True
    graph = nx.Graph(ego=names[ego])
    col = {m: k for k, m in enumerate(METRICS)}
    for v in [ego, *sorted(int(p) for p in partners)]:
        graph.add_node(names[v], label=names[v], gene_idx=int(v), is_ego=bool(v == ego),
                       layer="ego" if v == ego else "L1",
                       degree_low=int(table[v, col["degree_low"]]), degree_high=int(table[v, col["degree_high"]]),
                       degree_diff=int(table[v, col["degree_diff"]]), n_rewire=int(table[v, col["n_rewire"]]),
                       sum_abs_delta=float(table[v, col["sum_abs_delta"]]))
    for c in _chunks(network):
        keep = np.flatnonzero(members[c["gene_i"]] & members[c["gene_j"]])
        for k in keep.tolist():
            delta = float(c["delta_base"][k])
            graph.add_edge(names[int(c["gene_i"][k])], names[int(c["gene_j"][k])], **_finite({
                "delta": delta, "abs_delta": abs(delta), "r_low": float(c["r_low"][k]),
                "r_high": float(c["r_high"][k]), "qual_label": str(c["qual_label"][k]),
                "qual_score": int(c["qual_score"][k]), "present_low": bool(c["present_low"][k]),
                "present_high": bool(c["present_high"][k]), "ci_low": float(c["ci_low"][k]),
                "ci_high": float(c["ci_high"][k]), "qval_diff": float(c["qval_diff"][k]),
            }))
    return graph


class _GraphMLWriter(GraphMLWriter):
    """networkx's writer with XML Schema boolean literals (``true``/``false``, not ``True``)."""

    def add_data(self, name, element_type, value, scope="all", default=None):  # noqa: ANN001, ANN201
        if element_type is bool:  # networkx passes str(value): "True" / "False"
            value = str(value).lower()
        return super().add_data(name, element_type, value, scope, default)


def write_graphml(graph: nx.Graph, path: Path) -> None:
    """``graph`` as GraphML (UTF-8), readable by networkx, igraph and Cytoscape."""
    writer = _GraphMLWriter(encoding="utf-8", prettyprint=True, named_key_ids=True)
    writer.add_graph_element(graph)
    with open(path, "wb") as handle:
        writer.dump(handle)


def export_gene(network_path: Path, folder: Path, names: Sequence[str]) -> nx.Graph:
    """Write the FILES of one reference gene's network into ``folder``; returns its ego graph."""
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(network_path, "r") as network:
        write_edge_tables(network, folder, names)
        table = node_table(network, len(names))
        write_nodes(folder / "nodes.tsv", table, names)
        graph = ego_graph(network, names, table)
    write_graphml(graph, folder / "ego.graphml")
    return graph
