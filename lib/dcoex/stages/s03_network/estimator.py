"""Memory estimator of stage 03 (per reference gene differential network), in bytes.

Peak RSS of one task = interpreter and imports + per-gene vectors + the work of its
largest gene (genes run one after another), the larger of two phases:

- reading: one chunk of candidate edges E0 (the 02a and 02b columns of READ_CHUNK_EDGES
  edges, HDF5 chunk caches and decompression buffers) plus the kept network edges E, read
  into columns allocated once for |E| (the count the stage takes from the 02b file first);
- the network: per edge of E its columns (74 B), presence masks, class codes and labels
  (11 B), and the topology of the differential network: int64 edge ends, the CSR adjacency
  and its construction, the degree-oriented copy of the triangle count (~85 B); plus the
  two-path products of the triangle count, formed in row blocks of at most
  TWO_PATH_CHUNK_ENTRIES entries, or for dense networks its bit adjacency (``bitset_bytes``).

Freed per-edge temporaries leave the resident set at once (the stage fixes glibc's mmap
threshold, memfit.heap), so the phases do not add up. Nothing is proportional to |E0|
beyond one chunk. Measured with bench/stage03_phases.py (resident set per phase, 10^3 to
7·10^6 edges at N = 500, 12,625 and 20,000; bench/results/stage03_phases_*.json) and on
stage 02a/02b files of realistic data (bench/stage02b_tiles.py, bench/whole_run.py).
"""

from __future__ import annotations

from dcoex.edge_files import base_read_bytes
from memfit.estimate import PYTHON_BASELINE_BYTES, MemoryEstimate
from memfit.units import MiB

#: Resident bytes of stage 03's imports beyond the Python baseline (scipy.sparse, csgraph, h5py).
IMPORTS_BYTES = 4 * MiB
#: Bytes per network edge (|E|) while the network is built: columns 74, masks, codes and
#: labels 11, topology of the differential network ~90 (measured 168-182 B per edge above the
#: imports at 0.8-5.7 million edges of random pairs, 178 on realistic data: 4.7 million
#: network edges of 2.2·10^7 candidates, the two-path blocks included).
BYTES_PER_EDGE = 180
#: Bytes per gene of the universe (names, degree/clustering vectors, component labels).
BYTES_PER_GENE = 300
#: The clustering step's row chunks hold at most this many two-path entries (the
#: topology module's cap), at about BYTES_PER_TWO_PATH bytes each.
TWO_PATH_CHUNK_ENTRIES = 1_000_000
BYTES_PER_TWO_PATH = 12
#: The bit adjacency of the triangle count (N rows of ⌈N/64⌉ uint64 words) is used only when it
#: takes at most this many bytes and at most BITSET_EDGE_SHARE of the network's per-edge bytes.
BITSET_MAX_BYTES = 64 * MiB
BITSET_EDGE_SHARE = 0.1
#: Its working buffers: the bool block it is built from (4 MiB), its packed copy, and the
#: gathered rows of one intersection chunk (3 × 4 MiB).
BITSET_WORK_BYTES = 20 * MiB
#: Candidate edges read from the 02a/02b files at a time (dcoex.stages.s03_network.io).
READ_CHUNK_EDGES = 65_536
#: Bytes per edge of one read chunk: the 02a and 02b columns, int64 checks and masks, and
#: the HDF5 chunk caches and decompression buffers of the datasets read (measured: ~20 MiB
#: for a full chunk, on files of realistic data and on synthetic ones).
READ_BYTES_PER_EDGE = 330
#: Bytes per kept (network) edge while reading: its columns (74 B) and the chunk's masked copy.
KEPT_BYTES_PER_EDGE = 82
#: Bytes per candidate edge (|E0|) held to the end: the bool of the network selection
#: (``GeneInputs.selected``, one per chunk and their concatenation).
SELECTION_BYTES_PER_CANDIDATE = 2
#: Candidate edges assumed when the caller does not know them yet (before 02a has run).
DEFAULT_PLANNING_EDGES = 500_000


def bitset_bytes(n_genes: int, n_edges: int) -> int:
    """Bytes of the triangle count's bit adjacency and its buffers for a network of
    ``n_edges`` edges over ``n_genes`` genes, or 0 where it is not used (too large in itself or
    against the network's edges)."""
    rows = int(n_genes) * ((int(n_genes) + 63) // 64) * 8
    if rows > BITSET_MAX_BYTES or rows > BITSET_EDGE_SHARE * BYTES_PER_EDGE * int(n_edges):
        return 0
    return rows + BITSET_WORK_BYTES


def two_path_entries(n_genes: int, n_edges: int) -> int:
    """Two-path entries priced for the triangle count: the sum of squared degrees of a
    random graph of this size (4E^2/N + 2E, an upper bound for the degree-oriented
    products), capped at the chunk size."""
    expected = 4 * n_edges * n_edges // max(int(n_genes), 1) + 2 * n_edges
    return int(min(TWO_PATH_CHUNK_ENTRIES, expected))


def estimate(n_genes: int, n_edges: int | None = None, n_candidates: int | None = None, **_: object) -> MemoryEstimate:
    """Predicted peak RSS (bytes) of a stage 03 task.

    n_genes: genes in the expression matrix (N); n_edges: the largest number of network
    edges |E| (candidates kept by the CI / min-effect filter, counted from the 02b files)
    among the task's genes — before 02b ran, the candidate count |E0| of the 02a files (an
    upper bound), and before 02a ran DEFAULT_PLANNING_EDGES; n_candidates: the largest
    |E0| (default: n_edges), which sizes the read chunk and the HDF5 chunk caches.
    """
    edges = DEFAULT_PLANNING_EDGES if n_edges is None else int(n_edges)
    candidates = edges if n_candidates is None else max(int(n_candidates), edges)
    reading = READ_BYTES_PER_EDGE * min(READ_CHUNK_EDGES, candidates) + KEPT_BYTES_PER_EDGE * edges
    two_paths = max(BYTES_PER_TWO_PATH * two_path_entries(n_genes, edges), bitset_bytes(n_genes, edges))
    network = BYTES_PER_EDGE * edges + two_paths
    components = {
        "python": PYTHON_BASELINE_BYTES,
        "imports": IMPORTS_BYTES,
        "genes": BYTES_PER_GENE * int(n_genes),
        # the peak is in the network phase or, when larger, the reading phase (chunks + kept edges)
        "edges": BYTES_PER_EDGE * edges,
        "clustering_two_paths": two_paths,
        "reading_beyond_network": max(0, reading - network),
        "selection": SELECTION_BYTES_PER_CANDIDATE * candidates,
        # a dense 02a file's ranks and one block of their products (the "ranks" r form)
        "base_ranks": base_read_bytes(n_genes, candidates),
    }
    return MemoryEstimate("03", components, {"n_genes": int(n_genes), "n_edges": edges, "n_candidates": candidates})


#: Output bytes per edge (format 2: the selection of the candidate rows and the int8 class
#: codes; every other column is read from 02a/02b): measured on realistic data (12,625 × 128,
#: α 0.7, 7.0 M candidates, 3.5 M network edges) 0.17 B per candidate (`edges/selected`, gzip)
#: and 0.29 B per network edge (`edges/qual_score`); 0.6 per edge with a margin (``n_edges`` may
#: be the network's edges or, for planning, its candidates: both bounded).
OUTPUT_BYTES_PER_EDGE = 0.6
#: Per gene: the name (fixed-length UTF-8, gzip: ~1 B) and the low/high/diff degree vectors (int32, gzip).
OUTPUT_BYTES_PER_GENE = 12
#: Fixed part: HDF5 structure, meta (with its JSON summary), topology/focus attributes, provenance.
OUTPUT_FIXED_BYTES = 64 * 1024


def output_bytes(*, n_genes: int, n_edges: int) -> int:
    """Predicted size (bytes) of one stage 03 network file with ``n_edges`` network edges
    (compressed columns with a ~20 % margin; the focus partners count 8 B per gene at most)."""
    return int(OUTPUT_FIXED_BYTES + (OUTPUT_BYTES_PER_GENE + 8) * int(n_genes) + OUTPUT_BYTES_PER_EDGE * int(n_edges))


#: Run-time model of one stage 03 task, in CPU seconds of the development machine (2 cores,
#: shared; bench/stage03_phases.py and bench/whole_run.py, 10^3 to 2.2·10^7 candidate edges,
#: bench/results/time_model.json). The driver multiplies it by a safety factor and bounds it
#: (dcoex.pipeline.sizing.time_for). Fixed part of a task (interpreter, imports), seconds:
TASK_FIXED_SECONDS = 5.0
#: Fixed part of each gene (headers, output file), seconds.
GENE_FIXED_SECONDS = 0.5
#: Seconds per candidate edge |E0| (reading, classification, the three topologies with their
#: triangle counts, writing; measured 5-11 µs per edge, growing slowly with the density).
SECONDS_PER_EDGE = 1.2e-5


def runtime_seconds(*, gene_edges: list[int]) -> float:
    """Modelled run time (seconds) of a stage 03 task whose genes have ``gene_edges`` candidate
    edges |E0| each (run one after another)."""
    return float(TASK_FIXED_SECONDS + sum(GENE_FIXED_SECONDS + SECONDS_PER_EDGE * max(int(e), 0)
                                          for e in gene_edges))
