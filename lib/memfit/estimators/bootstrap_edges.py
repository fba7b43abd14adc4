"""Stage 02b (bootstrap of one reference gene's selected edges) peak-RSS estimate, in bytes.

Memory model (N genes, S samples, B replicates, k group size, E edges selected, c edges
per chunk, n_c genes touched by a chunk, at most min(N, 2c)):

- ``python``: interpreter + numpy/scipy/h5py/click imports (measured);
- ``expr``: the whole N × S float32 matrix, loaded once per task;
- ``base_edges``: the base file's edge table read in full (~60 B per edge: 14 columns)
  plus the selected edges' output columns (~60 B per edge);
- ``indices``: the gene's bootstrap indices (int64) and resample supports/counts:
  B·(k_rL + k_rH)·8 + B·(k_L + k_H)·(8 + 8 + 8) (counts, order, weights);
- ``dense_ranks``: n_c × (k_L + k_H) int32 dense ranks plus the ranking transient;
- ``deltas``: the chunk's Δ matrix (c × B float32) and the statistics' temporaries
  (masked copy, centred copy, comparison masks): c·B·(4 + 4 + 4 + 3);
- ``rank_work`` / ``gather_work``: the replicate-block and edge-sub-block temporaries of
  dcoex.bootstrap_edges, capped at RANK_WORK_BYTES / GATHER_WORK_BYTES, plus the unit
  rank values y of a block (both sides) and the block's r columns.
"""

from __future__ import annotations

from memfit.estimate import MemoryEstimate
from memfit.units import MiB

STAGE_BASELINE_BYTES = 105 * MiB
#: Ranking temporaries of one block of replicates (dcoex.bootstrap_edges sizes blocks to it).
RANK_WORK_BYTES = 96 * MiB
#: Edge-gather temporaries of one sub-block of edges (dcoex.bootstrap_edges sizes them to it).
GATHER_WORK_BYTES = 48 * MiB
DELTA_BYTES_PER_CELL = 15
EDGE_BYTES = 120


def estimate(
    n_genes: int,
    n_samples: int,
    n_bootstrap: int,
    k_low: int,
    k_high: int,
    kr_low: int,
    kr_high: int,
    n_edges: int,
    edge_chunk: int,
    store_replicates: bool = False,
) -> MemoryEstimate:
    """Predicted peak RSS (bytes) of stage 02b for one gene at ``edge_chunk`` edges per chunk."""
    n, b = int(n_genes), int(n_bootstrap)
    e = max(0, int(n_edges))
    c = max(1, min(int(edge_chunk), max(e, 1)))
    n_c = min(n, 2 * c)
    k = int(k_low) + int(k_high)
    k_max = max(int(k_low), int(k_high))
    m = min(k_max, max(int(kr_low), int(kr_high)))
    per_replicate = n_c * (16 * k_max + 40 * m)
    b_block = max(1, min(b, RANK_WORK_BYTES // max(per_replicate, 1)))
    components = {
        "python": STAGE_BASELINE_BYTES,
        "expr": n * int(n_samples) * 4,
        "base_edges": e * EDGE_BYTES,
        "indices": b * (int(kr_low) + int(kr_high)) * 8 + b * k * 24,
        "dense_ranks": n_c * k * 4 + n_c * max(k_low, k_high) * 45,
        "deltas": c * b * DELTA_BYTES_PER_CELL,
        "rank_work": min(RANK_WORK_BYTES, b * n_c * (16 * k_max + 40 * m)) + 2 * n_c * b_block * m * 4,
        "gather_work": min(GATHER_WORK_BYTES, c * b_block * m * 12) + c * b_block * 8,
    }
    if store_replicates:
        components["hdf5_chunks"] = 16 * MiB
    params = {
        "n_genes": n, "n_samples": int(n_samples), "n_bootstrap": b, "k_low": int(k_low),
        "k_high": int(k_high), "kr_low": int(kr_low), "kr_high": int(kr_high),
        "n_edges": e, "edge_chunk": c, "store_replicates": bool(store_replicates),
    }
    return MemoryEstimate("02b", components, params)
