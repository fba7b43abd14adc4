"""Per-gene edge files of stages 02a (``base_correlations/``) and 02b (``bootstrap_significant/``).

Layouts are fixed in docs/design.md §3.4–§3.5 and docs/stage02a.md / docs/stage02b.md. Every file has a
``meta`` group (attrs), a root ``gene_names`` dataset and sparse edge tables; the
``/memfit`` group (memory figures) is written by the stage.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import h5py
import numpy as np

from dcoex.h5io import (
    CHUNK_BYTES,
    filter_options,
    link_dataset,
    open_h5_input,
    plain_attr,
    read_meta,
    write_attrs,
    write_dataset,
)

BASE_EDGE_DTYPES = {
    "pair_index": np.int64, "gene_i": np.int32, "gene_j": np.int32,
    "r_low": np.float32, "r_high": np.float32, "delta": np.float32,
    "p_low": np.float64, "p_high": np.float64, "p_diff": np.float64,
    "q_low": np.float64, "q_high": np.float64, "q_diff": np.float64,
    "sig_low": np.bool_, "sig_high": np.bool_,
}
BOOT_DATASETS = {
    "edges/pair_index": np.int64, "edges/gene_i": np.int32, "edges/gene_j": np.int32,
    "base/delta": np.float32, "base/r_low": np.float32, "base/r_high": np.float32,
    "boot/delta_mean": np.float32, "boot/delta_std": np.float32, "boot/ci_low": np.float32,
    "boot/ci_high": np.float32, "boot/bias": np.float32, "boot/n_finite": np.int32,
    "pval/bootstrap_pval": np.float64,
}
#: Established 02a names (dronetanalysis "common" storage mode) → the dcoex dataset they
#: are hard links to (docs/stage02a.md, "Established names").
ESTABLISHED_BASE_LINKS = {
    "significant/indices": "edges/pair_index",
    "low/corr_sig": "edges/r_low",
    "high/corr_sig": "edges/r_high",
    "diff/delta_sig": "edges/delta",
    "diff/pval_sig": "edges/p_diff",
    "diff/qval_sig": "edges/q_diff",
}
#: Established 02b names → dcoex dataset (docs/stage02b.md).
ESTABLISHED_BOOT_LINKS = {"edges/indices": "edges/pair_index"}
#: meta attrs the established 02a "full" mode also wrote on the ``significant`` group.
_SIGNIFICANT_COUNTS = ("n_sig_low", "n_sig_high", "n_sig_differential", "n_sig_edges")


def _write_names(f: h5py.File, gene_names: list[str]) -> None:
    write_dataset(f, "gene_names", np.array(gene_names, dtype=object))


def write_base_file(f: h5py.File, edges: Mapping[str, np.ndarray], meta: Mapping[str, object], gene_names: list[str]) -> None:
    """Write a 02a file into the open (new) h5py file ``f``."""
    write_attrs(f.require_group("meta"), meta)
    _write_names(f, gene_names)
    group = f.require_group("edges")
    for name, dtype in BASE_EDGE_DTYPES.items():
        write_dataset(group, name, edges[name], dtype=dtype)
    for alias, target in ESTABLISHED_BASE_LINKS.items():
        link_dataset(f, alias, target)
    write_attrs(f["significant"], {k: meta[k] for k in _SIGNIFICANT_COUNTS if k in meta})


def read_base_edges(path: Path) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    """(meta, edge columns) of a 02a file; ValueError naming it if unreadable or incomplete."""
    with open_h5_input(path, "base correlations file") as f:
        try:
            meta = read_meta(f["meta"])
            edges = {name: f[f"edges/{name}"][()] for name in BASE_EDGE_DTYPES}
        except KeyError as exc:
            raise ValueError(f"base correlations file {path} lacks {exc}") from None
        except OSError as exc:
            raise ValueError(f"base correlations file {path} is unreadable or truncated ({exc})") from None
    n_edges = edges["pair_index"].shape[0]
    if any(col.shape != (n_edges,) for col in edges.values()):
        raise ValueError(f"base correlations file {path}: edge columns have different lengths")
    return meta, edges


def read_base_meta(path: Path) -> tuple[dict[str, object], int]:
    """(meta, number of edges) of a 02a file without its edge columns; ValueError naming it
    if unreadable or incomplete."""
    with open_h5_input(path, "base correlations file") as f:
        try:
            return read_meta(f["meta"]), int(f["edges/pair_index"].shape[0])
        except KeyError as exc:
            raise ValueError(f"base correlations file {path} lacks {exc}") from None
        except OSError as exc:
            raise ValueError(f"base correlations file {path} is unreadable or truncated ({exc})") from None


def iter_base_edges(path: Path, *, chunk_edges: int) -> Iterator[dict[str, np.ndarray]]:
    """The edge columns of a 02a file (as read_base_edges) in ascending pair_index, at most
    ``chunk_edges`` edges at a time; ValueError naming the file if unreadable or incomplete."""
    step = max(1, int(chunk_edges))
    with open_h5_input(path, "base correlations file") as f:
        try:
            columns = {name: f[f"edges/{name}"] for name in BASE_EDGE_DTYPES}
            n_edges = columns["pair_index"].shape[0]
            if any(col.shape != (n_edges,) for col in columns.values()):
                raise ValueError(f"base correlations file {path}: edge columns have different lengths")
            for e0 in range(0, n_edges, step):
                yield {name: col[e0 : e0 + step] for name, col in columns.items()}
        except KeyError as exc:
            raise ValueError(f"base correlations file {path} lacks {exc}") from None
        except OSError as exc:
            raise ValueError(f"base correlations file {path} is unreadable or truncated ({exc})") from None


def meta_matches(path: Path, expected: Mapping[str, object], datasets: list[str]) -> bool:
    """True if the file opens, its meta attrs equal ``expected`` and the datasets exist."""
    with h5py.File(path, "r") as f:
        meta = read_meta(f["meta"])
        for key, value in expected.items():
            if key not in meta:
                return False
            got = meta[key]
            if isinstance(value, float):
                if not np.isclose(float(got), value, rtol=0, atol=1e-12):
                    return False
            elif got != plain_attr(value):
                return False
        return all(name in f for name in datasets) and "gene_names" in f


def base_datasets() -> list[str]:
    return [f"edges/{name}" for name in BASE_EDGE_DTYPES]


class BootFileWriter:
    """Writes a 02b file into the open (new) h5py file ``f`` chunk by chunk: the columns of
    BOOT_DATASETS (and the (E, B) replicate matrix ``boot/delta_replicates`` when
    ``n_boot_stored`` is given) are resizable chunked datasets, so memory stays bounded
    by one chunk of edges whatever the gene's edge count. Rows are held until a whole HDF5
    chunk is complete, so each chunk is compressed and written once (no dead space)."""

    def __init__(self, f: h5py.File, *, max_edges: int, n_boot_stored: int | None = None) -> None:
        """``max_edges``: an upper bound of the edges to come (chunks are no longer)."""
        self.f, self.n_edges = f, 0
        filters = filter_options()
        cap = max(1, int(max_edges))
        names = dict(BOOT_DATASETS)
        if n_boot_stored is not None:
            names["boot/delta_replicates"] = np.float32
        self._pending: dict[str, list[np.ndarray]] = {name: [] for name in names}
        self._written: dict[str, int] = dict.fromkeys(names, 0)
        for name, dtype in names.items():
            tail = () if name in BOOT_DATASETS else (int(n_boot_stored),)
            row_bytes = np.dtype(dtype).itemsize * int(np.prod(tail, dtype=np.int64))
            rows = min(cap, max(1, CHUNK_BYTES // row_bytes))
            f.create_dataset(name, (0, *tail), dtype=dtype, maxshape=(None, *tail), chunks=(rows, *tail), **filters)

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
            self._push(name, np.asarray(columns[name]))
        if replicates is not None:
            self._push("boot/delta_replicates", replicates)
        self.n_edges += int(np.asarray(columns["edges/pair_index"]).shape[0])

    def finish(self, meta: Mapping[str, object], gene_names: list[str]) -> None:
        """Write the rows still held, meta, names and the established aliases."""
        for name, pending in self._pending.items():
            if pending:
                self._write(name, np.concatenate(pending))
                pending.clear()
        write_attrs(self.f.require_group("meta"), meta)
        _write_names(self.f, gene_names)
        for alias, target in ESTABLISHED_BOOT_LINKS.items():
            link_dataset(self.f, alias, target)
