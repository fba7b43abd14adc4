"""Stage 08 (permutation p-values) peak-RSS estimate, in bytes.

- ``python``: interpreter and imports (as stage 03);
- ``null``: one metric's null at a time, P × N float64, plus its statistic and the
  comparison with the observed values (≈ 3 × 8 bytes per cell, as measured);
- ``base_file``: the largest 02a file's edge columns read for an observed value
  (``n_edges`` sig_differential edges, ~``EDGE_BYTES`` each while classified; unknown before
  02a ran: planned at stage 03's bound);
- ``table``: per reference gene, the observed values, p, q and summaries of every metric.
"""

from __future__ import annotations

from dcoex.edge_files import base_read_bytes
from dcoex.stages.s03_network.estimator import DEFAULT_PLANNING_EDGES
from dcoex.stages.s07_permutation_null.science import METRICS
from memfit.estimate import PYTHON_BASELINE_BYTES, MemoryEstimate
from memfit.units import MiB

#: numpy/scipy/h5py and the 02a read path (edge_files, which loads the numba kernels), measured.
IMPORTS_BYTES = 56 * MiB
NULL_BYTES_PER_CELL = 24
EDGE_BYTES = 200
TABLE_BYTES_PER_GENE_METRIC = 64


def estimate(n_genes: int, n_permutations: int, n_edges: int | None = None, **_: object) -> MemoryEstimate:
    """Predicted peak RSS (bytes) of stage 08 for N genes and P permutations."""
    n, p = int(n_genes), int(n_permutations)
    edges = min(n * (n - 1) // 2, DEFAULT_PLANNING_EDGES) if n_edges is None else int(n_edges)
    components = {
        "python": PYTHON_BASELINE_BYTES,
        "imports": IMPORTS_BYTES,
        "null": p * n * NULL_BYTES_PER_CELL,
        "base_file": edges * EDGE_BYTES,
        "base_ranks": base_read_bytes(n),  # a dense 02a file's ranks (the "ranks" r form): a bound
        "table": n * len(METRICS) * TABLE_BYTES_PER_GENE_METRIC,
    }
    return MemoryEstimate("08", components, {"n_genes": n, "n_permutations": p, "n_edges": edges})


def output_bytes(n_genes: int, *, n_permutations: int) -> int:
    """Bytes of ``permutation_pvalues.h5`` (which keeps the whole null, as stage 07 writes it) and
    ``rewiring_hubs_with_pvals.tsv`` (observed, p and q per tested metric, ~24 characters each)."""
    from dcoex.stages.s07_permutation_null.estimator import output_bytes as null_bytes
    from dcoex.stages.s07_permutation_null.science import METRICS

    return null_bytes(n_genes, n_permutations=n_permutations) + int(n_genes) * len(METRICS) * 3 * 24
