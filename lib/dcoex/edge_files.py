"""Per-gene edge files of stages 02a (``base_correlations/``) and 02b (``bootstrap_significant/``),
their writers and readers (``iter_base_edges``: 02a; ``iter_boot_edges``: 02b joined with 02a).

Layouts are fixed in docs/design.md §3.4–§3.5 and docs/stage02a.md / docs/stage02b.md. Every file has a
``meta`` group (attrs), a root ``gene_names`` dataset and sparse edge tables; the
``/memfit`` group (memory figures) is written by the stage.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from dcoex.h5chunks import DirectColumns
from dcoex.h5io import (
    CHUNK_BYTES,
    dataset_options,
    filter_options,
    link_dataset,
    open_h5_input,
    read_meta,
    write_attrs,
)
from dcoex.ranks import IntegerRanks, exact_dtype
from dcoex.stats import (
    bootstrap_bias,
    bootstrap_pvalue,
    fisher_z,
    n_pairs,
    pair_from_flat,
    t_pvalue,
    w_statistic,
    z_pvalue,
)

BASE_EDGE_DTYPES = {
    "pair_index": np.int64, "gene_i": np.int32, "gene_j": np.int32,
    "r_low": np.float32, "r_high": np.float32, "delta": np.float32,
    "p_low": np.float64, "p_high": np.float64, "p_diff": np.float64,
    "q_low": np.float64, "q_high": np.float64, "q_diff": np.float64,
    "sig_low": np.bool_, "sig_high": np.bool_,
}
#: Per-edge columns a 02a file stores (format 3) in the "float" r form (``R_FORMS``); the others
#: are computed on read (docs/stage02a.md, "Storage"): q_low, q_high and q_diff from the q tables
#: below, q_diff stored per edge instead when that is smaller (``Q_DIFF_FORMS``).
BASE_STORED = ("r_low", "r_high")
#: How a 02a file stores its r's (meta ``r_form``): "float", ``edges/r_low`` and ``edges/r_high``
#: (float32); or, in the bitmap edge form, from the integer rank products d = u_i·u_j and each
#: group's per-gene scale 1/||u|| (``scales/low``, ``scales/high``, float32), r = (d·scale_i)·scale_j
#: in float32, the bits 02a computed (dcoex.ranks.IntegerRanks): "product" stores d per edge
#: (``edges/d_low``, ``edges/d_high``: int16 when every |d| <= (k³ − k)/3 fits, else int32;
#: ``product_dtype``), "ranks" stores each group's ranks u (``ranks/low``, ``ranks/high``: genes ×
#: k, int8 up to k = 128, else int16; ``rank_dtype``) and readers compute d
#: (dcoex.rank_products), whichever is smaller (``r_form``).
R_FORMS = ("float", "product", "ranks")
#: Columns the 02a writer takes (``BaseEdgeWriter.append``): d_low/d_high are the rank products
#: (float32 holding integers), stored in the "product" r form.
BASE_EMITTED = ("pair_index", "r_low", "r_high", "q_diff", "d_low", "d_high")
#: BH families with a q table: ``q_tables/{family}_stat`` (ascending statistic: |r_low|,
#: |r_high|, w) and ``q_tables/{family}_q`` (float64); the q of a statistic s is that of the
#: last entry <= s, NaN below the first.
Q_FAMILIES = ("low", "high", "diff")
#: How q_diff is stored (meta ``q_diff_form``): from its table and w(r_low, r_high) ("table"),
#: or per edge (``edges/q_diff``, "column") when the table has more entries than half the edges.
Q_DIFF_FORMS = ("table", "column")
#: Edge forms: "sparse" stores ``edges/pair_index`` (int64), "bitmap" stores ``edges/pair_bitmap``
#: (uint8, bit k of the N(N−1)/2 pairs = byte k // 8, bit k % 8, least significant first).
EDGE_FORMS = ("sparse", "bitmap")
#: What a 02b file stores per edge (format 3): its rows are the 02a file's edges that its
#: ``edge_selection_mode`` selects, in the same order, so the pair, genes, r's and Δ come from
#: the 02a file; bias and bootstrap_pval are computed on read (``iter_boot_edges``).
BOOT_DATASETS = {
    "boot/delta_mean": np.float32, "boot/delta_std": np.float32, "boot/ci_low": np.float32,
    "boot/ci_high": np.float32, "boot/n_finite": np.int32, "boot/n_minority": np.int32,
}
#: How a 02b file stores its four bootstrap statistics (meta ``boot_precision``; 02b's
#: ``--boot-precision``): "float32" as computed, or "compact": ``boot/delta_mean``, ``ci_low``,
#: ``ci_high`` as int16 multiples of BOOT_QUANTUM (dataset attr ``quantum``) rounded away from
#: zero (so the sign, and zero, are exact; error below one quantum, 6.1·10⁻⁵; |value| up to
#: 32,767 quanta; BOOT_NAN_CODE is NaN) and ``boot/delta_std`` as float16 (relative error at
#: most 2⁻¹¹ above 6.1·10⁻⁵, absolute at most 3·10⁻⁸ below). Readers get float32 either way.
BOOT_PRECISIONS = ("float32", "compact")
BOOT_QUANTUM = 2.0**-14
BOOT_NAN_CODE = -32768
_COMPACT_DTYPES = {"boot/delta_mean": np.int16, "boot/ci_low": np.int16, "boot/ci_high": np.int16,
                   "boot/delta_std": np.float16}
#: The 02b columns ``iter_boot_edges`` adds to the 02a ones.
BOOT_EDGE_DTYPES = {
    "delta_mean": np.float32, "delta_std": np.float32, "ci_low": np.float32, "ci_high": np.float32,
    "bias": np.float32, "bootstrap_pval": np.float64, "n_finite": np.int32,
}
#: Most bytes a reader of a "ranks" r-form 02a file holds for its r's (``ranks_read_bytes``);
#: the writer stores the products instead past it. Readers' memory estimators count it.
RANKS_READ_BYTES = 20 * 2**20
#: Density (edges / pairs) from which the bitmap form is stored (docs/stage02a.md, "Storage").
BITMAP_DENSITY = 1 / 32
#: Bytes of the bitmap held in memory while writing or reading (one window).
BITMAP_WINDOW_BYTES = 1 << 20
#: Established 02a names (dronetanalysis "common" storage mode) → the dcoex dataset they
#: are hard links to (docs/stage02a.md, "Established names"); ``significant/indices`` only
#: in the sparse form.
ESTABLISHED_BASE_LINKS = {
    "significant/indices": "edges/pair_index",
    "low/corr_sig": "edges/r_low",
    "high/corr_sig": "edges/r_high",
    "diff/qval_sig": "edges/q_diff",
}
#: meta attrs the established 02a "full" mode also wrote on the ``significant`` group.
_SIGNIFICANT_COUNTS = ("n_sig_low", "n_sig_high", "n_sig_differential", "n_sig_edges")


def write_gene_names(group: h5py.Group, gene_names: list[str] | np.ndarray) -> None:
    """``gene_names`` of a per-gene file (02a, 02b, 03): fixed-length UTF-8 strings as wide as
    the longest name, shuffle + gzip. Variable-length strings sit in an unfiltered heap (~30 B per
    name, ~0.37 MB per file at 12,625 genes, three files per reference gene); this costs ~1 B per
    name. Readers get the same bytes per name (h5py returns bytes for both)."""
    encoded = [str(name).encode("utf-8") for name in gene_names]
    width = max([len(b) for b in encoded] + [1])
    array = np.array(encoded, dtype=f"S{width}").astype(h5py.string_dtype("utf-8", width))
    group.create_dataset("gene_names", data=array, **dataset_options(array.shape, array.dtype))


@dataclass(frozen=True)
class QTable:
    """A BH family's q table as 02a's science hands it to the writer: ``size`` entries, and
    ``pieces()`` yielding them as (statistic, q) float64 arrays in ascending statistic, one
    bounded piece at a time (the differential table may live in a scratch file)."""

    size: int
    pieces: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]

    @classmethod
    def of(cls, stat: np.ndarray, q: np.ndarray) -> QTable:
        """A table held in memory, one piece."""
        return cls(len(stat), lambda: iter([(stat, q)]))


class BaseEdgeWriter:
    """Writes a 02a file's edges into the open (new) h5py file ``f`` in bounded chunks.

    ``n_edges`` (known before the edges are emitted) and the density n_edges / N(N−1)/2
    choose the form (``edge_form``): the sparse int64 ``edges/pair_index`` or, at density
    >= ``BITMAP_DENSITY``, the packed ``edges/pair_bitmap``, where the r's are stored as
    integer rank products or the groups' ranks when the caller gives them (``R_FORMS``). The q
    tables are written at once (``q_tables/``); ``append`` takes chunks in ascending pair order
    holding the ``BASE_EMITTED`` columns.
    """

    def __init__(self, f: h5py.File, *, n_genes: int, n_edges: int, tables: Mapping[str, QTable],
                 threads: int = 1, ranks: tuple[IntegerRanks, IntegerRanks] | None = None) -> None:
        """``tables``: each family of ``Q_FAMILIES`` → its QTable (02a science's ``on_tables``);
        ``threads`` compress the chunks while the caller computes (dcoex.h5chunks.DirectColumns);
        ``ranks`` (LOW, HIGH: the ranks 02a's products came from) allow the "product" and
        "ranks" r forms."""
        self.f = f
        self._direct = DirectColumns(threads=threads)
        self.n_tests = n_pairs(int(n_genes))
        self.n_edges = int(n_edges)
        self.form = edge_form(self.n_tests, self.n_edges)
        self.q_diff_form = "column" if 2 * tables["diff"].size > self.n_edges else "table"
        group_sizes = None if ranks is None else tuple(int(rk.u.shape[1]) for rk in ranks)
        self.r_form = r_form(self.form, group_sizes, n_genes=int(n_genes), n_edges=self.n_edges)
        group = f.require_group("edges")
        group.attrs["n_edges"] = self.n_edges
        dtypes = {name: BASE_EDGE_DTYPES[name] for name in BASE_STORED}
        if self.r_form != "float":
            dtypes = {}
            for name, rk in zip(("low", "high"), ranks):
                scale = np.asarray(rk.scale, dtype=np.float32)
                f.create_dataset(f"scales/{name}", data=scale, **dataset_options(scale.shape, scale.dtype))
                k = int(rk.u.shape[1])
                if self.r_form == "product":
                    dtypes[f"d_{name}"] = product_dtype(k)
                else:
                    u = rk.u.astype(rank_dtype(k))
                    f.create_dataset(f"ranks/{name}", data=u, **dataset_options(u.shape, u.dtype))
        if self.form == "sparse":
            dtypes = {"pair_index": BASE_EDGE_DTYPES["pair_index"], **dtypes}
        if self.q_diff_form == "column":
            dtypes["q_diff"] = BASE_EDGE_DTYPES["q_diff"]
        self._columns = {
            name: (group.create_dataset(name, (self.n_edges,), dtype, **dataset_options((self.n_edges,), dtype)), dtype)
            for name, dtype in dtypes.items()
        }
        q_group = f.require_group("q_tables")
        for family in Q_FAMILIES:
            if family == "diff" and self.q_diff_form == "column":
                continue
            _write_table(q_group, family, tables[family], self._direct)
        if self.form == "bitmap":
            n_bytes = (self.n_tests + 7) // 8
            self._bitmap = group.create_dataset("pair_bitmap", (n_bytes,), np.uint8,
                                                **dataset_options((n_bytes,), np.uint8))
            self._window = np.zeros(BITMAP_WINDOW_BYTES * 8, dtype=bool)
            self._window_start = 0  # first byte of the window
        self._written = 0

    def append(self, chunk: Mapping[str, np.ndarray]) -> None:
        """Append edges (ascending pair_index, after every edge already written)."""
        count = int(np.asarray(chunk["pair_index"]).size)
        if count == 0:
            return
        end = self._written + count
        if end > self.n_edges:
            raise ValueError(f"more edges than the {self.n_edges} announced")
        for name, (ds, dtype) in self._columns.items():
            self._direct.write(ds, self._written, np.asarray(chunk[name]).astype(dtype, copy=False))
        if self.form == "bitmap":
            self._set_bits(np.asarray(chunk["pair_index"], dtype=np.int64))
        self._written = end

    def _set_bits(self, pairs: np.ndarray) -> None:
        width = self._window.size
        while pairs.size:
            first_bit = self._window_start * 8
            inside = np.searchsorted(pairs, first_bit + width, side="left")
            self._window[pairs[:inside] - first_bit] = True
            pairs = pairs[inside:]
            if pairs.size:
                self._flush_window()
                self._window_start = int(pairs[0] // 8)

    def _flush_window(self) -> None:
        packed = np.packbits(self._window, bitorder="little")
        end = min(self._window_start + packed.size, self._bitmap.shape[0])
        if packed[: end - self._window_start].any():
            self._direct.write(self._bitmap, self._window_start, packed[: end - self._window_start])
        self._window[:] = False

    def abandon(self) -> None:
        """Stop the compression threads of a writer whose file is being discarded (after an error)."""
        self._direct.abandon()

    def close(self, meta: Mapping[str, object], gene_names: list[str]) -> None:
        """Write meta (plus ``edge_form``), the gene names and the established links."""
        if self._written != self.n_edges:
            raise ValueError(f"{self._written} edges written of the {self.n_edges} announced")
        if self.form == "bitmap":
            self._flush_window()
        self._direct.close()
        write_attrs(self.f.require_group("meta"), {**meta, "edge_form": self.form, "q_diff_form": self.q_diff_form,
                                                   "r_form": self.r_form})
        write_gene_names(self.f, gene_names)
        for alias, target in ESTABLISHED_BASE_LINKS.items():
            if target in self.f:
                link_dataset(self.f, alias, target)
        write_attrs(self.f.require_group("significant"), {k: meta[k] for k in _SIGNIFICANT_COUNTS if k in meta})


def _write_table(group: h5py.Group, family: str, table: QTable, direct: DirectColumns) -> None:
    """``{family}_stat`` and ``{family}_q`` (float64) written piece by piece."""
    shape = (table.size,)
    stat_ds, q_ds = (group.create_dataset(f"{family}_{name}", shape, np.float64,
                                          **dataset_options(shape, np.float64)) for name in ("stat", "q"))
    at = 0
    for stat, q in table.pieces():
        direct.write(stat_ds, at, stat)
        direct.write(q_ds, at, q)
        at += len(stat)
    if at != table.size:
        raise RuntimeError(f"q table {family}: {at} entries written for {table.size}")


def product_dtype(k: int) -> type | None:
    """Integer dtype holding every rank product of a group of ``k`` samples (|u_i·u_j| <=
    ||u||² <= (k³ − k)/3 with u = 2·rank − (k + 1)): int16 up to k = 46, int32 up to k = 1,861,
    else None."""
    bound = (int(k) ** 3 - int(k)) // 3
    for dtype in (np.int16, np.int32):
        if bound <= np.iinfo(dtype).max:
            return dtype
    return None


def rank_dtype(k: int) -> type:
    """Integer dtype of a group's stored ranks u = 2·rank − (k + 1), |u| <= k − 1: int8 up to
    k = 128, else int16."""
    return np.int8 if int(k) - 1 <= np.iinfo(np.int8).max else np.int16


def ranks_read_bytes(n_genes: int, group_sizes: tuple[int, int]) -> int:
    """Bytes a reader of a "ranks" r-form file holds for its r's: both groups' ranks in the
    dtype of their exact products (dcoex.ranks.exact_dtype) and one block of products
    (dcoex.rank_products.BLOCK_CELLS)."""
    from dcoex.rank_products import BLOCK_CELLS

    widths = [np.dtype(exact_dtype(k, max(int(k) - 1, 1))).itemsize for k in group_sizes]
    return sum(int(n_genes) * int(k) * w for k, w in zip(group_sizes, widths)) + BLOCK_CELLS * max(widths)


def base_read_bytes(n_genes: int, n_edges: int | None = None, group_sizes: tuple[int, int] | None = None) -> int:
    """Bytes a reader of a 02a file holds for its r's beyond one chunk: ``ranks_read_bytes`` when
    the file is in the "ranks" r form, else 0. With ``n_edges`` or ``group_sizes`` unknown, a
    bound: at most RANKS_READ_BYTES, and at most what a file of n_genes genes (n_edges edges) in
    that form can hold (its integer ranks take fewer bytes than 8 B per edge, the exact-dtype
    copies at most 4× that, the block at most one product per pair)."""
    n = int(n_genes)
    pairs = n_pairs(n)
    if n_edges is not None and edge_form(pairs, int(n_edges)) != "bitmap":
        return 0
    if n_edges is not None and group_sizes is not None:
        dense = r_form("bitmap", group_sizes, n_genes=n, n_edges=int(n_edges)) == "ranks"
        return ranks_read_bytes(n, group_sizes) if dense else 0
    from dcoex.rank_products import BLOCK_CELLS

    edges = pairs if n_edges is None else min(pairs, int(n_edges))
    return int(min(RANKS_READ_BYTES, 32 * edges + 8 * min(BLOCK_CELLS, pairs)))


def r_form(form: str, group_sizes: tuple[int, int] | None, *, n_genes: int, n_edges: int) -> str:
    """How a 02a file stores its r's (``R_FORMS``): in the bitmap edge form with the groups'
    ranks known (``group_sizes``) and every product fitting an integer dtype, "ranks" when the
    ranks (n_genes × k per group) take fewer bytes than the products (n_edges per group) and a
    reader holds at most ``RANKS_READ_BYTES`` for them (``ranks_read_bytes``), else "product";
    otherwise "float"."""
    if form != "bitmap" or group_sizes is None or any(product_dtype(k) is None for k in group_sizes):
        return "float"
    rank_bytes = sum(int(n_genes) * int(k) * np.dtype(rank_dtype(k)).itemsize for k in group_sizes)
    product_bytes = sum(int(n_edges) * np.dtype(product_dtype(k)).itemsize for k in group_sizes)
    small = rank_bytes < product_bytes and ranks_read_bytes(n_genes, group_sizes) <= RANKS_READ_BYTES
    return "ranks" if small else "product"


def stored_edges(group: h5py.Group) -> int:
    """Number of edges of a 02a file's ``edges`` group, whatever its edge and r forms."""
    if "n_edges" in group.attrs:
        return int(group.attrs["n_edges"])
    return int(group["r_low" if "r_low" in group else "d_low"].shape[0])


def edge_form(n_tests: int, n_edges: int) -> str:
    """"bitmap" when the edges are at least ``BITMAP_DENSITY`` of the pairs, else "sparse"."""
    return "bitmap" if n_tests and n_edges >= BITMAP_DENSITY * n_tests else "sparse"


def iter_base_edges(path: Path, *, chunk_edges: int,
                    columns: Iterable[str] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Every edge column of a 02a file (BASE_EDGE_DTYPES, derived ones computed), or only
    ``columns`` (names of BASE_EDGE_DTYPES; the others are then neither read nor computed),
    in chunks of at most ``chunk_edges`` edges, ascending pair_index. ValueError naming the
    file if it is unreadable or incomplete. At most one chunk (and one bitmap window) is in memory."""
    if chunk_edges < 1:
        raise ValueError(f"chunk_edges {chunk_edges}: must be >= 1")
    wanted = tuple(BASE_EDGE_DTYPES) if columns is None else tuple(columns)
    unknown = sorted(set(wanted) - set(BASE_EDGE_DTYPES))
    if unknown:
        raise ValueError(f"unknown 02a edge columns {unknown}")
    with open_h5_input(path, "base correlations file") as f:
        try:
            meta = read_meta(f["meta"])
            group = f["edges"]
            n_edges = stored_edges(group)
            if any(group[name].shape != (n_edges,) for name in (*BASE_STORED, "d_low", "d_high") if name in group):
                raise ValueError(f"base correlations file {path}: edge columns have different lengths")
            tables = _q_tables(f)
            products = _RankProducts(f, meta) if "scales" in f else None
            pairs = _pair_chunks(group, n_edges, chunk_edges)
            start = 0
            for pair in pairs:
                end = start + pair.size
                yield _edge_chunk(group, meta, pair, start, end, tables=tables, products=products, columns=wanted)
                start = end
            if start != n_edges:
                raise ValueError(f"base correlations file {path}: {start} pairs for {n_edges} edges")
        except KeyError as exc:
            raise ValueError(f"base correlations file {path} lacks {exc}") from None
        except OSError as exc:
            raise ValueError(f"base correlations file {path} is unreadable or truncated ({exc})") from None


def _q_tables(f: h5py.File) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The q tables of a 02a file (format 3; none in format 2, which stores the q columns)."""
    group = f.get("q_tables")
    if group is None:
        return {}
    return {family: (group[f"{family}_stat"][()], group[f"{family}_q"][()])
            for family in Q_FAMILIES if f"{family}_stat" in group}


def q_from_table(table: tuple[np.ndarray, np.ndarray], stat: np.ndarray) -> np.ndarray:
    """q of statistics ``stat`` (float64) from a q table (statistic, q): that of the last
    entry <= the statistic, NaN below the first (what 02a's science looks up)."""
    values, q = table
    at = np.searchsorted(values, np.asarray(stat, dtype=np.float64), side="right") - 1
    out = q[np.maximum(at, 0)] if q.size else np.full(at.shape, np.nan)
    return np.where(at >= 0, out, np.nan)


def _pair_chunks(group: h5py.Group, n_edges: int, chunk_edges: int) -> Iterator[np.ndarray]:
    """Pair indices of the edges, ascending, in chunks of at most ``chunk_edges``."""
    if "pair_index" in group:
        ds = group["pair_index"]
        if ds.shape != (n_edges,):
            raise ValueError(f"{group.file.filename}: edge columns have different lengths")
        for start in range(0, n_edges, chunk_edges):
            yield ds[start : start + chunk_edges].astype(np.int64)
        return
    bitmap = group["pair_bitmap"]
    pending: list[np.ndarray] = []
    n_pending = 0
    for first in range(0, bitmap.shape[0], BITMAP_WINDOW_BYTES):
        bits = np.unpackbits(bitmap[first : first + BITMAP_WINDOW_BYTES], bitorder="little")
        found = np.flatnonzero(bits).astype(np.int64) + first * 8
        while found.size:
            take = min(found.size, chunk_edges - n_pending)
            pending.append(found[:take])
            n_pending += take
            found = found[take:]
            if n_pending == chunk_edges:
                yield np.concatenate(pending)
                pending, n_pending = [], 0
    if n_pending:
        yield np.concatenate(pending)


class _RankProducts:
    """The r's of a 02a file in the "product" or "ranks" r form (``R_FORMS``): (d·scale_i)·scale_j
    in float32, as 02a's kernels compute them, with d read per edge or computed from the stored
    ranks (dcoex.rank_products.PairProducts: the ranks and one block of products in memory,
    at most ``RANKS_READ_BYTES``)."""

    def __init__(self, f: h5py.File, meta: Mapping[str, object]) -> None:
        from dcoex.rank_products import PairProducts

        self.edges = f["edges"]
        self.scales = (f["scales/low"][()], f["scales/high"][()])
        self.ranks = None
        if "ranks" in f:
            n_genes = int(meta["n_genes"])
            u = (f["ranks/low"], f["ranks/high"])
            if any(v.shape != (n_genes, int(meta[f"k_{g}"])) for g, v in zip(("low", "high"), u)):
                raise ValueError(f"{f.filename}: ranks/low or ranks/high is not genes x group size")
            self.ranks = tuple(PairProducts(v[()]) for v in u)

    def r(self, start: int, end: int, gene_i: np.ndarray, gene_j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(r_low, r_high) of edges [start, end) between genes ``gene_i`` and ``gene_j``."""
        out = []
        for at, (g, scale) in enumerate(zip(("low", "high"), self.scales)):
            d = self.edges[f"d_{g}"][start:end] if self.ranks is None else self.ranks[at].of(gene_i, gene_j)
            out.append((d.astype(np.float32) * scale[gene_i]) * scale[gene_j])
        return out[0], out[1]


def _edge_chunk(group: h5py.Group, meta: Mapping[str, object], pair: np.ndarray, start: int, end: int, *,
                tables: Mapping[str, tuple[np.ndarray, np.ndarray]], products: _RankProducts | None,
                columns: tuple[str, ...] = tuple(BASE_EDGE_DTYPES)) -> dict[str, np.ndarray]:
    """Edge ``columns`` [start, end), derived ones computed (docs/stage02a.md, "Storage"); the
    r's from the rank products and scales in the "product" and "ranks" r forms."""
    needs_r = bool(set(columns) - {"pair_index", "gene_i", "gene_j"})
    needed = set(columns) | (set(BASE_STORED) if needs_r else set())
    stored = {name: group[name][start:end] for name in BASE_EDGE_DTYPES
              if name in needed and name in group and name != "pair_index"}
    n_genes, k_low, k_high = int(meta["n_genes"]), int(meta["k_low"]), int(meta["k_high"])
    genes = (None, None)
    if (products is not None and needs_r) or {"gene_i", "gene_j"} & set(columns):
        genes = pair_from_flat(pair, n_genes)
    gene_i, gene_j = genes
    if products is not None and needs_r:
        stored["r_low"], stored["r_high"] = products.r(start, end, gene_i, gene_j)
    r_low, r_high = stored.get("r_low"), stored.get("r_high")
    derived = {
        "q_low": lambda: q_from_table(tables["low"], np.abs(r_low)),
        "q_high": lambda: q_from_table(tables["high"], np.abs(r_high)),
        "q_diff": lambda: q_from_table(tables["diff"], w_statistic(r_low, r_high)),
        "pair_index": pair,
        "gene_i": gene_i,
        "gene_j": gene_j,
        "delta": lambda: r_high - r_low,
        "p_low": lambda: t_pvalue(r_low, k_low - 2),
        "p_high": lambda: t_pvalue(r_high, k_high - 2),
        "p_diff": lambda: z_pvalue(fisher_z(r_low, r_high, k_low, k_high)),
        "sig_low": lambda: np.abs(r_low) >= np.float32(meta["cut_low"]),
        "sig_high": lambda: np.abs(r_high) >= np.float32(meta["cut_high"]),
    }
    out = {}
    for name in columns:
        value = stored[name] if name in stored else derived[name]
        out[name] = np.asarray(value() if callable(value) else value, dtype=BASE_EDGE_DTYPES[name])
    return out


def read_base_edges(path: Path) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    """(meta, edge columns) of a 02a file, every column of BASE_EDGE_DTYPES (derived ones
    computed); ValueError naming it if unreadable or incomplete."""
    with open_h5_input(path, "base correlations file") as f:
        try:
            meta = read_meta(f["meta"])
        except KeyError as exc:
            raise ValueError(f"base correlations file {path} lacks {exc}") from None
    chunks = list(iter_base_edges(path, chunk_edges=1 << 62))
    edges = {name: (np.concatenate([c[name] for c in chunks]) if chunks else np.empty(0, dtype))
             for name, dtype in BASE_EDGE_DTYPES.items()}
    return meta, edges


def read_base_meta(path: Path) -> tuple[dict[str, object], int]:
    """(meta, number of edges) of a 02a file without its edge columns; ValueError naming it
    if unreadable or incomplete."""
    with open_h5_input(path, "base correlations file") as f:
        try:
            return read_meta(f["meta"]), stored_edges(f["edges"])
        except KeyError as exc:
            raise ValueError(f"base correlations file {path} lacks {exc}") from None
        except OSError as exc:
            raise ValueError(f"base correlations file {path} is unreadable or truncated ({exc})") from None


def touched_genes(path: Path, *, chunk_edges: int = 1 << 22) -> int:
    """How many genes the edges of a 02a file touch (distinct gene_i and gene_j), read in
    chunks of the pair index; ValueError naming the file if unreadable or incomplete."""
    meta, _ = read_base_meta(path)
    touched = np.zeros(int(meta["n_genes"]), dtype=bool)
    for chunk in iter_base_edges(path, chunk_edges=chunk_edges, columns=("gene_i", "gene_j")):
        touched[chunk["gene_i"]] = True
        touched[chunk["gene_j"]] = True
    return int(np.count_nonzero(touched))


def read_selected_count(path: Path, edge_selection: str = "sig_differential") -> int | None:
    """How many edges 02b will take from a 02a file (|E0|): meta ``n_sig_differential``
    (``sig_differential``) or ``n_sig_edges`` (``sig_edges``), read from the attributes only;
    None when the file or the count is missing or unreadable."""
    attr = "n_sig_edges" if edge_selection == "sig_edges" else "n_sig_differential"
    try:
        with h5py.File(path, "r") as f:
            value = f["meta"].attrs.get(attr) if "meta" in f else None
    except (OSError, KeyError):
        return None
    return None if value is None else int(value)


class BootFileWriter:
    """Writes a 02b file into the open (new) h5py file ``f`` chunk by chunk: the columns of
    BOOT_DATASETS (and the (E, B) replicate matrix ``boot/delta_replicates`` when
    ``n_boot_stored`` is given) are resizable chunked datasets, so memory stays bounded
    by one chunk of edges whatever the gene's edge count. Rows are held until a whole HDF5
    chunk is complete, so each chunk is compressed and written once (no dead space)."""

    def __init__(self, f: h5py.File, *, max_edges: int, n_boot_stored: int | None = None,
                 precision: str = "float32") -> None:
        """``max_edges``: an upper bound of the edges to come (chunks are no longer);
        ``precision``: how the bootstrap statistics are stored (BOOT_PRECISIONS)."""
        if precision not in BOOT_PRECISIONS:
            raise ValueError(f"boot precision {precision!r}: expected one of {', '.join(BOOT_PRECISIONS)}")
        self.f, self.n_edges = f, 0
        filters = filter_options()
        cap = max(1, int(max_edges))
        names = dict(BOOT_DATASETS)
        if precision == "compact":
            names.update(_COMPACT_DTYPES)
        if n_boot_stored is not None:
            names["boot/delta_replicates"] = np.float32
        self._pending: dict[str, list[np.ndarray]] = {name: [] for name in names}
        self._written: dict[str, int] = dict.fromkeys(names, 0)
        for name, dtype in names.items():
            tail = () if name in BOOT_DATASETS else (int(n_boot_stored),)
            row_bytes = np.dtype(dtype).itemsize * int(np.prod(tail, dtype=np.int64))
            rows = min(cap, max(1, CHUNK_BYTES // row_bytes))
            ds = f.create_dataset(name, (0, *tail), dtype=dtype, maxshape=(None, *tail), chunks=(rows, *tail),
                                  **filters)
            if dtype is np.int16:
                ds.attrs["quantum"] = BOOT_QUANTUM

    def _write(self, name: str, rows: np.ndarray) -> None:
        dataset, e0 = self.f[name], self._written[name]
        dataset.resize((e0 + rows.shape[0], *dataset.shape[1:]))
        dataset[e0 : e0 + rows.shape[0]] = rows
        self._written[name] = e0 + rows.shape[0]

    def _push(self, name: str, values: np.ndarray) -> None:
        """Queue rows of ``name`` (any layout); write every completed chunk, copying at most
        one chunk at a time."""
        dataset, pending = self.f[name], self._pending[name]
        rows, dtype = dataset.chunks[0], dataset.dtype
        start, n = 0, values.shape[0]
        held = sum(p.shape[0] for p in pending)
        if held:
            start = min(rows - held, n)
            pending.append(np.array(values[:start], dtype=dtype))
            if held + start == rows:
                self._write(name, np.concatenate(pending))
                pending.clear()
        while n - start >= rows:
            self._write(name, np.array(values[start : start + rows], dtype=dtype))
            start += rows
        if start < n:
            pending.append(np.array(values[start:], dtype=dtype))

    def append(self, columns: Mapping[str, np.ndarray], replicates: np.ndarray | None = None) -> None:
        """Append one chunk of edges: every BOOT_DATASETS column (and the (E, B) replicates
        when stored)."""
        for name in BOOT_DATASETS:
            values = np.asarray(columns[name])
            self._push(name, encode_quanta(values) if self.f[name].dtype == np.int16 else values)
        if replicates is not None:
            self._push("boot/delta_replicates", replicates)
        self.n_edges += int(np.asarray(columns["boot/delta_mean"]).shape[0])

    def finish(self, meta: Mapping[str, object], gene_names: list[str]) -> None:
        """Write the rows still held, meta and names."""
        for name, pending in self._pending.items():
            if pending:
                self._write(name, np.concatenate(pending))
                pending.clear()
        write_attrs(self.f.require_group("meta"), meta)
        write_gene_names(self.f, gene_names)


def encode_quanta(values: np.ndarray) -> np.ndarray:
    """int16 codes of ``values`` in BOOT_QUANTUM steps, rounded away from zero (sign exact),
    clipped to ±32,767 steps; NaN → BOOT_NAN_CODE."""
    steps = np.asarray(values, dtype=np.float64) / BOOT_QUANTUM
    codes = np.clip(np.where(steps > 0, np.ceil(steps), np.floor(steps)), -32767, 32767)
    codes[np.isnan(codes)] = BOOT_NAN_CODE
    return codes.astype(np.int16)


def _boot_values(ds: h5py.Dataset, start: int, end: int) -> np.ndarray:
    """Rows [start, end) of a 02b statistic as float32, whichever BOOT_PRECISIONS stored it."""
    raw = ds[start:end]
    if raw.dtype != np.int16:
        return raw.astype(np.float32, copy=False)
    out = raw.astype(np.float32) * np.float32(ds.attrs["quantum"])
    out[raw == BOOT_NAN_CODE] = np.nan
    return out


def selected_rows(edges: Mapping[str, np.ndarray], mode: str) -> np.ndarray:
    """Boolean mask of the 02a edges (a chunk of ``iter_base_edges``) that 02b bootstraps under
    ``edge_selection`` ``mode``: all (sig_differential) or those also significant in a group
    (sig_edges = sig_differential ∧ (sig_low ∨ sig_high))."""
    if mode == "sig_differential":
        return np.ones(edges["pair_index"].shape, dtype=bool)
    return edges["sig_low"].astype(bool) | edges["sig_high"].astype(bool)


class BaseEdgesSha:
    """sha256 of the 02a edges 02b bootstrapped (their pair_index int64, r_low, r_high float32),
    fed chunk by chunk: 02b records it (meta ``base_edges_sha``), readers check it."""

    def __init__(self) -> None:
        self._hashes = [hashlib.sha256() for _ in range(3)]

    def update(self, edges: Mapping[str, np.ndarray]) -> None:
        for sha, column in zip(self._hashes, (edges["pair_index"].astype(np.int64), edges["r_low"].astype(np.float32),
                                              edges["r_high"].astype(np.float32)), strict=True):
            sha.update(np.ascontiguousarray(column).tobytes())

    def hexdigest(self) -> str:
        return hashlib.sha256(b"".join(sha.digest() for sha in self._hashes)).hexdigest()


def iter_boot_edges(base_path: Path, boot_path: Path, *, chunk_edges: int,
                    base_columns: Iterable[str] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """The edges of a 02b file joined with its 02a file, in chunks of at most ``chunk_edges``
    02a edges (before the selection): every BASE_EDGE_DTYPES column (or ``base_columns`` and
    those the join needs: the others are neither read nor derived) and every BOOT_EDGE_DTYPES
    column, bias and bootstrap_pval computed. ValueError (one line, naming the files) if a file is unreadable
    or the 02b rows are not the 02a edges its ``edge_selection_mode`` selects (count, stored pairs
    of format-2 files, or ``base_edges_sha``); the last is known only after the last chunk."""
    with open_h5_input(boot_path, "bootstrap (02b) file") as f:
        try:
            meta = read_meta(f["meta"])
            values = {name: f[name] for name in ("boot/delta_mean", "boot/delta_std", "boot/ci_low", "boot/ci_high",
                                                  "boot/n_finite")}
            n_rows = int(values["boot/delta_mean"].shape[0])
            stored = {name: f[name] for name in ("boot/n_minority", "boot/bias", "pval/bootstrap_pval",
                                                 "edges/pair_index") if name in f}
            if "boot/n_minority" not in stored and "pval/bootstrap_pval" not in stored:
                raise KeyError("boot/n_minority")
        except KeyError as exc:
            raise ValueError(f"bootstrap (02b) file {boot_path} lacks {exc}") from None
        mode = str(meta.get("edge_selection_mode", "sig_differential"))
        if any(v.shape != (n_rows,) for v in (*values.values(), *stored.values())):
            raise ValueError(f"bootstrap (02b) file {boot_path} has value datasets not of length {n_rows}")
        sha = BaseEdgesSha()
        n0, differ, first = 0, 0, None
        wanted = None
        if base_columns is not None:
            join = ("pair_index", "r_low", "r_high", "delta") + (("sig_low", "sig_high") if mode == "sig_edges" else ())
            wanted = tuple(dict.fromkeys((*join, *base_columns)))
        for chunk in iter_base_edges(Path(base_path), chunk_edges=chunk_edges, columns=wanted):
            keep = selected_rows(chunk, mode)
            e = {name: col[keep] for name, col in chunk.items()} if not keep.all() else chunk
            m = int(e["pair_index"].size)
            sha.update(e)
            stop = min(n0 + m, n_rows)
            if "edges/pair_index" in stored:  # format 2: the pairs are stored, compare them
                bad = np.flatnonzero(e["pair_index"][: stop - n0] != stored["edges/pair_index"][n0:stop])
                if bad.size and first is None:
                    first = (n0 + int(bad[0]), int(e["pair_index"][bad[0]]),
                             int(stored["edges/pair_index"][n0 + int(bad[0])]))
                differ += int(bad.size)
            if stop - n0 == m and not differ:
                for name, ds in values.items():
                    e[name.split("/")[1]] = ds[n0:stop] if name == "boot/n_finite" else _boot_values(ds, n0, stop)
                e["bias"] = stored["boot/bias"][n0:stop] if "boot/bias" in stored \
                    else bootstrap_bias(e["delta_mean"], e["delta"])
                e["bootstrap_pval"] = stored["pval/bootstrap_pval"][n0:stop] if "pval/bootstrap_pval" in stored \
                    else bootstrap_pvalue(stored["boot/n_minority"][n0:stop], e["n_finite"])
                yield {**e, **{name: np.asarray(e[name], dtype=dtype) for name, dtype in BOOT_EDGE_DTYPES.items()}}
            n0 += m
        if n0 != n_rows:
            raise ValueError(f"edge sets differ: base (02a) file has {n0} {mode} edges, bootstrap (02b) file has "
                             f"{n_rows} (edge_selection_mode={mode}; {base_path}, {boot_path})")
        if differ:
            k, ours, theirs = first
            raise ValueError(f"edge sets differ at {differ} of {n0} positions (first: position {k}, base pair_index "
                             f"{ours}, bootstrap {theirs}; edge_selection_mode={mode})")
        if "base_edges_sha" in meta and str(meta["base_edges_sha"]) != sha.hexdigest():
            raise ValueError(f"edge sets differ: bootstrap (02b) file {boot_path} was made from other 02a edges than "
                             f"{base_path} holds (base_edges_sha; edge_selection_mode={mode})")
