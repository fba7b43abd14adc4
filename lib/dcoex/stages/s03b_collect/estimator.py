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
