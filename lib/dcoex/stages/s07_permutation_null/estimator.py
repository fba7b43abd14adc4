"""Stage 07 (permutation null, one array task) peak-RSS estimate, in bytes.

One permutation is one run of the 02a kernel on a random split, streamed to the accumulator
(no edge list), so the model is stage 02a's (``s02a_base_correlations.estimator``: fixed
budgets, nothing proportional to the edges) plus:

- ``groups``: the two N × k float32 copies of the split's columns (the 02a stage makes the
  same copies);
- ``accumulator``: the per-gene sums (≈ 16 int64 arrays of N) and one chunk of edges being
  classified (02a's chunk and emission slice) (~``CHUNK_EDGE_BYTES`` per edge);
- ``part_values``: the task's null, perms_per_task × N × the tested metrics, float64, twice
  (the values and the HDF5 write of one metric).
"""

from __future__ import annotations

from dcoex.stages.s02a_base_correlations.estimator import CHUNK_EDGES as CHUNK_EDGES_02A
from dcoex.stages.s02a_base_correlations.estimator import EMIT_CELLS
from dcoex.stages.s02a_base_correlations.estimator import estimate as estimate_02a
from dcoex.stages.s07_permutation_null.science import METRICS
from memfit.estimate import MemoryEstimate

ACCUMULATOR_ARRAYS = 16
CHUNK_EDGE_BYTES = 160


def estimate(n_genes: int, n_samples: int, *, k_low: int, k_high: int, fdr_alpha: float = 0.05,
             tile_rows: int = 512, perms_per_task: int = 50) -> MemoryEstimate:
    """Predicted peak RSS (bytes) of one stage-07 task of ``perms_per_task`` permutations."""
    n = int(n_genes)
    base = estimate_02a(n, n_samples, k_low=k_low, k_high=k_high, fdr_alpha=fdr_alpha, tile_rows=tile_rows)
    m = n * (n - 1) // 2
    components = dict(base.components)
    components["groups"] = n * (int(k_low) + int(k_high)) * 4
    components["accumulator"] = ACCUMULATOR_ARRAYS * n * 8 + min(CHUNK_EDGES_02A + EMIT_CELLS, m) * CHUNK_EDGE_BYTES
    components["part_values"] = int(perms_per_task) * n * len(METRICS) * 8 + int(perms_per_task) * n * 8
    params = dict(base.params, perms_per_task=int(perms_per_task))
    return MemoryEstimate("07", components, params)


def output_bytes(n_genes: int, *, n_permutations: int) -> int:
    """Bytes of all part files of the null (upper bound: float64 values uncompressed, per tested metric)."""
    from dcoex.stages.s07_permutation_null.science import METRICS

    return int(n_permutations) * int(n_genes) * len(METRICS) * 8 + 64 * 1024
