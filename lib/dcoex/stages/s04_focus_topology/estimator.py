"""Memory estimator of stage 04 (focus-gene topology across reference genes).

Peak RSS = interpreter and imports + per gene of the run (names, the focus lookup, the
summary's columns) + one chunk of edges and its temporaries + the result array
(reference genes × focus genes × metrics, float64) and its integer copies. Files are read
one at a time, edges in chunks: nothing grows with the number of edges.
"""

from __future__ import annotations

from dcoex.edge_files import base_read_bytes
from memfit.estimate import MemoryEstimate
from memfit.units import MiB

#: Interpreter with numpy, h5py, click, tqdm and the 03 network reader (dcoex.edge_files with
#: scipy.special for the derived p-values): 63 MiB measured after the imports.
PYTHON_BYTES = 64 * MiB
#: HDF5 library buffers of the open files.
HDF5_BYTES = 6 * MiB
BYTES_PER_GENE = 400
#: Bytes per candidate edge of one chunk: the network file is read through its 02a/02b files
#: (dcoex.stages.s03_network.io.iter_network_edges), a chunk of EDGE_CHUNK candidate rows with
#: every joined column (~110 B), the network columns (~60 B), the derived p/q temporaries and the
#: per-end temporaries.
BYTES_PER_CHUNK_EDGE = 300
#: Bytes per (reference gene, focus gene, metric) value: float64, the established int32 copies,
#: the per-file rows and HDF5 write buffers (measured 300 x 300 x 10: 69 MiB in all).
BYTES_PER_VALUE = 24


def estimate(n_genes: int, n_ref_genes: int | None = None, n_focus: int = 10, n_edges: int | None = None,
             **_: object) -> MemoryEstimate:
    """Predicted peak RSS (bytes) of stage 04: ``n_ref_genes`` network files (default N),
    ``n_focus`` focus genes; ``n_edges`` (the largest file's) is recorded: edges are read a
    whole chunk of candidate rows at a time."""
    from dcoex.stages.s04_focus_topology.science import EDGE_CHUNK, METRICS

    refs = int(n_genes) if n_ref_genes is None else int(n_ref_genes)
    chunk = EDGE_CHUNK  # candidate rows per chunk: a file's candidates are not known here, only its network edges
    components = {
        "python": PYTHON_BYTES,
        "hdf5": HDF5_BYTES,
        "genes": BYTES_PER_GENE * int(n_genes),
        "edge_chunk": BYTES_PER_CHUNK_EDGE * chunk,
        "base_ranks": base_read_bytes(n_genes),  # a dense 02a file's ranks (the "ranks" r form): a bound
        "values": BYTES_PER_VALUE * refs * int(n_focus) * len(METRICS),
    }
    return MemoryEstimate("04", components, {"n_genes": int(n_genes), "n_ref_genes": refs, "n_focus": int(n_focus),
                                             "n_edges": n_edges})


def output_bytes(n_ref_genes: int, n_focus: int) -> int:
    """Bytes of ``focus_gene_topology.h5`` and ``.tsv`` (upper bound): the values (float64,
    reference × focus × metrics), the three int32 degree matrices, and a TSV row (~16
    characters per metric) per (reference, focus) pair, plus names and HDF5 structure."""
    from dcoex.stages.s04_focus_topology.science import METRICS

    cells = int(n_ref_genes) * int(n_focus)
    return cells * (len(METRICS) * 8 + 3 * 4 + 32 + 16 * len(METRICS)) + 64 * 1024
