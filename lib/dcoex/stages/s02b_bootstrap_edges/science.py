"""Stage 02b science: bootstrap replicates of the selected edges' Δ = r_H − r_L.

A bootstrap resample of a group repeats some of its samples (positions drawn with
replacement). Its Spearman correlation is the Pearson correlation of the resample's
average ranks, where duplicated samples are ties. Only the genes of the selected edges are
ranked:

- a resample is a vector of counts c_q over the k positions of the group (Σ c_q = k_r);
- with u = 2·rank − (k_r + 1), the doubled centred average rank of a gene's value at
  position p in the resample is u_p = Σ_q c_q·sign(x_p − x_q) (values below count +1, above
  −1, ties 0): an integer, for all genes and replicates at once one matrix product of the
  counts (B, k) with the genes' sign matrices (g·k, k) — or, when those would exceed
  SIGN_WORK_BYTES (large k and many genes), the same integers from cumulative counts along
  each gene's sorted order;
- r_ij = Σ_p c_p·u_i,p·u_j,p / sqrt(Σ c u_i² · Σ c u_j²): exactly the correlation over the
  k_r resampled columns. The sums are exact integers in float32 (float64 when
  k_r(k_r−1)² >= 2**24), so r does not depend on how edges are tiled or computed.

Edges come in bands (contiguous runs of the 02a file's ascending pair index: whole gene
rows), each cut into 2-D tiles of its rows × a run of columns (column_tiles), so a tile
ranks the resamples of few genes; within a tile, replicates in blocks, so each edge's B
replicates are complete when its tile ends (memory O(tile × B + band)). In a tile, rows (gene_i) and columns (gene_j) are
ordered by degree and the rectangle of the top rows × top columns that minimises
R·C + GATHER_COST_RATIO·(edges outside it) is computed by matrix products per replicate
(BLAS; the whole tile when it is dense), the other edges by gathered dot products. On the
host the core's products and its edges' Δ are one compiled pass per block of core rows, in
cache (kernels.core_deltas); a GPU backend (dcoex.backend) computes the products and
gathers the core pairs on its device. The per-edge counts and sums of the statistics are
compiled too (kernels.row_moments, numpy's summation order). A gene
constant within a resample has no correlation: its replicate is NaN and the statistics use
the finite replicates (``n_finite``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
from threadpoolctl import threadpool_limits as blas_limit

from dcoex.backend import Backend, NumpyBackend
from dcoex.ranks import exact_dtype, tie_bounds
from dcoex.stages.s02b_bootstrap_edges import kernels
from dcoex.stages.s02b_bootstrap_edges.estimator import (
    CORE_BLOCK_BYTES,
    GATHER_COST_RATIO,
    GATHER_WORK_BYTES,
    RANK_WORK_BYTES,
    STATS_WORK_BYTES,
    per_replicate_bytes,
    replicate_block,
    signs_fit,
)
from dcoex.stats import bootstrap_bias, bootstrap_pvalue

#: Fixed cost of a core matrix product (per replicate), in pairs: small cores are not worth it.
CORE_OVERHEAD_PAIRS = 4096
#: Candidate core sizes tried per axis (geometric grid up to all rows / columns).
CORE_GRID = 40


def device_bytes(edge_chunk: int, *, kr_low: int, kr_high: int) -> dict[str, int]:
    """GPU bytes of one tile of ``edge_chunk`` edges on a gathering backend (upper bounds):
    the core rows and columns of a replicate block (at most the host's RANK_WORK_BYTES of
    work), the core product of a step of replicates (GATHER_WORK_BYTES, or one replicate's
    product, at most GATHER_COST_RATIO·c pairs: a larger core costs more than gathering),
    its gathered sums (no more than the product) and the pairs' indices."""
    itemsize = max(np.dtype(exact_dtype(kr, kr - 1)).itemsize for kr in (int(kr_low), int(kr_high)))
    product = max(GATHER_WORK_BYTES, int(GATHER_COST_RATIO * int(edge_chunk)) * itemsize)
    return {"core_ranks": RANK_WORK_BYTES, "core_product": product, "core_sums": product,
            "pairs": 2 * 8 * int(edge_chunk)}


def positions_in_group(samples: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Positions of bootstrap sample indices inside the ascending group; ValueError if absent."""
    pos = np.searchsorted(group, samples)
    pos = np.clip(pos, 0, group.size - 1)
    if not np.array_equal(group[pos], samples):
        raise ValueError("bootstrap indices contain samples outside the group")
    return pos


def work_buffer(pool: dict[str, np.ndarray], name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """A work array from ``pool`` (kept across replicate blocks and tiles: first-touch page
    faults are costly), grown when too small."""
    size = int(np.prod(shape))
    held = pool.get(name)
    if held is None or held.size < size or held.dtype != dtype:
        pool.pop(name, None)
        held = pool[name] = np.empty(size, dtype=dtype)
    return held[:size].reshape(shape)


class ResampleSide:
    """One group (LOW or HIGH) of one reference gene for a set of genes: their sign
    matrices within the group (or, when those exceed SIGN_WORK_BYTES, their sort order for
    ranks from cumulative counts) and the resamples' counts."""

    def __init__(
        self, x_group: np.ndarray, boot_positions: np.ndarray, pool: dict[str, np.ndarray] | None = None,
        name: str = "side", genes_bound: int | None = None,
    ) -> None:
        """``x_group``: (g, k) values of the genes in the group's samples; ``boot_positions``:
        (B, k_r) positions (0..k−1) of each resample; ``pool``/``name``: where work arrays
        are kept; ``genes_bound`` (default g): the sign matrices are used only if they fit for
        this many genes — the planned tile's bound, as the estimator counts them, so a tile of
        few genes does not hold sign matrices its estimate did not count."""
        self.pool = {} if pool is None else pool
        self.name = name
        self.x = np.atleast_2d(x_group)
        self.n_genes, self.k = self.x.shape
        self.n_boot, self.kr = boot_positions.shape
        flat = (np.arange(self.n_boot)[:, None] * self.k + boot_positions).ravel()
        self.dtype = exact_dtype(self.kr, self.kr - 1)
        counts = np.bincount(flat, minlength=self.n_boot * self.k).reshape(self.n_boot, self.k)
        self.counts = counts.astype(self.dtype)
        self.counts32 = counts.astype(np.float32)  # |u| <= k_r: exact in float32
        self._signs: np.ndarray | None = None
        if signs_fit(self.n_genes if genes_bound is None else max(int(genes_bound), self.n_genes), self.k):
            signs = np.empty((self.n_genes, self.k, self.k), np.float32)  # in place: no temporaries of its size
            np.subtract(self.x[:, :, None], self.x[:, None, :], out=signs, casting="unsafe")
            np.sign(signs, out=signs)
            self._signs = signs.reshape(self.n_genes * self.k, self.k)
        else:  # sign matrices too large to keep: ranks from cumulative counts in sorted order
            self.order = np.argsort(self.x, axis=1, kind="stable")
            first, last = tie_bounds(np.take_along_axis(self.x, self.order, axis=1))
            sorted_position = np.empty_like(self.order)
            np.put_along_axis(sorted_position, self.order, np.arange(self.k), axis=1)
            self.rank_index = np.arange(self.n_genes)[:, None] * self.k + sorted_position
            self.tied = np.flatnonzero(np.any(first != last, axis=1))
            self.first, self.last = first[self.tied], last[self.tied]
            self.tie_row = np.full(self.n_genes, -1, np.int64)
            self.tie_row[self.tied] = np.arange(self.tied.size)

    @property
    def uses_sorted_ranks(self) -> bool:
        """True when ranks come from cumulative counts (sign matrices too large to keep)."""
        return self._signs is None

    def integer_ranks(self, b0: int, b1: int) -> tuple[np.ndarray, np.ndarray]:
        """(u, scale) of replicates b0..b1: u (nb, g, k) = 2·rank − (k_r + 1) of each gene's
        value at each group position in the resample (integers; positions not drawn carry
        count 0), scale (nb, g) = 1/sqrt(Σ_p c_p·u_p²), NaN for a gene constant in the
        resample. r_ij = (Σ_p c_p·u_i,p·u_j,p)·scale_i·scale_j, an exact integer sum."""
        nb, g, k = b1 - b0, self.n_genes, self.k
        counts = self.counts32[b0:b1]
        u = work_buffer(self.pool, self.name, (nb, g, k), np.float32)
        if self._signs is not None:
            kernels.rank_products(counts, self._signs.T, u.reshape(nb, g * k), numba.get_num_threads())
        else:
            kernels.sorted_ranks(counts, self.order, self.tie_row, self.first, self.last, np.float32(self.kr), u)
        u = u.astype(self.dtype, copy=False)
        scale = np.empty((nb, g), np.float32)
        kernels.rank_scales(u, counts, scale)  # exact integer sums Σ c·u²
        return u, scale


def edge_correlations(u: np.ndarray, counts: np.ndarray, li: np.ndarray, lj: np.ndarray) -> np.ndarray:
    """Σ_p c_p·u_i,p·u_j,p, (nb, E), of edges (li, lj) from integer ranks u (nb, g, k) and
    counts (nb, k) (kernels.gathered_sums: exact integer products and sums)."""
    out = np.empty((u.shape[0], li.size), dtype=u.dtype)
    kernels.gathered_sums(u, np.ascontiguousarray(counts, dtype=u.dtype), li, lj, out)
    return out


def _degree_order(genes: np.ndarray, n_genes: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(genes by decreasing degree, each gene's position in that order, genes with edges)."""
    degree = np.bincount(genes, minlength=n_genes)
    order = np.argsort(-degree, kind="stable")
    position = np.empty(n_genes, dtype=np.int64)
    position[order] = np.arange(n_genes)
    return order, position, int(np.count_nonzero(degree))


def _grid(n: int) -> np.ndarray:
    """Candidate prefix sizes 1..n (geometric, n included)."""
    return np.unique(np.concatenate([np.geomspace(1, max(n, 1), CORE_GRID).round().astype(np.int64), [n]]))


class EdgeLayout:
    """Edges of a tile split into a dense core rectangle and the rest.

    Rows (gene_i) and columns (gene_j) are ordered by degree; the core is the rectangle of
    the first R rows × first C columns that minimises R·C + CORE_OVERHEAD_PAIRS +
    GATHER_COST_RATIO·(edges outside it) (no core if gathering every edge is cheaper). Core
    edges come from one matrix product per replicate (BLAS); the others from gathered dot
    products. Both are exact integer sums, so r does not depend on the layout, the tile or
    the BLAS threads. ``order`` lists the tile's genes as they are ranked: the core rows, the
    core columns (a gene that is both appears twice), then the others, so the core's rows and
    columns are the slices [0, n_rows) and [n_rows, n_rows + n_cols) of the ranks; every
    index kept here (gene_i, gene_j, rest_i, rest_j, core_rows, core_cols) is a position in it.
    """

    def __init__(self, li: np.ndarray, lj: np.ndarray, n_genes: int, pool: dict[str, np.ndarray] | None = None) -> None:
        row_order, row_pos, n_rows = _degree_order(li, n_genes)
        col_order, col_pos, n_cols = _degree_order(lj, n_genes)
        a, b = row_pos[li], col_pos[lj]
        rows, cols = _grid(n_rows), _grid(n_cols)
        # inside[m, n] = edges with a < rows[m] and b < cols[n]
        ia = np.searchsorted(rows, a, side="right")
        ib = np.searchsorted(cols, b, side="right")
        hist = np.bincount(ia * (cols.size + 1) + ib, minlength=(rows.size + 1) * (cols.size + 1))
        inside = hist.reshape(rows.size + 1, cols.size + 1).cumsum(0).cumsum(1)[: rows.size, : cols.size]
        cost = rows[:, None] * cols[None, :] + CORE_OVERHEAD_PAIRS + GATHER_COST_RATIO * (li.size - inside)
        n_r = n_c = 0
        if li.size and cost.min() < GATHER_COST_RATIO * li.size:
            m, n = np.unravel_index(int(np.argmin(cost)), cost.shape)
            n_r, n_c = int(rows[m]), int(cols[n])
        in_core = (a < n_r) & (b < n_c)
        # core rows by gene, core edges by row: each run of rows owns a run of core edges
        core_rows, core_cols = np.sort(row_order[:n_r]), col_order[:n_c]
        core_row = np.searchsorted(core_rows, li[in_core])
        by_row = np.argsort(core_row, kind="stable")
        self.core_edges = np.flatnonzero(in_core)[by_row]
        self.core_row, self.core_col = core_row[by_row], b[in_core][by_row]
        self.core_ptr = np.searchsorted(self.core_row, np.arange(n_r + 1))
        # the genes as ranked: core rows, core columns (a gene that is both is ranked twice),
        # the others, so the core's rows and columns are contiguous slices of the ranks
        others = np.setdiff1d(np.arange(n_genes), np.concatenate([core_rows, core_cols]), assume_unique=False)
        self.order = np.concatenate([core_rows, core_cols, others]).astype(np.int64)
        position = np.empty(n_genes, dtype=np.int64)
        position[self.order[::-1]] = np.arange(self.order.size - 1, -1, -1)  # first occurrence
        self.n_rows, self.n_cols = n_r, n_c
        self.core_rows, self.core_cols = np.arange(n_r), n_r + np.arange(n_c)  # positions in the ranked order
        self.rest_edges = np.flatnonzero(~in_core)
        self.rest_i, self.rest_j = position[li[~in_core]], position[lj[~in_core]]
        self.rest_index = np.arange(self.rest_edges.size)
        self.core_index = np.arange(self.core_edges.size)
        self.gene_i, self.gene_j = position[li], position[lj]
        self._pairs: tuple | None = None  # the core pairs (row, column) on a gathering backend's device
        self.n_edges = li.size
        self._buffers = {} if pool is None else pool

    @property
    def core_pairs(self) -> int:
        """Pairs of the core rectangle (its matrix product's output size)."""
        return self.core_rows.size * self.core_cols.size

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        return work_buffer(self._buffers, name, shape, dtype)

    def _core_factors(self, name: str, u: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The core rows (weighted by the counts) and columns of u (nb, g, k), in pool buffers."""
        nb, k = u.shape[0], u.shape[2]
        rows = self._buffer(f"rows_{name}", (nb, self.core_rows.size, k), u.dtype)
        np.take(u, self.core_rows, axis=1, out=rows)
        rows *= counts[:, None, :]
        cols = self._buffer(f"cols_{name}", (nb, self.core_cols.size, k), u.dtype)
        np.take(u, self.core_cols, axis=1, out=cols)
        return rows, cols

    def deltas_into(self, high: Side, low: Side, out: np.ndarray, *, backend: Backend) -> None:
        """Δ = r_H − r_L (nb, E) float32 of the tile's edges into ``out``, from each group's
        (u, scale, counts): integer ranks u (nb, g, k), their scale (nb, g) and the resample
        counts (nb, k) (see ResampleSide.integer_ranks); r = (float32(Σ c·u_i·u_j)·scale_i)·scale_j.
        On the host the core products and the Δ of their edges are one fused pass per block
        of rows (kernels.core_deltas); a backend that gathers on its device returns the core
        edges' sums, scaled here group by group."""
        for (u, scale, counts), subtract in ((high, False), (low, True)):
            if self.rest_edges.size:
                raw = edge_correlations(u, counts, self.rest_i, self.rest_j)
                kernels.scale_into(raw, self.rest_index, self.rest_edges, scale, self.gene_i, self.gene_j, out,
                                   subtract)
        if not self.core_edges.size:
            return
        if not backend.gathers_on_device:
            (u_h, scale_h, counts_h), (u_l, scale_l, counts_l) = high, low
            itemsize = max(u_h.itemsize, u_l.itemsize)
            row_block = max(1, CORE_BLOCK_BYTES // (2 * itemsize * self.n_cols))
            kernels.core_deltas(u_h, counts_h, scale_h, u_l, counts_l, scale_l, self.n_rows, self.n_cols,
                                self.core_ptr, self.core_col, self.core_edges, out, row_block,
                                4 * numba.get_num_threads())
            return
        if self._pairs is None:
            self._pairs = (backend.put(self.core_row), backend.put(self.core_col))
        for (u, scale, counts), subtract in ((high, False), (low, True)):
            nb = u.shape[0]
            rows, cols = self._core_factors("", u, counts)
            step = int(max(1, min(nb, GATHER_WORK_BYTES // (u.itemsize * self.core_pairs))))  # the device's product
            raw = self._buffer("products", (step * self.core_edges.size,), u.dtype)
            for b0 in range(0, nb, step):
                b1 = min(b0 + step, nb)
                part = raw[: (b1 - b0) * self.core_edges.size].reshape(b1 - b0, self.core_edges.size)
                backend.products(rows[b0:b1], cols[b0:b1], pairs=self._pairs, out=part)
                kernels.scale_into(part, self.core_index, self.core_edges, scale[b0:b1], self.gene_i, self.gene_j,
                                   out[b0:b1], subtract)


#: One group's (u, scale, counts) of a replicate block (ResampleSide.integer_ranks, counts).
Side = tuple[np.ndarray, np.ndarray, np.ndarray]


def replicate_deltas(
    x_low: np.ndarray, x_high: np.ndarray, pos_low: np.ndarray, pos_high: np.ndarray,
    *,
    gene_i: np.ndarray, gene_j: np.ndarray, out: np.ndarray | None = None,
    pool: dict[str, np.ndarray] | None = None, backend: Backend | None = None,
) -> np.ndarray:
    """Δ^b = r_H^b − r_L^b, (E, B) float32, of edges (gene_i, gene_j) given as rows of
    ``x_low`` (g, k_L) / ``x_high`` (g, k_H), the genes' values in the LOW/HIGH samples;
    ``pos_low`` (B, k_rL) / ``pos_high`` (B, k_rH) are resample positions in the groups.

    The result is the transposed view of a (B, E) array, ``out[:, :E]`` when ``out`` (a
    (B, >= E) float32 buffer, reused across tiles) is given; ``pool`` keeps the work arrays
    for the next tile; ``backend`` computes the core products (default numpy on the host).
    The ranks come from sign matrices only when they fit for min(g, 2 × the buffer's edges)
    genes (the estimator's bound of a tile's genes), else from the sorted order."""
    pool = {} if pool is None else pool
    backend = NumpyBackend() if backend is None else backend
    genes = np.unique(np.concatenate([gene_i, gene_j]))
    layout = EdgeLayout(np.searchsorted(genes, gene_i), np.searchsorted(genes, gene_j), genes.size, pool)
    ranked = genes[layout.order]  # core rows, core columns, the others (EdgeLayout)
    bound = min(x_low.shape[0], 2 * (gene_i.size if out is None else max(out.shape[1], gene_i.size)))
    low = ResampleSide(x_low[ranked], pos_low, pool, "low", genes_bound=bound)
    high = ResampleSide(x_high[ranked], pos_high, pool, "high", genes_bound=bound)
    n_edges, n_boot = gene_i.size, low.n_boot
    by_replicate = np.empty((n_boot, n_edges), dtype=np.float32) if out is None else out[:, :n_edges]
    per_rep = per_replicate_bytes(n_genes=ranked.size, k_low=low.k, k_high=high.k,
                                  itemsize=max(np.dtype(low.dtype).itemsize, np.dtype(high.dtype).itemsize),
                                  core_genes=(layout.n_rows + layout.n_cols) if backend.gathers_on_device else 0,  # copies
                                  n_edges=n_edges,
                                  cumulative=low.uses_sorted_ranks or high.uses_sorted_ranks)
    step = replicate_block(per_replicate=per_rep, n_boot=n_boot)
    # BLAS single-threaded: its calls run inside numba's threads (rank products, core
    # products), and idle BLAS workers spinning beside them cost numba's threads up to half the CPU
    with blas_limit(1 if numba.get_num_threads() > 1 else None):
        for b0 in range(0, n_boot, step):
            b1 = min(b0 + step, n_boot)
            layout.deltas_into((*high.integer_ranks(b0, b1), high.counts[b0:b1]),
                               (*low.integer_ranks(b0, b1), low.counts[b0:b1]), by_replicate[b0:b1], backend=backend)
    return by_replicate.T


def column_tiles(gene_i: np.ndarray, gene_j: np.ndarray, tile_edges: int) -> list[np.ndarray]:
    """A band's edges (ascending pairs: whole gene rows) cut into 2-D tiles of at most
    ``tile_edges`` edges: ordered by column (gene_j), then row, and cut into runs, so a tile
    holds the band's rows × a run of columns. Returns each tile's positions in the band,
    ascending (pair order). A tile ranks the genes of its rows and columns only: a band of R
    rows cut this way ranks ~R + C genes per tile of R·C pairs, where a tile of whole rows
    (C = all N genes) ranks all of them for a few rows."""
    n = int(gene_i.size)
    size = max(1, int(tile_edges))
    if n <= size:
        return [np.arange(n)]
    order = np.lexsort((gene_i, gene_j))
    return [np.sort(order[s : s + size]) for s in range(0, n, size)]


def bootstrap_band(
    x_low: np.ndarray, x_high: np.ndarray, pos_low: np.ndarray, pos_high: np.ndarray,
    *,
    gene_i: np.ndarray, gene_j: np.ndarray, delta_base: np.ndarray, ci_alpha: float, tile_edges: int,
    buffer: np.ndarray, pool: dict[str, np.ndarray], backend: Backend | None = None,
) -> BootStats:
    """boot_stats of a band of edges (ascending pairs), computed tile by tile (column_tiles):
    each tile's B replicate Δ's (replicate_deltas, into ``buffer``, a (B, >= tile) float32
    array) and statistics, placed at the tile's positions. Every edge's replicates are exact
    integer sums, so the statistics do not depend on the tiling."""
    tiles = column_tiles(gene_i, gene_j, tile_edges)
    if len(tiles) == 1:
        deltas = replicate_deltas(x_low, x_high, pos_low, pos_high, gene_i=gene_i, gene_j=gene_j, out=buffer,
                                  pool=pool, backend=backend)
        return boot_stats(deltas, delta_base, ci_alpha)
    fields = BootStats.__dataclass_fields__
    band: dict[str, np.ndarray] = {}
    for at in tiles:
        deltas = replicate_deltas(x_low, x_high, pos_low, pos_high, gene_i=gene_i[at], gene_j=gene_j[at], out=buffer,
                                  pool=pool, backend=backend)
        stats = boot_stats(deltas, delta_base[at], ci_alpha)
        for name in fields:
            part = getattr(stats, name)
            if name not in band:
                band[name] = np.empty(gene_i.size, dtype=part.dtype)
            band[name][at] = part
    return BootStats(**band)


@dataclass
class BootStats:
    """Per-edge bootstrap statistics (float32 except pval float64, n_finite and n_minority int32)."""

    delta_mean: np.ndarray
    delta_std: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    bias: np.ndarray
    bootstrap_pval: np.ndarray
    n_finite: np.ndarray
    n_minority: np.ndarray


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy.percentile's linear interpolation (same formula, float64)."""
    diff = b - a
    return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


#: Thread pools of _sort_rows by number of workers (made on first use, kept for the process).
_SORT_POOLS: dict[int, ThreadPoolExecutor] = {}


def _sort_rows(block: np.ndarray, workers: int) -> None:
    """Sort each row of ``block`` in place (numpy's sort, NaN last), runs of rows on
    ``workers`` threads (numpy releases the GIL while it sorts)."""
    if workers < 2 or block.shape[0] < 2 * workers:
        block.sort(axis=1)
        return
    if workers not in _SORT_POOLS:
        _SORT_POOLS[workers] = ThreadPoolExecutor(max_workers=workers)
    pool = _SORT_POOLS[workers]
    step = -(-block.shape[0] // workers)
    parts = [block[r : r + step] for r in range(0, block.shape[0], step)]
    for done in pool.map(lambda part: part.sort(axis=1), parts):
        del done


def boot_stats(deltas: np.ndarray, delta_base: np.ndarray, ci_alpha: float) -> BootStats:
    """Statistics of docs/design.md §4.6 over each row of ``deltas`` (E, B), any layout.

    Over the n finite replicates of an edge: mean, sd (ddof 1), percentile CI at
    100·ci_alpha/2 and 100·(1 − ci_alpha/2) with numpy.percentile's "linear" method
    (virtual index (n−1)·q), bias = mean (float32) − Δ_base, n_minority = min(#{Δ>0}, #{Δ<0}) and
    bootstrap_pval = max(2·n_minority/n, 1/n) (dcoex.stats.bootstrap_bias / bootstrap_pvalue,
    which readers of the 02b file use too). NaN where n < 2. Rows are processed in blocks
    (C-ordered copies) so temporaries stay within STATS_WORK_BYTES: counts and sums by
    kernels.row_moments (numpy's float64 pairwise sums), percentiles from numpy's sort of the copy.
    """
    n_edges, n_boot = deltas.shape
    step = int(max(1, STATS_WORK_BYTES // max(16 * n_boot, 1)))
    copy = np.empty((min(step, max(n_edges, 1)), n_boot), np.float32)
    parts = [_block_stats(deltas, e0, min(e0 + step, n_edges), copy, delta_base=delta_base[e0 : e0 + step],
                          ci_alpha=ci_alpha) for e0 in range(0, n_edges, step)]
    if not parts:
        parts = [_block_stats(deltas, 0, 0, copy, delta_base=delta_base, ci_alpha=ci_alpha)]
    return BootStats(*(np.concatenate([getattr(p, f) for p in parts]) for f in BootStats.__dataclass_fields__))


def _block_stats(deltas: np.ndarray, e0: int, e1: int, copy: np.ndarray, *, delta_base: np.ndarray,
                 ci_alpha: float) -> BootStats:
    """boot_stats of rows e0..e1 of ``deltas`` (``copy``: a (>= e1 − e0, B) float32 scratch)."""
    block = copy[: e1 - e0]
    total, squares = np.empty(e1 - e0), np.empty(e1 - e0)
    n_f, pos, neg = (np.empty(e1 - e0, np.int64) for _ in range(3))
    kernels.row_moments(deltas.T, e0, block, total, squares, n_f, pos, neg, kernels.sum_program(deltas.shape[1]),
                        numba.get_num_threads())
    n_safe = np.maximum(n_f, 1)
    mean = total / n_safe
    var = squares / np.maximum(n_f - 1, 1)
    minority = np.minimum(pos, neg)
    _sort_rows(block, numba.get_num_threads())  # NaN last
    bounds = []
    rows = np.arange(block.shape[0])
    for q in (ci_alpha / 2.0, 1.0 - ci_alpha / 2.0):
        h = (n_safe - 1) * q
        lo = np.floor(h).astype(np.int64)
        hi = np.minimum(lo + 1, n_safe - 1)
        a = block[rows, lo].astype(np.float64)
        b = block[rows, hi].astype(np.float64)
        bounds.append(_lerp(a, b, h - lo))
    undefined = n_f < 2
    out = []
    for values in (mean, np.sqrt(var), bounds[0], bounds[1]):
        values = np.asarray(values, dtype=np.float64)
        values[undefined] = np.nan
        out.append(values)
    delta_mean = out[0].astype(np.float32)
    return BootStats(
        delta_mean=delta_mean, delta_std=out[1].astype(np.float32),
        ci_low=out[2].astype(np.float32), ci_high=out[3].astype(np.float32),
        bias=bootstrap_bias(delta_mean, delta_base), bootstrap_pval=bootstrap_pvalue(minority, n_f),
        n_finite=n_f.astype(np.int32), n_minority=minority.astype(np.int32),
    )
