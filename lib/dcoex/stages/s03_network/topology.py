"""Global topology of an undirected network over N genes, vectorised with scipy.sparse.

Definitions follow networkx where one exists (see docs/stage03.md): local clustering as
``networkx.clustering``, the average over the active (degree >= 1) nodes as
``networkx.average_clustering`` of the edge-induced graph, ``transitivity``,
``number_connected_components`` of the active nodes and the symmetrised degree
assortativity of ``networkx.degree_assortativity_coefficient``.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

# cap on the two-path entries (A_rows @ A) per clustering chunk, and when the bit adjacency
# may be used, both priced by the estimator
from dcoex.stages.s03_network.estimator import TWO_PATH_CHUNK_ENTRIES, bitset_bytes

#: Measured cost (ns on the development machine) of one 64-bit word of a bit-adjacency
#: intersection and of one two-path entry of the sparse products: ``triangles`` takes the
#: cheaper (3.5 M edges over 12,625 genes: 4.1 s against 8.9 s).
WORD_NS = 6.0
TWO_PATH_NS = 10.0
#: Bits set at once while the bit adjacency is built (a bool block), and 64-bit words of
#: gathered rows per intersection chunk.
BUILD_BITS = 1 << 22
CHUNK_WORDS = 1 << 19

PERCENTILES = (25, 50, 75, 90, 95, 99)


def adjacency(gene_i: np.ndarray, gene_j: np.ndarray, n_genes: int) -> sparse.csr_matrix:
    """Symmetric 0/1 CSR adjacency (int32 data) of the edge list (i < j, no duplicates)."""
    rows = np.concatenate([gene_i, gene_j]).astype(np.int32, copy=False)
    cols = np.concatenate([gene_j, gene_i]).astype(np.int32, copy=False)
    data = np.ones(rows.size, dtype=np.int32)
    adj = sparse.csr_matrix((data, (rows, cols)), shape=(n_genes, n_genes))
    adj.sum_duplicates()
    return adj


def node_degrees(gene_i: np.ndarray, gene_j: np.ndarray, n_genes: int) -> np.ndarray:
    """Degree of every gene (int32, length N)."""
    deg = np.bincount(gene_i, minlength=n_genes) + np.bincount(gene_j, minlength=n_genes)
    return deg.astype(np.int32)


def _row_blocks(work: np.ndarray, n: int) -> list[tuple[int, int]]:
    """Consecutive row ranges whose summed work (bounded by n per row) stays near the cap."""
    work = np.minimum(work, n)
    chunk_id = (np.cumsum(work) - work) // TWO_PATH_CHUNK_ENTRIES
    cuts = np.flatnonzero(np.diff(chunk_id)) + 1
    return list(zip(np.r_[0, cuts].tolist(), np.r_[cuts, work.size].tolist()))


def triangles(adj: sparse.csr_matrix, degrees: np.ndarray) -> np.ndarray:
    """Number of triangles through each node (int64), as networkx.triangles.

    Edges are oriented from the lower to the higher (degree, index) rank (U, a DAG whose
    out-degrees are at most sqrt(2E)); each triangle u->v->w with u->w is counted once as
    C1 = (U U) ∘ U (row sums: first node, column sums: last node) and once for its middle
    node as C2 = (U^T U) ∘ U (row sums). Products are formed in row blocks holding at
    most about TWO_PATH_CHUNK_ENTRIES two-path entries. When the estimator allows the bit
    adjacency (``bitset_bytes``) and its intersections cost less than those two-path entries
    (WORD_NS, TWO_PATH_NS), the counts come from it instead (``_bit_triangles``): the same
    integers.
    """
    n = adj.shape[0]
    tri = np.zeros(n, dtype=np.int64)
    if adj.nnz == 0:
        return tri
    rank = np.empty(n, dtype=np.int64)
    rank[np.lexsort((np.arange(n), degrees))] = np.arange(n)
    coo = adj.tocoo()
    keep = rank[coo.row] < rank[coo.col]
    first, last = coo.row[keep], coo.col[keep]
    del coo, keep
    out_deg = np.bincount(first, minlength=n).astype(np.int64)
    two_paths = int(out_deg[last].sum() + out_deg[first].sum())  # the entries of C1 and C2 below
    words = first.size * ((n + 63) // 64)
    if bitset_bytes(n, first.size) and words * WORD_NS < two_paths * TWO_PATH_NS:
        return _bit_triangles(adj)
    up = sparse.csr_matrix((np.ones(first.size, dtype=np.int32), (first, last)), shape=(n, n))
    del first, last
    up_t = up.T.tocsr()
    work_first, work_middle = up @ out_deg, up_t @ out_deg
    for start, stop in _row_blocks(work_first, n):
        block = up[start:stop]
        closed = (block @ up).multiply(block).tocsr()
        tri[start:stop] += np.asarray(closed.sum(axis=1)).ravel().astype(np.int64)
        tri += np.bincount(closed.indices, weights=closed.data, minlength=n).astype(np.int64)
    for start, stop in _row_blocks(work_middle, n):
        closed = (up_t[start:stop] @ up).multiply(up[start:stop])
        tri[start:stop] += np.asarray(closed.sum(axis=1)).ravel().astype(np.int64)
    return tri


def _bit_triangles(adj: sparse.csr_matrix) -> np.ndarray:
    """Triangles through each node from the bit adjacency (N rows of ⌈N/64⌉ uint64 words):
    an edge's support |N(i) ∩ N(j)| is the popcount of row i AND row j, and a node's
    triangles are half the supports of its edges. The working buffers are allocated once
    (the stage maps large allocations afresh each time: memfit.heap)."""
    n = adj.shape[0]
    width = (n + 63) // 64
    rows = np.empty((n, width), dtype=np.uint64)
    step = max(1, BUILD_BITS // (width * 64))
    block = np.zeros((min(step, n), width * 64), dtype=bool)
    for a in range(0, n, step):
        b = min(n, a + step)
        lo, hi = adj.indptr[a], adj.indptr[b]
        at = (np.repeat(np.arange(b - a), np.diff(adj.indptr[a : b + 1])), adj.indices[lo:hi])
        block[at] = True
        rows[a:b] = np.packbits(block[: b - a], axis=1, bitorder="little").view(np.uint64)
        block[at] = False
    upper = sparse.triu(adj, k=1, format="coo")
    gene_i, gene_j = upper.row.astype(np.int64), upper.col.astype(np.int64)
    del upper
    support = np.empty(gene_i.size, dtype=np.int64)
    chunk = max(1, CHUNK_WORDS // width)
    left, right = np.empty((chunk, width), np.uint64), np.empty((chunk, width), np.uint64)
    counts = np.empty((chunk, width), np.uint8)
    for a in range(0, gene_i.size, chunk):
        m = min(chunk, gene_i.size - a)
        np.take(rows, gene_i[a : a + m], axis=0, out=left[:m], mode="clip")  # "raise" would buffer
        np.take(rows, gene_j[a : a + m], axis=0, out=right[:m], mode="clip")
        np.bitwise_and(left[:m], right[:m], out=left[:m])
        np.bitwise_count(left[:m], out=counts[:m])
        counts[:m].sum(axis=1, dtype=np.int64, out=support[a : a + m])
    both = np.bincount(gene_i, support, minlength=n) + np.bincount(gene_j, support, minlength=n)
    return (np.rint(both).astype(np.int64)) // 2


def local_clustering(degrees: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """c_i = 2 t_i / (d_i (d_i - 1)) for d_i >= 2, else 0 (float64), as networkx.clustering."""
    deg = degrees.astype(np.float64)
    pairs = deg * (deg - 1.0)
    out = np.zeros(deg.size, dtype=np.float64)
    ok = degrees >= 2
    out[ok] = 2.0 * tri[ok] / pairs[ok]
    return out


def degree_assortativity(gene_i: np.ndarray, gene_j: np.ndarray, degrees: np.ndarray) -> float:
    """Pearson r of the end degrees over both orientations of every edge (networkx's).

    NaN when there are no edges or the degrees at edge ends do not vary.
    """
    if gene_i.size == 0:
        return float("nan")
    x = np.concatenate([degrees[gene_i], degrees[gene_j]]).astype(np.float64)
    y = np.concatenate([degrees[gene_j], degrees[gene_i]]).astype(np.float64)
    x -= x.mean()
    y -= y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    if denom <= 0 or not np.isfinite(denom):
        return float("nan")
    return float((x * y).sum() / denom)


def power_law_fit(active_degrees: np.ndarray) -> tuple[float, float]:
    """(gamma, R^2) of log10(count) ~ log10(degree) over degree values held by >= 2 nodes.

    The established pipeline's heuristic: needs >= 10 active nodes and >= 5 such degree
    values, otherwise (NaN, NaN); gamma = -slope.
    """
    nan = float("nan")
    if active_degrees.size < 10:
        return nan, nan
    values, counts = np.unique(active_degrees, return_counts=True)
    keep = counts >= 2
    if keep.sum() < 5:
        return nan, nan
    x = np.log10(values[keep].astype(np.float64))
    y = np.log10(counts[keep].astype(np.float64))
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = ((y - y.mean()) ** 2).sum()
    r2 = 1.0 - (residual**2).sum() / total if total > 0 else nan
    return float(-slope), float(r2)


def global_topology(
    gene_i: np.ndarray, gene_j: np.ndarray, n_genes: int, undefined: float = float("nan")
) -> tuple[dict[str, float | int | bool], np.ndarray]:
    """Topology attributes of the network given by an edge list, and the degrees (int32, N).

    ``undefined`` replaces every value that is undefined (statistics over no active node,
    a quotient with a zero denominator, an impossible fit).
    """
    gene_i = np.asarray(gene_i, dtype=np.int64)
    gene_j = np.asarray(gene_j, dtype=np.int64)
    n_edges = int(gene_i.size)
    deg = node_degrees(gene_i, gene_j, n_genes)
    active = deg > 0
    n_active = int(active.sum())
    act_deg = deg[active].astype(np.float64)

    def ud(value: float) -> float:
        return undefined if not np.isfinite(value) else float(value)

    attrs: dict[str, float | int | bool] = {
        "n_nodes_total": int(n_genes),
        "n_nodes_active": n_active,
        "fraction_active": n_active / n_genes if n_genes else undefined,
        "n_edges": n_edges,
        "density": 2.0 * n_edges / (n_genes * (n_genes - 1)) if n_genes > 1 else undefined,
        "avg_degree": 2.0 * n_edges / n_genes if n_genes else undefined,
        "avg_degree_active": 2.0 * n_edges / n_active if n_active else undefined,
        "max_degree": int(deg.max()) if n_genes else 0,
    }
    if n_active:
        attrs["min_degree"] = int(act_deg.min())
        attrs["median_degree"] = float(np.median(act_deg))
        attrs["std_degree"] = float(act_deg.std())
        for q, value in zip(PERCENTILES, np.percentile(act_deg, PERCENTILES)):
            attrs[f"degree_p{q}"] = float(value)
    else:
        attrs["min_degree"] = 0
        for name in ["median_degree", "std_degree"] + [f"degree_p{q}" for q in PERCENTILES]:
            attrs[name] = undefined
    gamma, r2 = power_law_fit(deg[active])
    attrs["power_law_exponent"] = ud(gamma)
    attrs["power_law_r_squared"] = ud(r2)
    attrs["is_scale_free"] = bool(np.isfinite(gamma) and 2.0 <= gamma <= 3.5 and r2 > 0.8)

    adj = adjacency(gene_i, gene_j, n_genes)
    tri = triangles(adj, deg)
    clust = local_clustering(deg, tri)
    pairs = (deg.astype(np.float64) * (deg - 1.0)).sum()
    attrs["n_triangles"] = int(tri.sum() // 3)
    attrs["global_clustering"] = float(clust[active].mean()) if n_active else undefined
    attrs["transitivity"] = float(2.0 * tri.sum() / pairs) if pairs > 0 else 0.0
    n_comp, labels = csgraph.connected_components(adj, directed=False)
    sizes = np.bincount(labels[active], minlength=n_comp) if n_active else np.zeros(0, np.int64)
    sizes = sizes[sizes > 0]
    attrs["n_components"] = int(sizes.size)
    attrs["largest_component_size"] = int(sizes.max()) if sizes.size else 0
    attrs["largest_component_fraction"] = attrs["largest_component_size"] / n_genes if n_genes else undefined
    attrs["assortativity"] = ud(degree_assortativity(gene_i, gene_j, deg))
    return attrs, deg
