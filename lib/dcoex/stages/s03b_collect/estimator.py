"""Memory estimator of stage 03b (collect the per-gene network files).

Peak RSS = interpreter and imports + per file (its meta and metric values held as Python
objects until all files are checked) + per reference gene (the value columns, names and
the TSV text). Calibrated with bench/stage03.py: 8,763 files measured 176 MiB.
"""

from __future__ import annotations

from memfit.estimate import PYTHON_BASELINE_BYTES, MemoryEstimate
from memfit.units import MiB

IMPORTS_BYTES = 4 * MiB
BYTES_PER_FILE = 11_000
BYTES_PER_GENE = 1_500


def estimate(n_genes: int, n_files: int | None = None, **_: object) -> MemoryEstimate:
    """Predicted peak RSS (bytes) of stage 03b over ``n_files`` network files (default N)."""
    files = int(n_genes) if n_files is None else int(n_files)
    components = {
        "python": PYTHON_BASELINE_BYTES,
        "imports": IMPORTS_BYTES,
        "file_summaries": BYTES_PER_FILE * files,
        "table": BYTES_PER_GENE * int(n_genes),
    }
    return MemoryEstimate("03b", components, {"n_genes": int(n_genes), "n_files": files})


#: Output bytes: per row (60 float64/int64 columns and the TSV line), the gene names (~29 B per
#: gene), metadata (16 genes: 46 KB in all).
OUTPUT_BYTES_PER_ROW = 60 * 8 + 600
OUTPUT_BYTES_PER_GENE = 32
OUTPUT_FIXED_BYTES = 48 * 1024


def output_bytes(n_genes: int, n_rows: int | None = None) -> int:
    """Predicted size (bytes) of ``differential_network_summary.h5`` and ``rewiring_hubs.tsv``
    for ``n_rows`` reference genes (default N)."""
    rows = int(n_genes) if n_rows is None else int(n_rows)
    return rows * OUTPUT_BYTES_PER_ROW + int(n_genes) * OUTPUT_BYTES_PER_GENE + OUTPUT_FIXED_BYTES
