"""Stage 02a science: Spearman r of every gene pair in LOW and HIGH, tests and BH.

Per reference gene (docs/design.md §4.2–§4.5, docs/stage02a.md): rank each gene once per group
(average ranks), double and centre them (integers u = 2·rank − (k+1)), then
r = (U·Uᵀ)·scaleᵢ·scaleⱼ with scale = 1/||u|| one tile of ``tile_rows`` gene rows at a time
(upper triangle only). The integer products are exact in float32 (float64 when
k(k−1)² >= 2**24), so r is identical for any tile size and thread count. The per-pair work
is fused per tile in numba kernels (kernels.py, parallel over tile rows, results independent
of the thread count); the tiles are recomputed for each pass (the products are cheap), never
stored:

1. histogram pass: fine bin counts (``N_BINS``) of each family's statistic — |r_L|, |r_H|,
   and for the differential test w = |b − a|/(1 − ab) = tanh(|atanh b − atanh a|) — over
   the tests that can have p <= alpha (all of them with ``exact_q``). Genes without ties in a
   group all have the same ||u||² = (k³ − k)/3, so the |r| of a pair of two of them is a
   function of the integer |d| = (k³ − k)/3 − 2·Σδ² (δ the rank differences, Σδ² even), so
   |d| mod 4 = (k³ − k)/3 mod 4 (0 or 2): those pairs are counted exactly per |d| // 4, and only the
   pairs with a tied gene go to the bins of the group families (with realistic data, all but
   a few: the group families then need almost no collection);
2. BH cut: the counts bound p_(j)·m/j over each bin, which locates the cut to a few bins;
   collection passes gather the exact statistics of those bins (at most ``window_items``
   at a time) and fix the cut exactly;
3. q-values: q(s) = min(1, min over observed s' in [cut, s] of p(s')·m/C(s')) with C(s')
   the number of tests with statistic >= s' — a function of the statistic. Collection
   passes from the cut upward (bounded groups of bins) give the distinct values with
   their counts; the running minimum is carried from group to group. The table keeps
   one entry per run of equal q. The differential family's table (up to one entry per edge)
   is written to an unlinked scratch file as it is made and read back in slices of at most
   2 × ``window_items`` entries;
4. emission: the significant differential pairs of each tile, in ascending pair index, get
   their q's from the tables and go to ``sink`` in chunks of ``chunk_edges``. With S slices
   of the differential table, S − 1 passes before it write the q_diff of the edges of their
   slice by edge ordinal into a scratch file (8 B per edge, on disk), which the last pass
   completes and reads.

Memory: O(N·k) ranks + O(tile_rows·N) tile + O(window_items) collection or table slice +
O(chunk_edges) edges + the group families' q tables (one entry per distinct |r| at or above
the cut with a new q: at most k(k²−1)/6 + 1); never an N×N or N(N−1)/2 array, and nothing
per edge beyond one tile and one chunk.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np

from dcoex.backend import Backend, NumpyBackend
from dcoex.edge_files import QTable
from dcoex.ranks import IntegerRanks
from dcoex.stages.s02a_base_correlations import kernels
from dcoex.stages.s02a_base_correlations.estimator import (
    CHUNK_EDGES,
    EMIT_CELLS,
    FINE_BINS,
    LOCAL_ITEMS,
    N_BINS,
    P_BLOCK,
    WINDOW_ITEMS,
)
from dcoex.stats import FISHER_CLIP, fisher_z, n_pairs, pair_from_flat, r_critical, t_pvalue, z_critical, z_pvalue

#: Candidate cuts are lowered by this relative margin so float rounding never drops a test.
CUT_MARGIN = 1e-5
#: Entries of one slice of the differential q table read back for emission, in collection
#: windows: 16 B each, so that emission needs no more than the collection phase (estimator.py).
SLICE_WINDOWS = 2
#: Relative slack of the bin edges when bounding p over a bin (the kernels bin in float64).
EDGE_SLACK = 1e-9
EDGE_FIELDS = (
    "pair_index", "gene_i", "gene_j", "r_low", "r_high", "delta",
    "p_low", "p_high", "p_diff", "q_low", "q_high", "q_diff", "sig_low", "sig_high",
)


@dataclass
class BaseResult:
    """Edges (sig_differential, ascending pair_index) and the counts of one reference gene."""

    edges: dict[str, np.ndarray]
    attrs: dict[str, object] = field(default_factory=dict)


class _Tiles:
    """Integer rank products of the upper triangle: rows [a, b) against columns [a, N).

    d = u_i·u_j from integer ranks (dcoex.ranks.IntegerRanks): exact in float32 (float64
    products converted), so r = (d·scale_i)·scale_j, which the kernels compute, does not
    depend on the tile shape, BLAS threads or the backend (``backend.products``: numpy, or
    torch on a GPU with the ranks uploaded once). Entries on or below the tile's diagonal are
    computed but never read.
    """

    def __init__(self, low: IntegerRanks, high: IntegerRanks, tile_rows: int, backend: Backend) -> None:
        self.low, self.high = low, high
        self.backend = backend
        self.n = low.u.shape[0]
        self.tile_rows = max(1, int(tile_rows))
        size = min(self.tile_rows, max(self.n - 1, 1)) * self.n
        self._buf = (backend.host_buffer(size, np.float32), backend.host_buffer(size, np.float32))
        self._wide = [backend.host_buffer(size, np.float64) if g.dtype == np.float64 else None for g in (low, high)]
        self._u = (backend.put(low.u), backend.put(high.u))
        self.scales = (low.scale, high.scale)
        self.consts = (low.constant, high.constant)

    def _product(self, u: Any, wide: np.ndarray | None, a: int, b: int, out: np.ndarray) -> None:
        if wide is None:
            self.backend.products(u[a:b], u[a:], out=out)
        else:
            product = wide[: out.size].reshape(out.shape)
            self.backend.products(u[a:b], u[a:], out=product)
            out[...] = product

    def __iter__(self):
        n = self.n
        for a in range(0, n - 1, self.tile_rows):
            b = min(a + self.tile_rows, n - 1)
            shape = (b - a, n - a)
            d_low = self._buf[0][: shape[0] * shape[1]].reshape(shape)
            d_high = self._buf[1][: shape[0] * shape[1]].reshape(shape)
            self._product(self._u[0], self._wide[0], a, b, d_low)
            self._product(self._u[1], self._wide[1], a, b, d_high)
            yield a, d_low, d_high


class _Family:
    """One BH family: bins of its statistic s >= lo, then its exact cut and q table.

    ``p_of`` maps statistics (float64 array) to p and is non-increasing; ``top`` bounds s.
    After the histogram pass (or ``set_exact``), ``next_group`` gives bin groups (lowest
    first) and ``consume`` takes the statistics collected in one: first the groups that can
    hold the BH cut, then, from the cut (the lowest bin of a complete family) upward, the
    groups of the q table. With ``spill_dir`` (a folder, or "" for the system's temporary
    folder) the table goes to an unlinked scratch file piece by piece and is read back in
    ``slices`` of at most ``budget`` entries; else ``finish`` joins it into
    ``table_s``/``table_q``.
    """

    def __init__(self, m: int, lo: float, top: float, p_of: Callable[[np.ndarray], np.ndarray], *, alpha: float,
                 budget: int, spill_dir: str | None = None) -> None:
        self.m, self.lo, self.p_of, self.alpha, self.budget = int(m), float(lo), p_of, float(alpha), int(budget)
        self.inv = N_BINS / max(top - self.lo, 1e-12)
        self.hist = (np.zeros(N_BINS, np.int64), np.full(N_BINS, np.inf), np.full(N_BINS, -np.inf))
        self.cut = np.inf
        self.n_sig = 0
        self.found = False
        self.exact: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._pieces: list[tuple[np.ndarray, np.ndarray]] = []
        self._spilled: list[tuple[int, int, int, float]] = []  # (first bin, offset, entries, q carried in)
        self._spill = None if spill_dir is None else tempfile.TemporaryFile(dir=spill_dir or None)
        self._spill_at = 0
        self._last_q = np.nan
        self.table_s = np.empty(0)
        self.table_q = np.empty(0)
        self._offsets: np.ndarray | None = None

    @property
    def bounds(self) -> tuple[float, float]:
        return self.lo, self.inv

    def bins_of(self, s: np.ndarray) -> np.ndarray:
        """Bins of statistics s >= lo (float64), as the kernels compute them."""
        return np.minimum(((s - self.lo) * self.inv).astype(np.int64), N_BINS - 1)

    def set_exact(self, values: np.ndarray, counts: np.ndarray) -> None:
        """Distinct statistics (ascending float64) of tests counted exactly outside the bins,
        and their counts: added to the bins' counts, and to the values ``consume`` gets."""
        keep = values >= self.lo
        values, counts = values[keep], counts[keep]
        self.exact = (values, counts, self.bins_of(values))

    def prepare(self, complete: bool) -> None:
        """After the histogram pass (and ``set_exact``): counts at or above each bin, the bins
        that need collecting (more than one value in the bins), and the first group."""
        count, smin, smax = self.hist
        self.count = count if self.exact is None else count + np.bincount(self.exact[2], self.exact[1], N_BINS).astype(np.int64)
        self.above = np.concatenate([np.cumsum(self.count[::-1])[::-1], [0]])  # above[b] = count in bins >= b
        self.mixed = (count > 0) & (smin < smax)
        mixed_count = np.where(self.mixed, count, 0)
        self.mixed_above = np.concatenate([np.cumsum(mixed_count[::-1])[::-1], [0]])
        self.complete = bool(complete) or int(self.above[0]) == self.m
        self.pos, self.limit = self._start()

    def _start(self) -> tuple[int, int]:
        """First bin to collect and the bin below which the cut search stays."""
        full = np.nonzero(self.count)[0]
        if self.m == 0 or full.size == 0:
            return N_BINS, N_BINS
        if self.complete:
            return int(full[0]), N_BINS
        with np.errstate(over="ignore"):
            p_low_edge = self.p_of(self._edge(full) * (1 - EDGE_SLACK))
            p_high_edge = self.p_of(self._edge(full + 1) * (1 + EDGE_SLACK))
        c = self.above[full].astype(np.float64)
        certain = full[p_low_edge * self.m / c < self.alpha]
        possible = full[p_high_edge * self.m / c < self.alpha]
        if possible.size == 0:
            return N_BINS, N_BINS
        return int(possible[0]), int(certain[0]) + 1 if certain.size else N_BINS

    def _edge(self, b: np.ndarray) -> np.ndarray:
        return self.lo + np.asarray(b, dtype=np.float64) / self.inv

    def next_group(self) -> tuple[int, int] | None:
        """The next bin range [start, stop) to consume, with at most ``budget`` statistics in
        bins that need collecting (a single bin may hold more); None when done. A group may run
        past the cut's last possible bin, so that one pass finds the cut and starts the q table."""
        start = self.pos
        if start >= (N_BINS if (self.found or self.complete) else self.limit):
            return None
        last = N_BINS
        limit = self.mixed_above[start] - self.budget
        stop = start + int(np.searchsorted(-self.mixed_above[start + 1 : last + 1], -limit, side="right"))
        return start, min(max(stop, start + 1), last)

    def n_mixed(self, group: tuple[int, int] | None) -> int:
        """Statistics a collection pass must gather for the group."""
        if group is None:
            return 0
        return int(self.mixed_above[group[0]] - self.mixed_above[group[1]])

    def consume(self, group: tuple[int, int], values: np.ndarray, scratch: np.ndarray,
                n_values: int | None = None) -> None:
        """Statistics collected in the group's bins that need collecting: values[:n_values]
        (default all; any order; sorted in place), ``scratch`` an int64 array. The distinct
        values and their counts are made in place, merged with the bins of one value and the
        exact counts in ``values``/``scratch`` when they have room (else in new arrays).
        Temporaries: two float64 arrays of the group's distinct values."""
        count, smin, _ = self.hist
        n_values = values.size if n_values is None else int(n_values)
        single = np.nonzero(~self.mixed[group[0] : group[1]] & (count[group[0] : group[1]] > 0))[0] + group[0]
        values[:n_values].sort()
        if scratch.size < n_values:
            scratch = np.empty(n_values, np.int64)
        k = kernels.unique_counts(values[:n_values], scratch)
        more = [(smin[single], count[single])]
        if self.exact is not None:
            exact_s, exact_n, exact_b = self.exact
            first, last = np.searchsorted(exact_b, group)
            more.append((exact_s[first:last], exact_n[first:last]))
        for more_s, more_n in more:
            if more_s.size == 0:
                continue
            if k + more_s.size > min(values.size, scratch.size):
                values, scratch = _grown(values, k, k + more_s.size), _grown(scratch, k, k + more_s.size)
            k = kernels.merge_counts(values, scratch, k, more_s, more_n)
        self._consume_distinct(group, values[:k], scratch[:k])

    def _consume_distinct(self, group: tuple[int, int], u: np.ndarray, counts: np.ndarray) -> None:
        """The group's distinct statistics (ascending) and their counts: the cut, the table."""
        c = np.cumsum(counts[::-1])
        c += self.above[group[1]]
        c = c[::-1]  # tests with a statistic >= u
        scaled = _scaled_p(self.p_of, u, c, self.m)
        del c
        if not self.found:
            below = scaled < self.alpha
            if below.any():
                self.found = True
                first = int(np.argmax(below))
                self.cut, self.n_sig = float(u[first]), int(self.above[group[1]] + counts[first:].sum())
        if self.complete:
            self._add_table(group[0], u, scaled)
        elif self.found:
            keep = int(np.searchsorted(u, self.cut, side="left"))
            self._add_table(group[0], u[keep:], scaled[keep:])
        self.pos = group[1]

    def _add_table(self, first_bin: int, u: np.ndarray, scaled: np.ndarray) -> None:
        """Extend the q table (groups come lowest first, the group's bins from ``first_bin``):
        q = running minimum of p·m/C from the bottom of the table, capped at 1; one entry per run
        of equal q. ``u`` and ``scaled`` are overwritten."""
        if u.size == 0:
            return
        started = bool(self._pieces or self._spilled)
        k, last_q = kernels.q_runs(u, scaled, self._last_q, started)
        if self._spill is None:
            self._pieces.append((u[:k].copy(), scaled[:k].copy()))
        else:
            self._write_pieces(first_bin, u[:k], scaled[:k])
        self._last_q = float(last_q)

    def _write_pieces(self, first_bin: int, values: np.ndarray, q: np.ndarray) -> None:
        """Append table entries to the scratch file in pieces of at most ``budget`` entries,
        cut at bin boundaries (a single bin may hold more), each with its first bin and the
        q carried in from below."""
        carry = self._last_q
        start = 0
        while start < values.size:
            end = min(start + self.budget, values.size)
            if end < values.size:
                end = kernels.bin_run(values, end, self.lo, self.inv, N_BINS)[0]
                if end <= start:
                    end = kernels.bin_run(values, start, self.lo, self.inv, N_BINS)[1]
            piece_bin = first_bin if start == 0 else kernels.bin_run(values, start, self.lo, self.inv, N_BINS)[2]
            self._spilled.append((piece_bin, self._spill_at, end - start, carry))
            for column in (values[start:end], q[start:end]):
                os.pwrite(self._spill.fileno(), np.ascontiguousarray(column), self._spill_at)
                self._spill_at += column.nbytes
            carry = float(q[end - 1])
            start = end
        if values.size == 0:
            self._spilled.append((first_bin, self._spill_at, 0, carry))

    def finish(self) -> None:
        """Join the q table's pieces (after the last group), freeing each once copied; a
        spilled table stays in its file (``slices``)."""
        if self._spill is not None:
            return
        size = sum(piece[0].size for piece in self._pieces)
        self.table_s, self.table_q = np.empty(size), np.empty(size)
        at = 0
        self._pieces.reverse()
        while self._pieces:
            values, q = self._pieces.pop()
            self.table_s[at : at + values.size] = values
            self.table_q[at : at + values.size] = q
            at += values.size

    def slices(self) -> list[tuple[int, int, list[int]]]:
        """The table in slices of at most SLICE_WINDOWS × ``budget`` entries (pieces of at most
        ``budget``, never split): (first bin, end bin, pieces) covering the bins from the
        table's first to the last."""
        if self._spill is None:
            return [(-1, N_BINS, [])]
        out: list[tuple[int, int, list[int]]] = []
        size = 0
        for i, (first_bin, _, entries, _) in enumerate(self._spilled):
            if not out or size + entries > SLICE_WINDOWS * self.budget:
                if out:
                    out[-1] = (out[-1][0], first_bin, out[-1][2])
                out.append((first_bin, N_BINS, []))
                size = 0
            out[-1][2].append(i)
            size += entries
        return out or [(-1, N_BINS, [])]

    def table_slice(self, piece_ids: list[int], first_bin: int, end_bin: int) -> tuple:
        """(table_s, table_q, offsets, span) of one slice, for kernels.lookup_q."""
        if self._spill is None:
            table_s, table_q = self.table_s, self.table_q
            carry = np.nan
        else:
            size = sum(self._spilled[i][2] for i in piece_ids)
            table_s, table_q = np.empty(size), np.empty(size)
            at = 0
            for i in piece_ids:
                _, offset, entries, _ = self._spilled[i]
                os.preadv(self._spill.fileno(), [table_s[at : at + entries]], offset)
                os.preadv(self._spill.fileno(), [table_q[at : at + entries]], offset + 8 * entries)
                at += entries
            carry = self._spilled[piece_ids[0]][3] if piece_ids else np.nan
        fine = _fine_bins(table_s.size)
        offsets = np.empty(fine + 1, np.int32 if table_s.size < 2**31 else np.int64)
        kernels.table_offsets(table_s, self.lo, self.inv * (fine / N_BINS), offsets)
        return table_s, table_q, offsets, np.array([first_bin, end_bin, carry], dtype=np.float64)

    def q_table(self) -> QTable:
        """The q table as dcoex.edge_files.QTable: its size and its slices, read one at a time."""
        if self._spill is None:
            return QTable.of(self.table_s, self.table_q)
        size = sum(entries for _, _, entries, _ in self._spilled)
        return QTable(size, lambda: (self.table_slice(ids, lo, hi)[:2] for lo, hi, ids in self.slices()))

    def table(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole q table: ascending statistics and their q (one entry per run of equal q)."""
        if self._spill is None:
            return self.table_s, self.table_q
        parts = [self.table_slice(ids, lo, hi)[:2] for lo, hi, ids in self.slices()]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def q_values(self, s: np.ndarray) -> np.ndarray:
        """q of statistics s (float64): exact in the table, NaN below its first value."""
        s = np.ascontiguousarray(s, dtype=np.float64)
        q = np.full(s.shape, np.nan)
        if self._spill is None:
            if self._offsets is None:
                self._offsets = np.empty(N_BINS + 1, np.int64)
                kernels.table_offsets(self.table_s, self.lo, self.inv, self._offsets)
            kernels.lookup_q(s, self.lo, self.inv, N_BINS, self._offsets, self.inv, self.table_s, self.table_q,
                             np.array([-1.0, N_BINS, np.nan]), q)
            return q
        for lo, hi, ids in self.slices():
            table_s, table_q, offsets, span = self.table_slice(ids, lo, hi)
            kernels.lookup_q(s, self.lo, self.inv, N_BINS, offsets, self.inv * ((offsets.size - 1) / N_BINS),
                             table_s, table_q, span, q)
        return q

    def is_significant(self, s: np.ndarray) -> np.ndarray:
        return np.asarray(s, dtype=np.float64) >= self.cut

    def close(self) -> None:
        """Remove the scratch file of a spilled table."""
        if self._spill is not None:
            self._spill.close()


def _scaled_p(p_of: Callable[[np.ndarray], np.ndarray], u: np.ndarray, c: np.ndarray, m: int) -> np.ndarray:
    """p_of(u)·m/c (float64) in blocks of P_BLOCK statistics (bounded temporaries), the blocks on
    numba's thread count (scipy.special releases the GIL: 0.32 → 0.11 s for 10⁶ t-test p's on 2
    threads). Each value is computed alone, so the result does not depend on the threads."""
    scaled = np.empty(u.size)

    def block(a: int) -> None:
        scaled[a : a + P_BLOCK] = p_of(u[a : a + P_BLOCK]) * m / c[a : a + P_BLOCK]

    starts = range(0, u.size, P_BLOCK)
    threads = min(numba.get_num_threads(), len(starts))
    if threads <= 1:
        for a in starts:
            block(a)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(block, starts))
    return scaled


def _fine_bins(size: int) -> int:
    """Bins of the index of a differential q-table slice of ``size`` entries (kernels.lookup_q):
    about one entry per bin, from N_BINS to FINE_BINS."""
    return max(N_BINS, min(FINE_BINS, 1 << max(int(size) - 1, 0).bit_length()))


def _grown(a: np.ndarray, k: int, size: int) -> np.ndarray:
    """A new array of ``size`` entries starting with a[:k]."""
    out = np.empty(size, a.dtype)
    out[:k] = a[:k]
    return out


def differential_edges(
    x_low: np.ndarray,
    x_high: np.ndarray,
    alpha: float,
    *,
    tile_rows: int,
    sink: Callable[[dict[str, np.ndarray]], None],
    chunk_edges: int = CHUNK_EDGES,
    exact_q: bool = False,
    window_items: int | None = None,
    columns: tuple[str, ...] = EDGE_FIELDS,
    on_count: Callable[[int], None] | None = None,
    on_tables: Callable[[dict[str, QTable]], None] | None = None,
    on_ranks: Callable[[IntegerRanks, IntegerRanks], None] | None = None,
    backend: Backend | None = None,
    scratch_dir: str | os.PathLike | None = None,
) -> dict[str, object]:
    """Stream the significant differential edges of one reference gene to ``sink``.

    ``x_low``/``x_high``: expression of all N genes in the LOW/HIGH samples, (N, k_L) and
    (N, k_H). ``sink(chunk)`` receives dicts of ``columns`` (names of EDGE_FIELDS) holding at
    most ``chunk_edges`` edges each, in ascending pair_index, with exact q's (q at or above
    alpha is NaN unless ``exact_q``); ``on_count(n_edges)``, if given, is called once before the
    first chunk (also when there are none); ``on_tables(tables)``, if given, before it with each
    family's q table {"low" | "high" | "diff": QTable} (ascending statistic: the q of a statistic s
    is that of the last entry <= s; the differential one read from its scratch file in bounded
    pieces); ``on_ranks(ranks_low, ranks_high)``, if given, before that with each group's
    dcoex.ranks.IntegerRanks (r = (u_i·u_j·scale_i)·scale_j: the "product" and "ranks" r forms
    of dcoex.edge_files). Returns the attrs (counts, cuts). Memory does not depend on the number of edges
    (module docstring); ``window_items`` overrides WINDOW_ITEMS (tests); ``backend`` computes the
    rank products (dcoex.backend; default numpy on the host).
    The differential q table and, when it has several slices, the q's of the edges go to
    unlinked scratch files in ``scratch_dir`` (default: the system's temporary folder).
    Threads: numba's (``numba.set_num_threads``; dcoex.threads.blas_threads sets them).
    """
    n, k_low = x_low.shape
    k_high = x_high.shape[1]
    ranks_low, ranks_high = IntegerRanks(x_low), IntegerRanks(x_high)
    const_low, const_high = ranks_low.constant, ranks_high.constant
    const_any = const_low | const_high
    df_low, df_high = k_low - 2, k_high - 2
    se = float(np.sqrt(1.0 / (k_low - 3) + 1.0 / (k_high - 3)))
    w_top = float(np.tanh(2 * np.arctanh(FISHER_CLIP)))
    if exact_q:
        lo_low = lo_high = lo_w = 0.0
    else:
        lo_low = r_critical(alpha, df_low) * (1 - CUT_MARGIN)
        lo_high = r_critical(alpha, df_high) * (1 - CUT_MARGIN)
        lo_w = float(np.tanh(z_critical(alpha) * se)) * (1 - CUT_MARGIN)

    def p_w(w: np.ndarray) -> np.ndarray:
        return z_pvalue(np.arctanh(np.minimum(w, 1.0)) / se)

    budget = WINDOW_ITEMS if window_items is None else int(window_items)
    fams = (
        _Family(n_pairs(n - int(const_low.sum())), lo_low, 1.0, lambda s: t_pvalue(s, df_low), alpha=alpha, budget=budget),
        _Family(n_pairs(n - int(const_high.sum())), lo_high, 1.0, lambda s: t_pvalue(s, df_high), alpha=alpha, budget=budget),
        _Family(n_pairs(n - int(const_any.sum())), lo_w, w_top, p_w, alpha=alpha, budget=budget,
                spill_dir="" if scratch_dir is None else os.fspath(scratch_dir)),
    )
    try:
        bounds = np.array([v for f in fams for v in f.bounds], dtype=np.float64)
        tiles = _Tiles(ranks_low, ranks_high, tile_rows, NumpyBackend() if backend is None else backend)
        parts = numba.get_num_threads()
        flags = _histogram(tiles, fams, bounds=bounds, parts=parts)
        for fam in fams:
            fam.prepare(exact_q)
        _sweep(tiles, fams, bounds=bounds, size=min(budget, n_pairs(n)), parts=parts, tie_free=(flags[0], flags[1]))
        for fam in fams:
            fam.finish()
        fam_low, fam_high, fam_diff = fams
        if on_ranks is not None:
            on_ranks(ranks_low, ranks_high)
        if on_tables is not None:
            on_tables({name: fam.q_table() for name, fam in zip(("low", "high", "diff"), fams)})
        n_sig_edges = 0
        if on_count is not None:
            on_count(fam_diff.n_sig)
        if fam_diff.n_sig:
            n_sig_edges = _emit(tiles, fams, const_any, sink, chunk_edges=chunk_edges, columns=columns,
                                df=(df_low, df_high), k=(k_low, k_high), scratch_dir=scratch_dir)
    finally:
        for fam in fams:
            fam.close()
    return {
        "n_genes": n,
        "n_tests": n_pairs(n),
        "n_tests_low": fam_low.m,
        "n_tests_high": fam_high.m,
        "n_tests_diff": fam_diff.m,
        "n_excluded": n_pairs(n) - fam_diff.m,
        "n_const_low": int(const_low.sum()),
        "n_const_high": int(const_high.sum()),
        "k_low": k_low,
        "k_high": k_high,
        "fdr_alpha": float(alpha),
        "n_sig_low": fam_low.n_sig,
        "n_sig_high": fam_high.n_sig,
        "n_sig_differential": fam_diff.n_sig,
        "n_sig_edges": n_sig_edges,
        "n_candidates_low": int(fam_low.above[0]),
        "n_candidates_high": int(fam_high.above[0]),
        "n_candidates_diff": int(fam_diff.above[0]),
        "q_exact": bool(exact_q),
        "cut_low": fam_low.cut,
        "cut_high": fam_high.cut,
        "cut_diff_w": fam_diff.cut,
    }


def tie_free(ranks: IntegerRanks) -> np.ndarray:
    """Genes without ties (nor constant) in the group: ||u||² = (k³ − k)/3, the same for all.
    None when (k³ − k)/3 >= 2**24 (k >= 370): the tile's float32 d is then not always the exact
    integer, and the exact counts are not used."""
    k = ranks.u.shape[1]
    squares = np.einsum("ij,ij->i", ranks.u, ranks.u, dtype=np.float64)
    return ~ranks.constant & (squares == (k**3 - k) // 3) & ((k**3 - k) // 3 < 2**24)


def _histogram(tiles: _Tiles, fams: tuple[_Family, ...], *, bounds: np.ndarray, parts: int) -> np.ndarray:
    """The histogram pass: each part's bins and exact |d| // 4 counts (pairs of tie-free genes),
    summed into the families after the last tile. Returns the tie-free flags (low, high)."""
    flags = np.stack([tie_free(g) for g in (tiles.low, tiles.high)])
    sizes = [(g.u.shape[1] ** 3 - g.u.shape[1]) // 12 + 1 if f.any() else 1  # |d| <= ||u||² = (k³ − k)/3
             for g, f in zip((tiles.low, tiles.high), flags)]
    hist = np.empty((parts, 3, N_BINS + 1, 3))  # count, smallest, largest per bin; the last bin a sink
    hist[..., 0] = 0.0
    hist[..., 1] = np.inf
    hist[..., 2] = -np.inf
    # a counter counts at most all the pairs: int32 while they stay below 2**31; the last slot a sink
    exact = np.zeros((parts, 2, max(sizes) + 1), np.int32 if n_pairs(tiles.n) < 2**31 else np.int64)
    rows = np.empty((parts, 3, tiles.n))
    slots = np.empty((parts, 5, tiles.n), np.int32)
    for a, d_low, d_high in tiles:
        kernels.histogram_tile(d_low, d_high, a, tiles.scales, tiles.consts, (flags[0], flags[1]), bounds, FISHER_CLIP,
                               hist, exact, rows, slots)
    for f, fam in enumerate(fams):
        count, smin, smax = fam.hist
        count += hist[:, f, :N_BINS, 0].sum(axis=0).astype(np.int64)
        np.minimum(smin, hist[:, f, :N_BINS, 1].min(axis=0), out=smin)
        np.maximum(smax, hist[:, f, :N_BINS, 2].max(axis=0), out=smax)
    del hist, rows, slots
    exact = exact[:, :, :-1]
    for f, ranks in enumerate((tiles.low, tiles.high)):
        if not flags[f].any():
            continue
        total = exact[:, f].sum(axis=0, dtype=np.int64)
        index = np.nonzero(total)[0]
        scale = ranks.scale[flags[f]][0]  # every tie-free gene has this scale
        k = ranks.u.shape[1]
        d = (4 * index + ((k**3 - k) // 3) % 4).astype(np.float32)  # |d| mod 4 is that of ||u||² (module docstring)
        r = (d * scale) * scale  # as the kernels: (d·scale_i)·scale_j
        values, inverse = np.unique(np.abs(r).astype(np.float64), return_inverse=True)
        fams[f].set_exact(values, np.bincount(inverse, weights=total[index]).astype(np.int64))
    return flags


def _sweep(tiles: _Tiles, fams: tuple[_Family, ...], *, bounds: np.ndarray, size: int, parts: int,
           tie_free: tuple[np.ndarray, np.ndarray]) -> None:
    """Cut search and q tables of the three families: collection passes over the tiles until
    every family is done. The collection buffers (``size`` entries each) are allocated and
    written once, so that the peak does not depend on the data (estimator.py), and freed on
    return."""
    buffers = tuple(np.full(size, 0.0) for _ in range(3))  # np.full writes every page (np.zeros may not)
    scratch = np.full(size, 0, np.int64)
    local = np.full((parts, 3, max(LOCAL_ITEMS, tiles.n)), 0.0)
    while True:
        groups = [f.next_group() for f in fams]
        if all(g is None for g in groups):
            return
        if any(f.n_mixed(g) for f, g in zip(fams, groups)):
            found = _collect(tiles, fams, groups, bounds=bounds, buffers=buffers, local=local, tie_free=tie_free)
        else:
            found = [(b, 0) for b in buffers]
        for fam, group, (values, n_values) in zip(fams, groups, found):
            if group is not None:
                fam.consume(group, values, scratch, n_values)


def _collect(tiles: _Tiles, fams: tuple[_Family, ...], groups: list, *, bounds: np.ndarray,
             buffers: tuple[np.ndarray, ...], local: np.ndarray, tie_free: tuple) -> list[tuple[np.ndarray, int]]:
    """One pass over the tiles collecting each family's statistics in the bins of its group
    that need collecting (None: nothing), into the front of its buffer; ``local`` holds the
    parts' private buffers. Returns (buffer, count) per family."""
    windows = np.zeros(6, np.int64)
    sizes = [fam.n_mixed(group) for fam, group in zip(fams, groups)]
    for f, group in enumerate(groups):
        if sizes[f]:
            windows[2 * f], windows[2 * f + 1] = group
    # a single bin with more than the budget gets its own buffer
    outs = tuple(buf[:size] if size <= buf.size else np.empty(size) for buf, size in zip(buffers, sizes))
    masks = np.stack([f.mixed for f in fams])
    n_out = np.zeros(3, np.int64)
    local_n = np.zeros(local.shape[:2], np.int64)
    for a, d_low, d_high in tiles:
        kernels.collect_tile(d_low, d_high, a, tiles.scales, tiles.consts, tie_free, bounds, FISHER_CLIP, windows,
                             masks, outs, n_out, local, local_n)
    if list(n_out) != sizes:
        raise RuntimeError(f"02a: collected {list(n_out)} statistics where the histogram counted {sizes}")
    return [(buf if size <= buf.size else out, size) for buf, out, size in zip(buffers, outs, sizes)]


def _emitted(tiles: _Tiles, const_any: np.ndarray, w_cut: float) -> Iterator[tuple[np.ndarray, ...]]:
    """The pairs with w >= w_cut, ascending: (pair, r_low, r_high, w, d_low, d_high) views of
    one emission slice (at most EMIT_CELLS tile cells) at a time, valid until the next."""
    buf = None
    row_n = np.empty(0, np.int64)
    for a, d_low, d_high in tiles:
        width = d_low.shape[1]
        step = max(1, EMIT_CELLS // max(width, 1))
        size = step * width
        if buf is None or buf[0].size < size:
            buf = (np.empty(size, np.int64), np.empty(size, np.float32), np.empty(size, np.float32),
                   np.empty(size, np.float64), np.empty(size, np.float32), np.empty(size, np.float32))
        if row_n.size < step:
            row_n = np.empty(step, np.int64)
        for i0 in range(0, d_low.shape[0], step):
            i1 = min(i0 + step, d_low.shape[0])
            count = kernels.emit_rows(d_low, d_high, a, i0, i1, tiles.scales, const_any, FISHER_CLIP, w_cut, buf,
                                      row_n)
            if count:
                yield tuple(b[:count] for b in buf)


def _emit(tiles: _Tiles, fams: tuple[_Family, ...], const_any: np.ndarray, sink: Callable, *, chunk_edges: int,
          columns: tuple[str, ...], df: tuple[int, int], k: tuple[int, int], scratch_dir) -> int:
    """Emission: the edges (w >= the diff cut) to ``sink`` in chunks; returns n_sig_edges. One
    pass per slice of the differential q table: the passes before the last write the q_diff
    of their slice's edges into a scratch file by edge ordinal; the last completes them."""
    fam_low, fam_high, fam_diff = fams
    n = tiles.n
    slices = fam_diff.slices()

    def fine_inv(table: tuple) -> float:
        return fam_diff.inv * ((table[2].size - 1) / N_BINS)

    scratch = tempfile.TemporaryFile(dir=scratch_dir) if len(slices) > 1 else None
    try:
        for p, (first_bin, end_bin, ids) in enumerate(slices[:-1]):
            table = fam_diff.table_slice(ids, first_bin, end_bin)
            at = 0
            for _, _, _, w, _, _ in _emitted(tiles, const_any, fam_diff.cut):
                q = np.full(w.size, np.nan)
                if p:
                    os.preadv(scratch.fileno(), [q], at)
                kernels.lookup_q(w, fam_diff.lo, fam_diff.inv, N_BINS, table[2], fine_inv(table), table[0], table[1],
                                 table[3], q)
                os.pwrite(scratch.fileno(), q, at)
                at += q.nbytes
            del table
        first_bin, end_bin, ids = slices[-1]
        table = fam_diff.table_slice(ids, first_bin, end_bin)
        pending: list[dict[str, np.ndarray]] = []
        n_pending = 0
        n_sig_edges = n_emitted = 0
        for pair, rl, rh, w, dl, dh in _emitted(tiles, const_any, fam_diff.cut):
            count = pair.size
            q_diff = np.full(count, np.nan)
            if scratch is not None:
                os.preadv(scratch.fileno(), [q_diff], 8 * n_emitted)
            kernels.lookup_q(w, fam_diff.lo, fam_diff.inv, N_BINS, table[2], fine_inv(table), table[0], table[1],
                             table[3], q_diff)
            pair, rl, rh = pair.copy(), rl.copy(), rh.copy()
            products = (dl.copy(), dh.copy()) if "d_low" in columns else (dl, dh)
            sig_low = fam_low.is_significant(np.abs(rl))
            sig_high = fam_high.is_significant(np.abs(rh))
            n_sig_edges += int(np.count_nonzero(sig_low | sig_high))
            pending.append(_columns(pair, rl, rh, q_diff, products=products, sig_low=sig_low, sig_high=sig_high,
                                    fams=fams, columns=columns, n=n, df=df, k=k))
            n_pending += count
            n_emitted += count
            while n_pending >= chunk_edges:
                head, pending, n_pending = _split(pending, chunk_edges)
                sink(head)
        if n_pending:
            sink(_split(pending, n_pending)[0])
    finally:
        if scratch is not None:
            scratch.close()
    if n_emitted != fam_diff.n_sig:
        raise RuntimeError(f"02a: emitted {n_emitted} edges where BH found {fam_diff.n_sig}")
    return n_sig_edges


def _columns(pair: np.ndarray, rl: np.ndarray, rh: np.ndarray, q_diff: np.ndarray, *,
             products: tuple[np.ndarray, np.ndarray], sig_low: np.ndarray, sig_high: np.ndarray,
             fams: tuple[_Family, ...], columns: tuple[str, ...], n: int, df: tuple[int, int],
             k: tuple[int, int]) -> dict[str, np.ndarray]:
    """The ``columns`` of one emission slice: EDGE_FIELDS, and "d_low"/"d_high" (the integer
    rank products, float32, for the writer's product form: dcoex.edge_files)."""
    fam_low, fam_high, _ = fams
    make = {
        "d_low": lambda: products[0],
        "d_high": lambda: products[1],
        "pair_index": lambda: pair,
        "gene_i": lambda: pair_from_flat(pair, n)[0].astype(np.int32),
        "gene_j": lambda: pair_from_flat(pair, n)[1].astype(np.int32),
        "r_low": lambda: rl,
        "r_high": lambda: rh,
        "delta": lambda: rh - rl,
        "p_low": lambda: t_pvalue(rl, df[0]),
        "p_high": lambda: t_pvalue(rh, df[1]),
        "p_diff": lambda: z_pvalue(fisher_z(rl, rh, k[0], k[1])),
        "q_low": lambda: fam_low.q_values(np.abs(rl)),
        "q_high": lambda: fam_high.q_values(np.abs(rh)),
        "q_diff": lambda: q_diff,
        "sig_low": lambda: sig_low,
        "sig_high": lambda: sig_high,
    }
    return {name: make[name]() for name in columns}


def _split(parts: list[dict[str, np.ndarray]], size: int) -> tuple[dict[str, np.ndarray], list, int]:
    """The first ``size`` edges of the pending chunks, and what is left."""
    head: dict[str, list[np.ndarray]] = {name: [] for name in parts[0]}
    rest: list[dict[str, np.ndarray]] = []
    need = size
    for part in parts:
        count = len(next(iter(part.values())))
        if need >= count:
            for name, col in part.items():
                head[name].append(col)
            need -= count
        elif need > 0:
            for name, col in part.items():
                head[name].append(col[:need])
            rest.append({name: col[need:] for name, col in part.items()})
            need = 0
        else:
            rest.append(part)
    left = sum(len(next(iter(p.values()))) for p in rest)
    return {name: np.concatenate(cols) for name, cols in head.items()}, rest, left


def base_correlations(
    x_low: np.ndarray,
    x_high: np.ndarray,
    alpha: float,
    *,
    tile_rows: int = 512,
    exact_q: bool = False,
    window_items: int | None = None,
) -> BaseResult:
    """Tests of every gene pair for one reference gene, every edge in memory (tests, small data):
    ``differential_edges`` with a sink that concatenates."""
    chunks: list[dict[str, np.ndarray]] = []
    attrs = differential_edges(x_low, x_high, alpha, tile_rows=tile_rows, sink=chunks.append, exact_q=exact_q,
                               window_items=window_items)
    dtypes = dict(zip(EDGE_FIELDS, (np.int64, np.int32, np.int32, np.float32, np.float32, np.float32, np.float64,
                                    np.float64, np.float64, np.float64, np.float64, np.float64, bool, bool)))
    edges = {name: np.concatenate([c[name] for c in chunks]) if chunks else np.empty(0, dtypes[name])
             for name in EDGE_FIELDS}
    return BaseResult(edges, attrs)
