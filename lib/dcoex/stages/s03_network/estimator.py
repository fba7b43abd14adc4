"""Memory estimator of stage 03 (per reference gene differential network).

Peak RSS of one task = interpreter and imports + per-gene vectors + the work of its
largest gene (genes run one after another), the larger of two phases: reading (one chunk
of candidate edges E0 with the HDF5 chunk caches, plus the kept network edges E) and the
network (per edge of E: its columns, masks, three adjacency matrices, output buffers; and
the two-path products of the triangle count). Nothing is proportional to |E0| beyond one
chunk; the network's adjacency makes the peak proportional to |E| (inherent). Calibrated
on stage 02a/02b files of realistic data (bench/stage02b_tiles.py) and bench/stage03.py.
"""

from __future__ import annotations

from memfit.estimate import PYTHON_BASELINE_BYTES, MemoryEstimate
from memfit.units import MiB

#: Resident bytes of stage 03's imports beyond the Python baseline (scipy.sparse, csgraph, h5py).
IMPORTS_BYTES = 4 * MiB
#: Bytes per candidate edge (|E0|) while one gene is processed.
BYTES_PER_EDGE = 255
#: Bytes per gene of the universe (names, degree/clustering vectors, component labels).
BYTES_PER_GENE = 300
#: The clustering step's row chunks hold at most this many two-path entries (the
#: topology module's cap), at about BYTES_PER_TWO_PATH bytes each.
TWO_PATH_CHUNK_ENTRIES = 1_000_000
BYTES_PER_TWO_PATH = 24
#: Candidate edges read from the 02a/02b files at a time (dcoex.stages.s03_network.io).
READ_CHUNK_EDGES = 65_536
#: Bytes per edge of one read chunk: the 02a and 02b columns, int64 checks and masks, and
#: the HDF5 chunk caches and decompression buffers of the 21 datasets read (measured on
#: stage 02a/02b files of realistic data: ~47 MiB for a full chunk).
READ_BYTES_PER_EDGE = 760
#: Bytes per kept (network) edge while reading: its columns in the chunk list and the
#: concatenated copy.
KEPT_BYTES_PER_EDGE = 212
#: Candidate edges assumed when the caller does not know them yet (before 02a has run).
DEFAULT_PLANNING_EDGES = 500_000


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
    two_paths = BYTES_PER_TWO_PATH * two_path_entries(n_genes, edges)
    network = BYTES_PER_EDGE * edges + two_paths
    components = {
        "python": PYTHON_BASELINE_BYTES,
        "imports": IMPORTS_BYTES,
        "genes": BYTES_PER_GENE * int(n_genes),
        # the peak is in the network phase or, when larger, the reading phase (chunks + kept edges)
        "edges": BYTES_PER_EDGE * edges,
        "clustering_two_paths": two_paths,
        "reading_beyond_network": max(0, reading - network),
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
