"""Stage 01 (groups + bootstrap indices) peak-RSS estimate: a pure function of shapes.

Memory model (bytes; b = batch size, S = samples, T = threads, k = k_L + k_H,
c = B·(k_rL + k_rH)·4 = raw bootstrap bytes of one gene):

    python + T·thread + hdf5                      (fixed, measured)
  + hdf5_chunk_index    = min(N·1700, 32 MiB)     (HDF5 metadata cache: output chunk index)
  + expr_batch          = b·S·12                  (float32 rows + int64 stable argsort order)
  + groups              = b·k·8                   (int64 sort copies, int32 groups)
  + bootstrap_pipeline  = T·(3.0 + 2·w)·c         (per thread one gene in flight: positions,
                                                   gathered indices, shuffled bytes; plus
                                                   2·T genes waiting to be written, each
                                                   w·c: w = 0.35 deflated, 1 with none/lzf)
  + hdf5_filter         = 17 MiB                  (only with lzf: HDF5 filters in-line)
  + tsv_matrix          = 2·N·S·4                 (only with --in-tsv: the whole matrix,
                                                   twice while parsed blocks are joined)

The batch's arrays are freed before its genes enter the pipeline, so the sum is a
slight over-estimate (by the pipeline, a few MiB) when the batch term dominates. The
bootstrap arrays themselves (N·c, 10 GB at production shape) are never held: memory
grows with b only through S-sized rows, so every batch size fits in well under 1 GB.
Constants were fitted to VmHWM measurements (bench/stage01.py, docs/stage01.md).
"""

from __future__ import annotations

from memfit.estimate import MemoryEstimate
from memfit.units import MiB

#: Resident bytes of the stage's interpreter and imports (numpy, h5py, click, psutil,
#: tqdm, dcoex, memfit) before any data; measured 50-52 MiB on CPython 3.11, plus a small margin.
STAGE_BASELINE_BYTES = 56 * MiB
#: Per worker thread: stack, malloc arena and numpy/zlib scratch (measured ~0.9 MiB).
THREAD_BYTES = 1 * MiB
#: HDF5 library state, metadata and chunk caches of the input store and the output.
HDF5_BYTES = 6 * MiB
#: HDF5 metadata cache growth per gene of the output (chunk-index nodes of the four
#: one-gene-per-chunk datasets), measured between 1,000 and 8,763 genes; HDF5 caps its
#: metadata cache (32 MiB by default).
CHUNK_INDEX_BYTES_PER_GENE = 1700
CHUNK_INDEX_MAX_BYTES = 32 * MiB
#: Bytes per (gene, sample) cell of a batch: float32 row + int64 argsort order.
BYTES_PER_BATCH_CELL = 12
#: Bytes per group member of a batch (int64 sort copy + int32 result, partly overlapped).
BYTES_PER_GROUP_MEMBER = 8
#: One gene in flight per thread, as a multiple of its raw bootstrap bytes.
IN_FLIGHT_FACTOR = 3.0
#: A gene waiting to be written (2 per thread), as a multiple of its raw bytes: deflated
#: chunks (gzip) are ~0.35 of it; with none or lzf the raw arrays wait.
WAITING_FACTOR = {"gzip": 0.35, "none": 1.0, "lzf": 1.0}
#: With lzf, HDF5 runs the filter itself: chunk cache and filter buffers (measured).
LZF_FILTER_BYTES = 17 * MiB


def estimate(
    n_genes: int,
    n_samples: int,
    *,
    n_bootstrap: int,
    k_low: int,
    k_high: int,
    kr_low: int,
    kr_high: int,
    batch_size: int,
    threads: int = 2,
    input_kind: str = "h5",
    compression: str = "gzip",
) -> MemoryEstimate:
    """Predicted peak RSS (bytes) of stage 01 at ``batch_size`` genes per batch."""
    b = max(1, min(int(batch_size), int(n_genes)))
    threads = max(1, int(threads))
    gene_raw = int(n_bootstrap) * (int(kr_low) + int(kr_high)) * 4
    components = {
        "python": STAGE_BASELINE_BYTES,
        "threads": threads * THREAD_BYTES,
        "hdf5": HDF5_BYTES,
        "hdf5_chunk_index": min(int(n_genes) * CHUNK_INDEX_BYTES_PER_GENE, CHUNK_INDEX_MAX_BYTES),
        "expr_batch": b * int(n_samples) * BYTES_PER_BATCH_CELL,
        "groups": b * (int(k_low) + int(k_high)) * BYTES_PER_GROUP_MEMBER,
        "bootstrap_pipeline": int(
            threads * (IN_FLIGHT_FACTOR + 2 * WAITING_FACTOR.get(compression, 1.0)) * gene_raw
        ),
    }
    if compression == "lzf":
        components["hdf5_filter"] = LZF_FILTER_BYTES
    if input_kind == "tsv":
        components["tsv_matrix"] = 2 * int(n_genes) * int(n_samples) * 4
    params = {
        "n_genes": int(n_genes), "n_samples": int(n_samples), "n_bootstrap": int(n_bootstrap),
        "k_low": int(k_low), "k_high": int(k_high), "kr_low": int(kr_low), "kr_high": int(kr_high),
        "batch_size": b, "threads": threads, "input_kind": input_kind, "compression": compression,
    }
    return MemoryEstimate("01", components, params)


#: Output bytes (``bootstrap_indices.h5``): the groups (int32, barely compressible) and the
#: bootstrap draws deflated to about this fraction of their int32 bytes (measured 0.33 at
#: N 600, B 40, k_r 16; 0.4 keeps a margin), plus HDF5 metadata (a 16-gene file: 29 KB).
OUTPUT_DEFLATED_FRACTION = 0.4
OUTPUT_FIXED_BYTES = 24 * 1024


def output_bytes(n_genes: int, *, n_bootstrap: int, k_low: int, k_high: int, kr_low: int, kr_high: int) -> int:
    """Predicted size (bytes) of ``bootstrap_indices.h5`` (gzip, the default compression)."""
    n = int(n_genes)
    groups = n * (int(k_low) + int(k_high)) * 4
    draws = n * int(n_bootstrap) * (int(kr_low) + int(kr_high)) * 4
    return groups + int(draws * OUTPUT_DEFLATED_FRACTION) + OUTPUT_FIXED_BYTES
