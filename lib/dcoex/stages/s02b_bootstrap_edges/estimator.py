"""Stage 02b (bootstrap of one reference gene's selected edges) peak-RSS estimate, in bytes.

Memory model (N genes, S samples, B replicates, k = k_L + k_H, E selected edges, c edges
per chunk, n_c <= min(N, 2c) genes touched by a chunk):

- ``python``: interpreter + numpy/h5py/click imports (measured; 02b does not import scipy);
- ``expr``: the whole N × S float32 matrix, loaded once per task;
- ``edge_tables``: the base file's edge table (~80 B per edge), the selected copy, the
  row indices and the output columns: ~240 B per selected edge;
- ``indices``: the gene's bootstrap indices and positions (int64) and the resample
  counts: B·(k_rL + k_rH)·16 + B·k·8;
- ``chunk_genes``: per group the chunk's gene values, sort order and rank index (kept,
  ~24 B per gene × group position) and the tie-bound transient of building them (~40 B per
  gene × position of the larger group);
- ``deltas``: the chunk's Δ matrix (c × B float32) and the r blocks of one replicate block;
- ``work``: the larger of the ranking phase (two (block × n_c × k) arrays: half of the
  block budget, RANK_WORK_BYTES) and the correlation phase (one such array, the integer
  ranks u, plus the gathered edge sub-block: 2/3 of GATHER_WORK_BYTES); float32, float64
  when k_r(k_r−1)² >= 2**24;
- ``stats``: the statistics' row-block temporaries (~70 % of STATS_WORK_BYTES at most).

The chunk is at most MAX_CHUNK_DELTA_BYTES of Δ: bigger chunks are no faster.
"""

from __future__ import annotations

from memfit.estimate import MemoryEstimate
from memfit.units import MiB

#: Resident bytes of the stage before data (interpreter, numpy, h5py, click, psutil,
#: threadpoolctl; no scipy), measured on CPython 3.11: 49 MiB + recorder and HDF5 state.
STAGE_BASELINE_BYTES = 56 * MiB
#: Temporaries of the per-edge statistics (dcoex.stages.s02b_bootstrap_edges.science works in row blocks of this).
STATS_WORK_BYTES = 64 * MiB
#: Largest Δ matrix of one edge chunk (bytes): bigger chunks are no faster.
MAX_CHUNK_DELTA_BYTES = 512 * MiB
#: Ranking temporaries of one block of replicates (dcoex.stages.s02b_bootstrap_edges.science sizes blocks to it).
RANK_WORK_BYTES = 96 * MiB
#: Edge-gather temporaries of one sub-block of edges (dcoex.stages.s02b_bootstrap_edges.science sizes them to it).
GATHER_WORK_BYTES = 48 * MiB
#: Sign matrices (g·k × k float32) of one gene block of the ranking product.
SIGN_WORK_BYTES = 64 * MiB
EDGE_TABLE_BYTES = 240
CHUNK_GENE_BYTES_PER_CELL = 24


def max_chunk(n_bootstrap: int) -> int:
    """Most edges per chunk: MAX_CHUNK_DELTA_BYTES of float32 Δ."""
    return max(1, MAX_CHUNK_DELTA_BYTES // (4 * max(int(n_bootstrap), 1)))


def estimate(
    n_genes: int,
    n_samples: int,
    *,
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
    n_c = min(n, 2 * c) if e else 0
    k = int(k_low) + int(k_high)
    k_max = max(int(k_low), int(k_high))
    kr = max(int(kr_low), int(kr_high))
    itemsize = 4 if kr * (kr - 1) ** 2 < 2**24 else 8  # exact integer rank sums (dcoex.ranks)
    per_replicate = 4 * itemsize * n_c * k_max
    block = max(1, min(b, RANK_WORK_BYTES // max(per_replicate, 1)))
    rank_budget = block * per_replicate
    gather = min(GATHER_WORK_BYTES, c * block * k_max * 3 * itemsize) * 2 // 3
    components = {
        "python": STAGE_BASELINE_BYTES,
        "expr": n * int(n_samples) * 4,
        "edge_tables": e * EDGE_TABLE_BYTES,
        "indices": b * (int(kr_low) + int(kr_high)) * 16 + b * k * 8,
        "chunk_genes": n_c * k * CHUNK_GENE_BYTES_PER_CELL + n_c * k_max * 40,
        "deltas": (c * b * 4 + c * block * 12) if e else 0,
        "work": max(rank_budget // 2, rank_budget // 4 + gather) if e else 0,
        "stats": min(STATS_WORK_BYTES, c * b * 16) * 7 // 10 if e else 0,
    }
    if store_replicates:
        components["hdf5_chunks"] = 16 * MiB
    params = {
        "n_genes": n, "n_samples": int(n_samples), "n_bootstrap": b, "k_low": int(k_low),
        "k_high": int(k_high), "kr_low": int(kr_low), "kr_high": int(kr_high),
        "n_edges": e, "edge_chunk": c, "store_replicates": bool(store_replicates),
    }
    return MemoryEstimate("02b", components, params)
