"""Memory estimator of stage 05 (export tables, ego networks and figures).

Peak RSS = interpreter and imports (matplotlib, networkx) + per gene of the run (names, one
network's node table) + one chunk of edges being formatted + the largest exported network's
Δ, r and class columns (the Δr figure) + the largest ego network as a networkx graph + the
figures being drawn.
"""

from __future__ import annotations

from dcoex.edge_files import base_read_bytes
from memfit.estimate import PYTHON_BASELINE_BYTES, MemoryEstimate
from memfit.units import MiB

IMPORTS_BYTES = 40 * MiB
FIGURES_BYTES = 30 * MiB
#: Per focus-gene column of the heatmap (at most HEATMAP_FOCUS are drawn): measured 14 MiB for 50.
BYTES_PER_FOCUS_COLUMN = 300 * 1024
BYTES_PER_GENE = 600
#: Python objects of one formatted edge (names, floats, the text line).
BYTES_PER_CHUNK_EDGE = 450
#: Columns of the Δr figure and their temporaries, per edge of the largest network.
BYTES_PER_EDGE = 80
#: A networkx edge with a dozen attributes, both adjacency entries included.
BYTES_PER_EGO_EDGE = 1_600
#: Ego-network edges planned when the summary is not yet known.
PLANNING_EGO_EDGES = 50_000


def estimate(n_genes: int, n_edges: int | None = None, n_ego_edges: int | None = None, n_focus: int = 10,
             **_: object) -> MemoryEstimate:
    """Predicted peak RSS (bytes) of stage 05: ``n_edges`` of the largest exported network,
    ``n_ego_edges`` of the largest ego network (|L1| + |L1–L1 edges|), ``n_focus`` focus genes
    of stage 04 (the heatmap's columns)."""
    from dcoex.stages.s03_network.estimator import DEFAULT_PLANNING_EDGES
    from dcoex.stages.s05_export.figures import HEATMAP_FOCUS
    from dcoex.stages.s05_export.tables import EXPORT_CHUNK

    pairs = int(n_genes) * (int(n_genes) - 1) // 2
    edges = min(pairs, DEFAULT_PLANNING_EDGES) if n_edges is None else int(n_edges)
    ego = min(pairs, PLANNING_EGO_EDGES) if n_ego_edges is None else int(n_ego_edges)
    components = {
        "python": PYTHON_BASELINE_BYTES,
        "imports": IMPORTS_BYTES,
        "figures": FIGURES_BYTES + BYTES_PER_FOCUS_COLUMN * min(int(n_focus), HEATMAP_FOCUS),
        "genes": BYTES_PER_GENE * int(n_genes),
        "edge_chunk": BYTES_PER_CHUNK_EDGE * min(edges, EXPORT_CHUNK),
        "base_ranks": base_read_bytes(n_genes),  # a dense 02a file's ranks (the "ranks" r form): a bound
        "network_columns": BYTES_PER_EDGE * edges,
        "ego_graph": BYTES_PER_EGO_EDGE * ego,
    }
    return MemoryEstimate("05", components, {"n_genes": int(n_genes), "n_edges": edges, "n_ego_edges": ego,
                                             "n_focus": int(n_focus)})
#: Output size (output_bytes) per exported gene: its four tables and GraphML at the
#: expected size of a hub's network (an assumption, like the disk plan's density: docs/stage05.md),
#: and the figures (PNG + PDF, measured 1–3 MB in all).
EXPORT_BYTES_PER_GENE = 8 * MiB
EXPORT_FIGURES_BYTES = 8 * MiB


def output_bytes(n_export_genes: int) -> int:
    """Expected bytes of ``export/`` for ``n_export_genes`` exported genes (hubs + named)."""
    return int(n_export_genes) * EXPORT_BYTES_PER_GENE + EXPORT_FIGURES_BYTES
