"""Stage 00 (TSV -> expression.h5) peak-RSS estimate: a pure function of the shape.

Memory model (bytes; r = block rows, S = samples, N = genes):

    python + hdf5                 (fixed, measured)
  + text_block   = r·S·92         (one block of cells as Python ``str`` in lists)
  + float_block  = r·S·8          (the block as float32, and its finite mask)
  + gene_names   = N·800          (names and their first line, for the duplicate check,
                                   plus the growth of HDF5's chunk index and caches)

Nothing holds N × S: the matrix streams through one block at a time. Constants fitted
to VmHWM measurements (docs/stage00.md).
"""

from __future__ import annotations

from memfit.estimate import MemoryEstimate
from memfit.units import MiB

#: Resident bytes after importing numpy, h5py, click, psutil, tqdm and dcoex (measured
#: 44-46 MiB on CPython 3.11, plus a margin; stages 00/01 do not import scipy).
STAGE_BASELINE_BYTES = 48 * MiB
#: Bytes per parsed cell while a block is held as lists of ``str`` (object + pointer).
BYTES_PER_TEXT_CELL = 92
#: Bytes per gene kept for the whole run (name, duplicate-check entry, HDF5 index growth).
BYTES_PER_GENE_NAME = 800
#: HDF5 chunk cache, filter buffers and the gzip reader/writer state.
HDF5_BUFFERS_BYTES = 4 * MiB


def estimate(
    n_samples: int,
    n_genes: int = 0,
    block_rows: int = 256,
    compression: str = "gzip",
) -> MemoryEstimate:
    """Predicted peak RSS (bytes) of stage 00 for an N × S matrix."""
    cells = int(block_rows) * int(n_samples)
    components = {
        "python": STAGE_BASELINE_BYTES,
        "text_block": cells * BYTES_PER_TEXT_CELL,
        "float_block": cells * 8,
        "gene_names": int(n_genes) * BYTES_PER_GENE_NAME,
        "hdf5_buffers": HDF5_BUFFERS_BYTES,
    }
    params = {
        "n_genes": int(n_genes),
        "n_samples": int(n_samples),
        "block_rows": int(block_rows),
        "compression": compression,
    }
    return MemoryEstimate("00", components, params)


#: Output bytes (``expression.h5``): float32 cells (gzip saves little on log-CPM noise; measured
#: 0.96 of raw at 600 × 100), names, and HDF5 metadata (a 16 × 40 store: 17 KB).
OUTPUT_FIXED_BYTES = 16 * 1024
OUTPUT_BYTES_PER_NAME = 32


def output_bytes(n_genes: int, n_samples: int) -> int:
    """Predicted size (bytes) of ``expression.h5`` for an N × S matrix (an upper estimate)."""
    return (int(n_genes) * int(n_samples) * 4 + (int(n_genes) + int(n_samples)) * OUTPUT_BYTES_PER_NAME
            + OUTPUT_FIXED_BYTES)
