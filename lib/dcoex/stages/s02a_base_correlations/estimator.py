"""Stage 02a (base correlations of one reference gene) peak-RSS estimate and output size, in bytes.

Memory model (N genes, S samples, k_L/k_H group sizes, T tile rows, P threads, m = N(N−1)/2,
W = min(WINDOW_ITEMS, m)). Nothing depends on the number of candidates or edges: the
statistics are streamed (science.py), the differential q table lives in a scratch file and
is read back in slices of at most 2·W entries, and only fixed budgets are held.

- ``python``: interpreter + numpy/scipy.special/h5py/numba (the compiled kernels loaded from
  numba's cache, its workqueue threads)/click imports (measured);
- ``expr``: the whole N × S float32 matrix, loaded once per task;
- ``ranks``: the integer ranks of both groups (float32), N·(k_L + k_H)·4, and the groups'
  expression copies (as much again), plus the float64 ranking transient of one block of
  dcoex.ranks.RANK_BLOCK_ROWS rows (~RANK_TRANSIENT_BYTES per cell);
- ``tile``: the two reused float32 product buffers of T × N cells (8 B per cell; +8 per group
  of float64 products when k(k−1)² >= 2**24);
- ``bins``: the three families' histograms (count, min, max: 24 B per bin), their cumulative
  counts and the q-table offsets (8 B per bin each), and TABLE_ENTRIES entries of q table per
  group family;
- ``r_tables``: per group family, at most one entry per distinct |r| (k(k²−1)/12 + 1 without
  ties: ~1,300 at k = 25, 545,000 at k = 187) in the exact |d| // 4 counts of the tie-free pairs
  (values, counts, bins) and in the q table, with the temporaries of making them;
- ``phases``: the largest of three phases, each freed before the next.
  Histogram: P private histograms (3 × N_BINS × 24 B), exact counts (2 × (k³−k)/12 × 8 B)
  and a row of three float64 statistics and five int32 slots (N × 44 B).
  Collection: the buffers, three float64 and one int64 of W entries, allocated and written
  once, the two float64 temporaries (counts at or above, p·m/C) of a group's distinct values,
  P private buffers (3 × max(LOCAL_ITEMS, N) × 8 B) and the p-value temporaries of P blocks
  of P_BLOCK statistics (P_TEMPORARIES float64 arrays each).
  Emission: one emission slice (EMIT_CELLS tile cells, 32 B each), the pending edge chunks
  (CHUNK_EDGES + EMIT_CELLS edges, EDGE_CHUNK_BYTES each), the bitmap window of the writer and
  the HDF5 chunk buffers (WRITER_BYTES), and one slice of the differential q table (2·W
  entries, 16 B each: science.SLICE_WINDOWS) with its index (at most FINE_BINS int32).
"""

from __future__ import annotations

import numpy as np

from dcoex.ranks import RANK_BLOCK_ROWS
from dcoex.threads import default_threads
from memfit.estimate import MemoryEstimate
from memfit.units import MiB

#: Resident bytes of the stage before data: interpreter, numpy, scipy.special, h5py, numba with
#: the stage's cached kernels, click, psutil, threadpoolctl + recorder/HDF5 state (measured).
STAGE_BASELINE_BYTES = 180 * MiB
#: Bins of each family's histogram (science.py).
N_BINS = 1 << 16
#: Statistics collected at once per family in a collection pass (bounded groups of bins); also
#: the entries of one slice of the differential q table read back for emission.
WINDOW_ITEMS = 1 << 22
#: Bins (at most) of the index of a differential q-table slice read back for emission (int32
#: offsets: 16 MiB), about one table entry per bin (science._fine_bins).
FINE_BINS = 1 << 22
#: Edges per chunk handed to the sink (the HDF5 writer).
CHUNK_EDGES = 1 << 16
#: Tile cells of one emission slice (its buffers hold 32 bytes per cell).
EMIT_CELLS = 1 << 16
#: Statistics whose p-values one thread computes at once (science._scaled_p), and the float64
#: temporaries of a block (t-test p: |r|, r², 1 − r², t, p, p·m/C).
P_BLOCK = 1 << 16
P_TEMPORARIES = 6
#: Entries (at least, per family) of each thread's private collection buffer (float64).
LOCAL_ITEMS = 1 << 16
TILE_BYTES_PER_CELL = 8
RANK_TRANSIENT_BYTES = 64
TABLE_ENTRIES = 1 << 17
#: Bytes per pending edge: the kernel's outputs copied, the stored columns and significance
#: flags, and the concatenation of a chunk.
EDGE_CHUNK_BYTES = 100
#: The writer's bitmap window (8 MiB of booleans, 1 MiB packed) and the chunks being compressed
#: (dcoex.h5chunks.DirectColumns: up to 3 chunks of 1 MiB for each of 4 columns, and their bytes).
WRITER_BYTES = 24 * MiB
#: Output size (output_bytes), format 3–4, shuffle + gzip 4, measured on realistic data from
#: 1,500 × 128 to 8,763 × 938 (docs/stage02a.md "Storage"): bytes per edge of r_low, r_high
#: (float32; 6.7–6.9 measured); of the sparse int64 pair index (at most, density >= 0.5 %); of the
#: packed bitmap per pair (at most, density >= 1/32); of ``edges/q_diff`` (float64, the "column"
#: form; 7.0 measured); per q-table entry (stat + q float64: 6.3–6.5 measured for the group
#: tables, 10 for the differential one); fixed bytes (meta, provenance, HDF5 structure) and bytes
#: per gene name.
FILE_EDGE_VALUE_BYTES = 7.0
#: Bytes per edge and group of the "product" r form (bitmap edge form: dcoex.edge_files.R_FORMS),
#: by the itemsize of the rank products: int16 1.43–1.44 measured (k = 25), int32 2.65–2.68
#: (k = 187); rounded up. Bytes per gene and sample of a group of the "ranks" r form, by the
#: itemsize of the ranks: int8 0.63 measured (k = 25), int16 1.06 (k = 187); rounded up. Each
#: group's scales add 4 B per gene in both.
FILE_PRODUCT_BYTES = {2: 1.6, 4: 2.9}
FILE_RANK_BYTES = {1: 0.7, 2: 1.2}
FILE_SCALE_BYTES = 4
FILE_SPARSE_INDEX_BYTES = 1.7
FILE_BITMAP_BYTES_PER_PAIR = 0.125
FILE_Q_DIFF_COLUMN_BYTES = 7.0
FILE_GROUP_TABLE_ENTRY_BYTES = 6.5
FILE_DIFF_TABLE_ENTRY_BYTES = 12.0
FILE_FIXED_BYTES = 64 * 1024
FILE_NAME_BYTES = 4
#: Entries of the differential q table per edge, t/E = min(1/2, a·(S/E)^b), S the number of
#: distinct (r_low, r_high) pairs: fitted to realistic data at k = 25, 60 (t/E 0.021 at S/E 1,
#: 0.16 at 42, 0.27 at 950, 0.42 at 2,300), rounded up; at 1/2 the stage stores the column.
DIFF_TABLE_A = 0.03
DIFF_TABLE_B = 0.45


def estimate(
    n_genes: int,
    n_samples: int,
    *,
    k_low: int,
    k_high: int,
    fdr_alpha: float = 0.05,
    tile_rows: int = 512,
    exact_q: bool = False,
    threads: int | None = None,
) -> MemoryEstimate:
    """Predicted peak RSS (bytes) of stage 02a for one reference gene at ``tile_rows`` with
    ``threads`` numba threads (default: dcoex.threads.default_threads(), as the stage uses);
    ``fdr_alpha`` and ``exact_q`` change the time, not the memory."""
    n = int(n_genes)
    m = n * (n - 1) // 2
    t = max(1, min(int(tile_rows), max(n - 1, 1)))
    parts = max(1, int(threads or default_threads()))
    k_max = max(int(k_low), int(k_high))
    wide = sum(8 for k in (int(k_low), int(k_high)) if k * (k - 1) ** 2 >= 2**24)  # float64 products (dcoex.ranks)
    window = min(WINDOW_ITEMS, m)
    distinct = min(m, k_max * (k_max * k_max - 1) // 12 + 1)  # distinct |r| of a group without ties
    histogram = parts * (3 * N_BINS * 24 + 2 * (k_max**3 // 12 + 1) * 8 + n * (3 * 8 + 5 * 4))
    collect = 6 * window * 8 + parts * 3 * max(LOCAL_ITEMS, n) * 8 + parts * P_BLOCK * P_TEMPORARIES * 8
    emit = (min(EMIT_CELLS, t * n) * 32 + min(CHUNK_EDGES + EMIT_CELLS, m) * EDGE_CHUNK_BYTES + WRITER_BYTES
            + 2 * window * 16 + 4 * min(FINE_BINS, max(N_BINS, 2 * window)))
    components = {
        "python": STAGE_BASELINE_BYTES,
        "expr": n * int(n_samples) * 4,
        "ranks": n * (int(k_low) + int(k_high)) * 8 + min(n, RANK_BLOCK_ROWS) * k_max * RANK_TRANSIENT_BYTES,
        "tile": t * n * (TILE_BYTES_PER_CELL + wide),
        "bins": 3 * N_BINS * (24 + 8 + 8) + 2 * TABLE_ENTRIES * 16,
        # exact counts (24 B), q table (16 B) and their temporaries, per group family
        "r_tables": 2 * distinct * 64,
        # histogram, collection and emission: each phase's buffers are freed before the next
        "phases": max(histogram, collect, emit),
    }
    params = {
        "n_genes": n, "n_samples": int(n_samples), "k_low": int(k_low), "k_high": int(k_high),
        "fdr_alpha": float(fdr_alpha), "tile_rows": t, "exact_q": bool(exact_q), "threads": parts,
    }
    return MemoryEstimate("02a", components, params)


def distinct_r(k: int | None) -> float:
    """Distinct Spearman r values of a group of ``k`` samples without ties (k(k²−1)/6 + 1);
    unbounded (inf) when k is unknown."""
    return float("inf") if k is None else k * (k * k - 1) / 6 + 1


def output_bytes(n_genes: int, n_edges: int, *, k_low: int | None = None, k_high: int | None = None) -> int:
    """Predicted size (bytes) of one 02a file with ``n_edges`` differential edges over N =
    ``n_genes`` genes, groups of ``k_low`` and ``k_high`` samples (docs/stage02a.md, "Storage").

    The q tables grow with k: each group family has at most one entry per distinct |r| (counted
    as min(distinct r, N(N−1)/4)), the differential one t/E per edge (``DIFF_TABLE_A``) or, past
    half the edges, the per-edge column. The r's are float32 per edge, or in the bitmap form
    integer rank products (``FILE_PRODUCT_BYTES``) or the groups' ranks (``FILE_RANK_BYTES``),
    whichever dcoex.edge_files.r_form stores. Unknown k: float r's, the column and full
    group tables (a bound).
    """
    from dcoex.edge_files import edge_form, product_dtype, r_form, rank_dtype

    n = int(n_genes)
    m = n * (n - 1) // 2
    e = int(n_edges)
    form = edge_form(m, e)
    if form == "bitmap":
        index = m * FILE_BITMAP_BYTES_PER_PAIR
    else:
        index = e * FILE_SPARSE_INDEX_BYTES
    values = e * FILE_EDGE_VALUE_BYTES
    groups = (k_low, k_high) if k_low is not None and k_high is not None else None
    stored_r = r_form(form, groups, n_genes=n, n_edges=e)
    if stored_r == "product":
        values = sum(e * FILE_PRODUCT_BYTES[np.dtype(product_dtype(k)).itemsize] + n * FILE_SCALE_BYTES
                     for k in (k_low, k_high))
    elif stored_r == "ranks":
        values = sum(n * (k * FILE_RANK_BYTES[np.dtype(rank_dtype(k)).itemsize] + FILE_SCALE_BYTES)
                     for k in (k_low, k_high))
    d_low, d_high = distinct_r(k_low), distinct_r(k_high)
    group_tables = sum(min(d, m / 2) for d in (d_low, d_high)) * FILE_GROUP_TABLE_ENTRY_BYTES
    share = min(0.5, DIFF_TABLE_A * (d_low * d_high / max(e, 1)) ** DIFF_TABLE_B)
    q_diff = e * (FILE_Q_DIFF_COLUMN_BYTES if share >= 0.5 else share * FILE_DIFF_TABLE_ENTRY_BYTES)
    return int(FILE_FIXED_BYTES + n * FILE_NAME_BYTES + values + index + group_tables + q_diff)
