"""Stage 02b (bootstrap of one reference gene's selected edges) peak-RSS estimate, in bytes,
and its output size.

Memory model (N genes, S samples, B replicates, k_L/k_H group sizes, a tile of c edges
touching n_c <= min(N, 2c, the genes the gene's edges touch when known) genes; nothing is proportional to the gene's total edge count:
tiles are read from the 02a file and appended to the output one at a time):

- ``python``: interpreter + numpy/h5py/click imports (measured; 02b does not import scipy);
- ``first_tile``: what the first tile of a gene with edges adds whatever its size (the BLAS
  threads' buffers, the ranking code's first allocations; measured: a gene of 8 edges peaks
  ~11 MiB above one of none);
- ``expr``: the whole N × S float32 matrix, loaded once per task, and its LOW/HIGH columns;
- ``indices``: the gene's bootstrap indices and positions (int64) and the resample counts;
- ``tile_edges``: one tile's 02a columns, the selected copy, row indices, statistics and
  output conversions: TILE_EDGE_BYTES per edge;
- ``band``: the rest of the band of whole gene rows the tile is cut from (band_edges,
  BAND_EDGE_BYTES per edge);
- ``deltas``: the (B × c) float32 replicate buffer, reused by every tile;
- ``signs``: per group the tile genes' sign matrices (n_c·k × k float32) when they fit
  SIGN_WORK_BYTES for n_c genes (the science decides on the same bound), else their sort
  order and rank index (int64), and their values (sign_bytes);
- ``work``: the replicate block (per_replicate_bytes × replicate_block: both groups'
  ranks and squares, the core rows/columns, per edge the scale gather, LOW r and raw
  sums; the science sizes its blocks with these same functions, from the tile's real
  genes and core) and the core products (per-thread row blocks on the host,
  GATHER_WORK_BYTES with a device backend);
- ``stats``: a C-ordered copy of one statistics row block and its temporaries
  (STATS_WORK_BYTES);
- ``hdf5``: chunk buffers of the resizable output datasets.

The tile is at most MAX_TILE_EDGES edges and MAX_CHUNK_DELTA_BYTES of Δ.
"""

from __future__ import annotations

from dcoex.edge_files import base_read_bytes
from memfit.estimate import MemoryEstimate
from memfit.units import MiB

#: Resident bytes of the stage before data (interpreter, numpy, h5py, click, psutil,
#: threadpoolctl; no scipy) and numba with the stage's four parallel kernels loaded from its
#: cache and their threading layer started, measured on CPython 3.11: 173 MiB after the
#: kernels ran once (38 MiB before numba), + recorder and HDF5 state. An 8-edge gene of a
#: 12,625 × 128 matrix at B = 1,000 peaks at 200 MiB.
STAGE_BASELINE_BYTES = 170 * MiB
#: The same when no gene of the task has edges: numba is imported but its kernels never load
#: nor start threads (measured: 128 MiB peak for a 0-edge gene of realistic 2,000 × 128 at
#: B = 200, where the full baseline gave estimate/peak 1.46).
NO_EDGE_BASELINE_BYTES = 120 * MiB
#: Fixed resident bytes of the first tile of a gene with edges (BLAS buffers, first work arrays).
FIRST_TILE_BYTES = 8 * MiB
#: Temporaries of the per-edge statistics (dcoex.stages.s02b_bootstrap_edges.science works in row blocks of this).
STATS_WORK_BYTES = 64 * MiB
#: Largest Δ matrix of one tile (bytes): bigger tiles amortise the ranking a little more.
MAX_CHUNK_DELTA_BYTES = 512 * MiB
#: Most edges of one tile whatever B: at small B a tile of MAX_CHUNK_DELTA_BYTES would hold a
#: band of whole rows (every gene ranked, a sparse core); 2-D tiles of this size in bands of
#: BAND_TILES keep both small (realistic 12,625 × 128, B = 100, 9.3 M edges: 43 → 31 s wall).
MAX_TILE_EDGES = 1 << 17
#: Ranking temporaries of one block of replicates (dcoex.stages.s02b_bootstrap_edges.science sizes blocks to it).
RANK_WORK_BYTES = 32 * MiB
#: Host buffer of the core products a gathering device backend returns (its replicate steps
#: are sized to it: dcoex.stages.s02b_bootstrap_edges.science).
GATHER_WORK_BYTES = 48 * MiB
#: Both groups' products of one block of core rows in the host's fused kernel
#: (kernels.core_deltas), per numba thread: kept in cache.
CORE_BLOCK_BYTES = 512 * 1024
#: Numba threads the host products are counted for (dcoex.threads.default_threads' cap).
MAX_THREADS = 16
#: Sign matrices (g·k × k float32) of one gene block of the ranking product.
SIGN_WORK_BYTES = 64 * MiB
#: Bytes per edge of one tile (02a columns ~78 B, selected copy, int64 rows, statistics,
#: hashes and output conversions; 280 puts the estimate 8-24 % above the measured peak from
#: 3 to 2.2·10^7 edges, bench/results/stage02b_03_realistic.json).
TILE_EDGE_BYTES = 280
#: Tiles per band: 02b reads the 02a edges in bands of whole gene rows and cuts each band into
#: 2-D tiles of its rows × a run of columns (science.bootstrap_band), so a tile ranks the
#: resamples of ~R + C genes for R·C pairs instead of all N genes for a few rows.
BAND_TILES = 8
#: Bytes per edge of a band beyond its first tile: the 02a columns read (pair index, genes,
#: r's, significance flags), the selected copy, int64 gene rows, Δ_base, the tile positions
#: and the band's statistics before they are written.
BAND_EDGE_BYTES = 128
#: Statistics bytes per value of a row block: the C-ordered copy (4; the sums run on the
#: replicate buffer itself and the sort in place) and the per-row arrays (kernels.row_moments).
STATS_BYTES_PER_VALUE = 5
#: HDF5 chunk buffers and caches of the output datasets.
HDF5_BYTES = 16 * MiB


def max_chunk(n_bootstrap: int) -> int:
    """Most edges per tile: MAX_CHUNK_DELTA_BYTES of float32 Δ, at most MAX_TILE_EDGES."""
    return max(1, min(MAX_TILE_EDGES, MAX_CHUNK_DELTA_BYTES // (4 * max(int(n_bootstrap), 1))))


def band_edges(edge_chunk: int, *, store_replicates: bool = False) -> int:
    """Edges per band at ``edge_chunk`` edges per tile: BAND_TILES tiles; one tile with
    ``store_replicates`` (the replicates are written in the 02a order, tile by tile)."""
    if store_replicates:
        return max(1, int(edge_chunk))
    return max(1, int(edge_chunk)) * BAND_TILES


def signs_fit(n_genes: int, k: int) -> bool:
    """Whether a tile's sign matrices (n_genes·k × k float32) are kept (<= SIGN_WORK_BYTES);
    else ranks come from cumulative counts in each gene's sorted order."""
    return int(n_genes) * int(k) * int(k) * 4 <= SIGN_WORK_BYTES


def sign_bytes(n_genes: int, k: int) -> int:
    """One group's ranking data of a tile of at most ``n_genes`` genes (bytes): its values, and
    its sign matrices when they fit for ``n_genes`` (the science decides on the same bound,
    whatever the tile's own genes), else its sort order and rank index."""
    n, k = int(n_genes), int(k)
    return (n * k * k * 4 if signs_fit(n, k) else n * k * 24) + n * k * 4


def per_replicate_bytes(
    *, n_genes: int, k_low: int, k_high: int, itemsize: int, core_genes: int, n_edges: int, cumulative: bool = False
) -> int:
    """Work of one replicate of a tile (bytes), as dcoex.stages.s02b_bootstrap_edges.science
    holds it: both groups' ranks and their squares (float32; plus float64 copies when the
    sums need float64; plus the sorted counts and their cumulative sums when ``cumulative``;
    the sums of squares and scales, float64, per gene),
    the core's row and column ranks, and per edge the scale gather, LOW r and the raw sums."""
    wide = 2 * itemsize if itemsize == 8 else 0
    ranks = int(n_genes) * (int(k_low) + int(k_high)) * (8 + wide) + int(n_genes) * 40  # + scale temporaries
    if cumulative:
        ranks += int(n_genes) * max(int(k_low), int(k_high)) * 8
    core = int(core_genes) * max(int(k_low), int(k_high)) * itemsize
    return ranks + core + int(n_edges) * (8 + itemsize + (itemsize if itemsize == 8 else 0))


def replicate_block(*, per_replicate: int, n_boot: int) -> int:
    """Replicates per block: as many as fit RANK_WORK_BYTES (at least 1, at most B)."""
    return int(max(1, min(int(n_boot), RANK_WORK_BYTES // max(int(per_replicate), 1))))


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
    gathers_on_device: bool = False,
    n_touched: int | None = None,
) -> MemoryEstimate:
    """Predicted peak RSS (bytes) of stage 02b for one gene at ``edge_chunk`` edges per tile
    (``n_edges``: the gene's 02a edges, an upper bound of the selected ones);
    ``gathers_on_device``: a GPU backend computes the core products (its host buffer for them
    is counted; on the host they are per-thread blocks); ``n_touched``: the genes the gene's
    edges touch (dcoex.edge_files.touched_genes), when known, bounds a tile's genes."""
    n, b = int(n_genes), int(n_bootstrap)
    e = max(0, int(n_edges))
    c = max(1, min(int(edge_chunk), max(e, 1)))
    n_c = min(n, 2 * c, n if n_touched is None else max(int(n_touched), 0)) if e else 0
    ks = (int(k_low), int(k_high))
    kr = max(int(kr_low), int(kr_high))
    itemsize = 4 if kr * (kr - 1) ** 2 < 2**24 else 8  # exact integer rank sums (dcoex.ranks)
    cached = [signs_fit(n_c, k) for k in ks]
    per_rep = per_replicate_bytes(n_genes=n_c, k_low=ks[0], k_high=ks[1], itemsize=itemsize,
                                  core_genes=min(2 * n_c, n_c + c), n_edges=c, cumulative=not all(cached))
    block = replicate_block(per_replicate=per_rep, n_boot=b)
    # the core products: a device backend's host buffer (GATHER_WORK_BYTES at most), or the
    # host kernel's per-thread row blocks (the gathered edges' sums are in per_rep)
    if gathers_on_device:
        products = min(GATHER_WORK_BYTES, b * c * max(ks) * 2 * itemsize)
    else:
        products = MAX_THREADS * CORE_BLOCK_BYTES
    stats_rows = max(1, min(c, STATS_WORK_BYTES // max(16 * b, 1)))
    components = {
        "python": STAGE_BASELINE_BYTES if e else NO_EDGE_BASELINE_BYTES,
        "first_tile": FIRST_TILE_BYTES if e else 0,
        "expr": n * int(n_samples) * 4 + n * sum(ks) * 4,
        "indices": b * (int(kr_low) + int(kr_high)) * 16 + b * sum(ks) * 20,
        "tile_edges": c * TILE_EDGE_BYTES if e else 0,
        "band": (min(band_edges(c, store_replicates=store_replicates), e) - c) * BAND_EDGE_BYTES if e > c else 0,
        "deltas": c * b * 4 if e else 0,
        "signs": sum(sign_bytes(n_c, k) for k in ks),
        "work": block * per_rep + products if e else 0,
        "stats": stats_rows * b * STATS_BYTES_PER_VALUE if e else 0,
        "hdf5": HDF5_BYTES + (16 * MiB if store_replicates else 0),
        # a dense 02a file's ranks and one block of their products (the "ranks" r form)
        "base_ranks": base_read_bytes(n, e, ks) if e else 0,
    }
    params = {
        "n_genes": n, "n_samples": int(n_samples), "n_bootstrap": b, "k_low": int(k_low),
        "k_high": int(k_high), "kr_low": int(kr_low), "kr_high": int(kr_high),
        "n_edges": e, "edge_chunk": c, "store_replicates": bool(store_replicates),
        "gathers_on_device": bool(gathers_on_device), "n_touched": None if n_touched is None else int(n_touched),
    }
    return MemoryEstimate("02b", components, params)


#: Output bytes per edge (format 3) by ``--boot-precision`` (dcoex.edge_files.BOOT_PRECISIONS):
#: the BOOT_DATASETS columns are 24 B before compression (4 float32 + n_finite + n_minority
#: int32); shuffle + gzip leave ~13 (measured on realistic data, 12,625 × 128, B = 100:
#: docs/stage02b.md), 16 with a margin; "compact" (3 int16 + float16 + 2 int32, 16 B) ~7.2, 9.
OUTPUT_BYTES_PER_EDGE = {"float32": 16, "compact": 9}
#: Fixed part of an output file: HDF5 structure, meta, provenance, memfit attributes.
OUTPUT_FIXED_BYTES = 64 * 1024
#: gene_names: about this many bytes per gene (fixed-length UTF-8, gzip: ~1 measured).
OUTPUT_BYTES_PER_GENE = 4


def output_bytes(*, n_genes: int, n_edges: int, n_boot: int, store_replicates: bool = False,
                 boot_precision: str = "float32") -> int:
    """Predicted size (bytes) of one gene's 02b file: the compressed columns with a margin
    (OUTPUT_BYTES_PER_EDGE per edge at ``boot_precision``), the gene names and the fixed part;
    with ``store_replicates`` also the (E, B) float32 replicates (uncompressed: an upper bound)."""
    total = (OUTPUT_FIXED_BYTES + OUTPUT_BYTES_PER_GENE * int(n_genes)
             + OUTPUT_BYTES_PER_EDGE[boot_precision] * int(n_edges))
    if store_replicates:
        total += 4 * int(n_edges) * int(n_boot)
    return int(total)


#: Run-time model of one 02b task, in CPU seconds of the development machine (2 cores; float32
#: GEMM ≈ 35 GFLOP/s per core), fitted with bench/time_model_02b.py (bench/results/time_model_02b.json:
#: k from 25 to 187, 683 to 22.8 M edges, B = 100 and 1,000). The driver multiplies it by a
#: safety factor and bounds it (dcoex.pipeline.sizing.time_for). Fixed part of a task
#: (interpreter, imports, numba's kernels, the expression matrix read), seconds:
TASK_FIXED_SECONDS = 10.0
#: Fixed part of each gene (its 02a header, index rows, output file), seconds.
GENE_FIXED_SECONDS = 1.0
#: Seconds per edge·replicate outside the products (the statistics and their sort, the
#: replicate buffer, reading and writing).
SECONDS_PER_EDGE_REPLICATE = 2.5e-8
#: Seconds per product pair·replicate per resampled sample (both groups counted: k_r,L + k_r,H
#: multiply-adds of one pair of a core product); an edge costs min(1/density, GATHER_COST_RATIO)
#: pairs: dense edges come from core matrix products that also compute the pairs between them,
#: sparse ones from gathered dot products (GATHER_COST_RATIO core pairs each).
SECONDS_PER_PAIR_SAMPLE_REPLICATE = 1.0e-10
#: Cost of one gathered edge relative to one pair of a core matrix product (the science's
#: choice of core, and the run-time model).
GATHER_COST_RATIO = 24.0
#: Seconds per gene a tile ranks, per replicate and resampled sample (both groups counted).
SECONDS_PER_TILE_GENE_SAMPLE_REPLICATE = 1.0e-8


def tile_genes(*, n_genes: int, n_edges: int, n_bootstrap: int) -> int:
    """Genes ranked by the tiles of a gene with ``n_edges`` edges, summed over its tiles: each
    band of whole rows (band_edges) is cut into tiles of max_chunk edges, a run of its columns
    each, so a tile ranks about its band's rows (band·N/E, rows holding E/N edges on average)
    plus its share of the columns (N·tile/band), at most N and 2 per edge."""
    n, e = int(n_genes), max(int(n_edges), 0)
    if e == 0:
        return 0
    tile = max_chunk(n_bootstrap)
    band = band_edges(tile)
    tiles = -(-e // tile)
    per_tile = min(n, 2 * min(e, tile), -(-band * n // e) + -(-n * tile // band))
    return tiles * per_tile


def runtime_seconds(*, n_genes: int, gene_edges: list[int], n_bootstrap: int, kr_low: int, kr_high: int) -> float:
    """Modelled CPU seconds of a 02b task whose genes have ``gene_edges`` edges (|E0| each, run
    one after another) at B = ``n_bootstrap``, N = ``n_genes``, resamples of kr_low/kr_high
    samples: the fixed parts; per edge·replicate the statistics and its product pairs
    (min(1/density, GATHER_COST_RATIO) pairs of k_r,L + k_r,H multiply-adds); per replicate the
    ranking of each tile's genes (tile_genes)."""
    b = max(int(n_bootstrap), 1)
    samples = int(kr_low) + int(kr_high)
    pairs = max(int(n_genes) * (int(n_genes) - 1) // 2, 1)
    total = TASK_FIXED_SECONDS
    for e in (max(int(x), 0) for x in gene_edges):
        per_edge = min(pairs / e, GATHER_COST_RATIO) if e else 0.0
        total += GENE_FIXED_SECONDS + b * (
            e * (SECONDS_PER_EDGE_REPLICATE + SECONDS_PER_PAIR_SAMPLE_REPLICATE * samples * per_edge)
            + SECONDS_PER_TILE_GENE_SAMPLE_REPLICATE * samples * tile_genes(n_genes=n_genes, n_edges=e, n_bootstrap=b))
    return float(total)
