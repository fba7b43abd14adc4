"""Per-gene edge files of stages 02a (``base_correlations/``) and 02b (``bootstrap_significant/``).

Layouts are fixed in docs/design.md §3.4–§3.5 and docs/stage02a.md / docs/stage02b.md. Every file has a
``meta`` group (attrs), a root ``gene_names`` dataset and sparse edge tables; the
``/memfit`` group (memory figures) is written by the stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from dcoex.h5io import link_dataset, open_h5_input, plain_attr, read_meta, write_attrs, write_dataset

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


def write_boot_file(
    f: h5py.File, columns: Mapping[str, np.ndarray], meta: Mapping[str, object], gene_names: list[str]
) -> None:
    """Write a 02b file's meta, names and columns (keys of BOOT_DATASETS) into ``f``."""
    write_attrs(f.require_group("meta"), meta)
    _write_names(f, gene_names)
    for name, dtype in BOOT_DATASETS.items():
        write_dataset(f, name, columns[name], dtype=dtype)
    for alias, target in ESTABLISHED_BOOT_LINKS.items():
        link_dataset(f, alias, target)


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
