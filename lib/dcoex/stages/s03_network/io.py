"""Stage 03 files: read and cross-check the 02a/02b inputs of a gene, write and read
``networks/{gi}_{gene}.h5`` (layout in docs/stage03.md)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dcoex.edge_files import (
    BASE_EDGE_DTYPES,
    BOOT_EDGE_DTYPES,
    iter_boot_edges,
    read_base_meta,
    stored_edges,
    write_gene_names,
)
from dcoex.h5io import attr_value, open_h5_input, plain_attr, read_meta, write_attrs, write_dataset
from dcoex.stages.params import EDGE_SELECTIONS
from dcoex.stages.s03_network.classify import CLASS_LABELS, presence
from dcoex.stages.s03_network.estimator import READ_CHUNK_EDGES
from hpc.errors import InputError

#: Format tag of the stage 03 files; 03b refuses files of another format.
NETWORK_FORMAT = "dcoex-network/2"

#: Network edge columns ``iter_network_edges`` gives (name → dtype): from the 02a/02b files
#: (joined by ``dcoex.edge_files.iter_boot_edges``; the name there in NETWORK_SOURCES), the class
#: code stored by 03 (``qual_score``) and what follows from them (presence, ``qual_label``).
NETWORK_EDGE_DTYPES = {
    "pair_index": np.int64, "gene_i": np.int32, "gene_j": np.int32, "delta_base": np.float32,
    "delta_boot_mean": np.float32, "delta_boot_std": np.float32, "ci_low": np.float32, "ci_high": np.float32,
    "bias": np.float32, "r_low": np.float32, "r_high": np.float32, "pval_diff": np.float64,
    "qval_diff": np.float64, "pval_boot": np.float64, "sig_low": np.bool_, "sig_high": np.bool_,
    "present_low": np.bool_, "present_high": np.bool_, "qual_score": np.int8, "qual_label": object,
}
NETWORK_SOURCES = {
    "pair_index": "pair_index", "gene_i": "gene_i", "gene_j": "gene_j", "delta_base": "delta",
    "delta_boot_mean": "delta_mean", "delta_boot_std": "delta_std", "ci_low": "ci_low", "ci_high": "ci_high",
    "bias": "bias", "r_low": "r_low", "r_high": "r_high", "pval_diff": "p_diff", "qval_diff": "q_diff",
    "pval_boot": "bootstrap_pval", "sig_low": "sig_low", "sig_high": "sig_high",
}

#: meta attributes that must be equal across the gene files of one run (03b checks them).
RUN_PARAMETERS: tuple[str, ...] = (
    "format", "n_genes", "min_effect", "corr_threshold", "require_ci_exclude_zero",
    "zero_undefined", "edge_selection", "fdr_alpha", "ci_alpha", "n_bootstrap",
    "k_low", "k_high", "expr_content_sha256",
)

#: Stage 03 options recorded in meta; an existing output is reused only if they match.
STAGE_PARAMETERS: tuple[str, ...] = ("min_effect", "corr_threshold", "require_ci_exclude_zero", "zero_undefined")

#: meta attribute holding meta + focus metrics as one JSON text (NaN allowed), so that
#: 03b reads one attribute per file instead of ~80.
SUMMARY_ATTR = "summary_json"

#: The 02a columns stage 03 reads (iter_boot_edges ``base_columns``): p_low, p_high, q_low and
#: q_high are neither read nor derived (their t-test p's cost 6 of 47 s at 7.0 M edges).
_BASE_EDGE_FIELDS = ("pair_index", "gene_i", "gene_j", "r_low", "r_high", "delta", "p_diff", "q_diff", "sig_low", "sig_high")
_BOOT_FIELDS = ("delta_mean", "delta_std", "ci_low", "ci_high", "bias", "bootstrap_pval")


@dataclass
class GeneInputs:
    """The candidate edges E0 of one reference gene with their 02a and 02b values."""

    gene_index: int
    gene_name: str
    n_genes: int
    edges: dict[str, np.ndarray]
    upstream: dict[str, Any] = field(default_factory=dict)
    #: candidate edges |E0| read (``edges`` holds those that the reader's filter kept)
    n_candidates: int = 0
    #: which of the |E0| candidate rows the reader's filter kept (bool; None: all)
    selected: np.ndarray | None = None

    @property
    def n_edges(self) -> int:
        return int(self.edges["pair_index"].size)


def _open(path: Path, what: str, gene: str) -> h5py.File:
    return open_h5_input(path, f"{what} file", context=f"gene {gene}")


def _check_gene(meta: Mapping[str, Any], path: Path, what: str, gene: str, *, gene_index: int, gene_name: str,
                n_genes: int) -> None:
    used = meta.get("gene_index_used")
    if used is None or int(used) != gene_index:
        raise InputError(f"gene {gene}: {what} file {path} is for gene index {used}, not {gene_index}")
    name = meta.get("gene_name")
    if name is not None and str(name) != gene_name:
        raise InputError(f"gene {gene}: {what} file {path} is for gene {name!r}, not {gene_name!r}")
    if int(meta.get("n_genes", -1)) != n_genes:
        raise InputError(f"gene {gene}: {what} file {path} has n_genes={meta.get('n_genes')}, expected {n_genes}")


def base_summary(base_path: Path) -> tuple[int, dict[str, Any]]:
    """(number of candidate edges, the upstream attributes an output must match) of a 02a
    file; (0, {}) if it cannot be read (the gene then fails when it is processed)."""
    try:
        with h5py.File(base_path, "r") as f:
            meta = f["meta"].attrs
            upstream = {k: attr_value(meta[k]) for k in ("expr_content_sha256", "fdr_alpha", "k_low", "k_high") if k in meta}
            return stored_edges(f["edges"]), upstream
    except (OSError, KeyError):
        return 0, {}


def network_edge_count(base_path: Path, boot_path: Path,
                       keep: Callable[[Mapping[str, np.ndarray]], np.ndarray]) -> int | None:
    """Edges of the 02b file (joined with its 02a file) that ``keep`` keeps (a mask of a chunk of
    the joined columns: ``delta``, ``ci_low``, ``ci_high``, ...), read READ_CHUNK_EDGES at a time;
    None if they cannot be read."""
    try:
        return int(sum(np.count_nonzero(keep(chunk))
                       for chunk in iter_boot_edges(base_path, boot_path, chunk_edges=READ_CHUNK_EDGES,
                                                    base_columns=_BASE_EDGE_FIELDS)))
    except (OSError, KeyError, ValueError, InputError):
        return None


def read_gene_inputs(
    base_path: Path,
    boot_path: Path,
    gene_index: int,
    gene_name: str,
    n_genes: int,
    *,
    keep: Callable[[Mapping[str, np.ndarray]], np.ndarray] | None = None,
    chunk_edges: int = READ_CHUNK_EDGES,
    expected_kept: int | None = None,
) -> GeneInputs:
    """Read E0 of one gene from its 02a and 02b files (``dcoex.edge_files.iter_boot_edges``),
    check that they agree, and keep the edges for which ``keep`` (a mask of a chunk of E0's
    columns; default: all) is true.

    The files are read ``chunk_edges`` edges at a time into columns allocated once for
    ``expected_kept`` edges (the count of kept edges when the caller knows it; grown if
    exceeded; all of E0 without ``keep``), so memory is one chunk plus the kept edges, with no
    copy of them and no heap left fragmented by chunk-sized pieces, plus one bool per candidate
    (``selected``, what the network file stores). Raises InputError naming the gene and the
    disagreement (gene, n_genes, expression checksum, group sizes, or the edge set). A missing
    02b file is accepted only when the 02a file has no edges.
    """
    gene = f"{gene_index} ({gene_name})"
    try:
        meta, n_base = read_base_meta(Path(base_path))
    except (ValueError, InputError) as exc:
        raise InputError(f"gene {gene}: base (02a) file: {exc}") from None
    _check_gene(meta, base_path, "base (02a)", gene, gene_index=gene_index, gene_name=gene_name, n_genes=n_genes)
    upstream = {
        "n_tests": int(meta.get("n_tests", n_genes * (n_genes - 1) // 2)),
        "fdr_alpha": float(meta.get("fdr_alpha", float("nan"))),
        "k_low": int(meta.get("k_low", -1)),
        "k_high": int(meta.get("k_high", -1)),
        "expr_content_sha256": str(meta.get("expr_content_sha256", "")),
    }
    empty = {**{name: np.zeros(0, dtype=BASE_EDGE_DTYPES[name]) for name in _BASE_EDGE_FIELDS},
             **{name: np.zeros(0, dtype=BOOT_EDGE_DTYPES[name]) for name in _BOOT_FIELDS}}
    if not Path(boot_path).exists():
        if n_base:
            raise InputError(f"gene {gene}: bootstrap (02b) file {boot_path} is missing but the base file has {n_base} edges")
        return GeneInputs(gene_index, gene_name, n_genes, empty, upstream, n_candidates=0)
    with _open(Path(boot_path), "bootstrap (02b)", gene) as f:
        try:
            bmeta = read_meta(f["meta"])
        except KeyError as exc:
            raise InputError(f"gene {gene}: bootstrap (02b) file {boot_path} lacks {exc}") from None
    _check_gene(bmeta, boot_path, "bootstrap (02b)", gene, gene_index=gene_index, gene_name=gene_name, n_genes=n_genes)
    mode = str(bmeta.get("edge_selection_mode", "sig_differential"))
    if mode not in EDGE_SELECTIONS:
        raise InputError(f"gene {gene}: bootstrap (02b) file {boot_path} has unknown edge_selection_mode {mode!r}")
    for key in ("expr_content_sha256", "k_low", "k_high", "fdr_alpha"):
        if key in bmeta and key in meta and bmeta[key] != meta[key]:
            raise InputError(f"gene {gene}: base and bootstrap files disagree on {key} ({meta[key]!r} vs {bmeta[key]!r})")
    kept: _Columns | None = None
    masks: list[np.ndarray] = []
    n0, last = 0, -1
    try:
        for chunk in iter_boot_edges(Path(base_path), Path(boot_path), chunk_edges=chunk_edges,
                                     base_columns=_BASE_EDGE_FIELDS):
            pair = chunk["pair_index"]
            if pair.size and (pair[0] <= last or np.any(np.diff(pair) <= 0) or pair[-1] >= upstream["n_tests"]):
                raise InputError(f"gene {gene}: base (02a) file {base_path} has unsorted, duplicate or out-of-range edges")
            last = int(pair[-1]) if pair.size else last
            e = {name: chunk[name] for name in (*_BASE_EDGE_FIELDS, *_BOOT_FIELDS)}
            n0 += pair.size
            mask = np.ones(pair.size, dtype=bool) if keep is None else np.asarray(keep(e), dtype=bool)
            if kept is None:
                kept = _Columns(n_base if keep is None else expected_kept if expected_kept is not None
                                else chunk_edges)
            kept.append({k: v[mask] for k, v in e.items()})
            masks.append(mask)
    except ValueError as exc:
        raise InputError(f"gene {gene}: {exc}") from None
    edges = kept.result() if kept is not None and kept.columns else dict(empty)
    upstream.update(
        edge_selection=mode,
        ci_alpha=float(bmeta.get("ci_alpha", float("nan"))),
        n_bootstrap=int(bmeta.get("n_bootstrap", -1)),
    )
    selected = np.concatenate(masks) if masks else np.zeros(0, dtype=bool)
    return GeneInputs(gene_index, gene_name, n_genes, edges, upstream, n_candidates=n0, selected=selected)


class _Columns:
    """Edge columns filled chunk by chunk: allocated at the first chunk for ``capacity`` edges,
    grown by half when a chunk does not fit (only when the expected count was too small)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(int(capacity), 1)
        self.columns: dict[str, np.ndarray] = {}
        self.filled = 0

    def append(self, part: Mapping[str, np.ndarray]) -> None:
        m = int(next(iter(part.values())).size)
        if not self.columns:
            self.columns = {k: np.empty(max(self.capacity, m), dtype=v.dtype) for k, v in part.items()}
        size = next(iter(self.columns.values())).size
        if self.filled + m > size:
            grown = max(self.filled + m, size + size // 2)
            for k, old in self.columns.items():
                new = np.empty(grown, dtype=old.dtype)
                new[: self.filled] = old[: self.filled]
                self.columns[k] = new
        for k, v in part.items():
            self.columns[k][self.filled : self.filled + m] = v
        self.filled += m

    def result(self) -> dict[str, np.ndarray]:
        """The filled columns (views; a copy only where far fewer edges came than allocated)."""
        size = next(iter(self.columns.values())).size
        if self.filled < size // 2:
            return {k: v[: self.filled].copy() for k, v in self.columns.items()}
        return {k: v[: self.filled] for k, v in self.columns.items()}


#: Established names of the focus edge-set statistics (``focus_gene/direct_stats`` …)
#: → the dcoex statistic they duplicate (docs/stage03.md, "Established names").
ESTABLISHED_STAT_ALIASES = {
    "n_sign_change": "n_sign_chg",
    "mean_abs_delta": "mean_abs_dr",
    "sum_abs_delta": "conn_diff",
    "conn_sum_low": "conn_low",
    "conn_sum_high": "conn_high",
}


def _with_established_names(stats: Mapping[str, Any]) -> dict[str, Any]:
    return {**stats, **{alias: stats[name] for alias, name in ESTABLISHED_STAT_ALIASES.items()}}


def iter_network_edges(network: h5py.File, *, chunk_edges: int = READ_CHUNK_EDGES) -> Iterator[dict[str, np.ndarray]]:
    """The edges of an open stage 03 file, every NETWORK_EDGE_DTYPES column, in file order, in
    chunks of at most ``chunk_edges`` (of its 02a file's edges: fewer network edges). Format 2
    stores the selection of the candidate rows and the class codes; the rest comes from the
    02a and 02b files named in ``meta`` (``base_file``, ``boot_file``, relative to the network
    file's folder) through ``iter_boot_edges``. Format-1 files (every column stored) read as
    they are. InputError (one line) if the inputs cannot be read or do not match."""
    path = Path(network.filename)
    try:
        meta = read_meta(network["meta"])
        group = network["edges"]
        if "qual_label" in group:  # format 1: stored columns
            n = int(group["pair_index"].shape[0])
            for start in range(0, n, chunk_edges):
                chunk = {name: group[name][start : start + chunk_edges] for name in NETWORK_EDGE_DTYPES}
                chunk["qual_label"] = np.array([s.decode() if isinstance(s, bytes) else str(s)
                                                for s in chunk["qual_label"]], dtype=object)
                yield chunk
            return
        selected, codes = group["selected"], group["qual_score"]
        n_rows, n_edges = int(selected.shape[0]), int(codes.shape[0])
        base, boot = path.parent / str(meta["base_file"]), path.parent / str(meta["boot_file"])
        tau = float(meta["corr_threshold"])
    except KeyError as exc:
        raise InputError(f"{path}: not a readable stage 03 network file (lacks {exc})") from None
    row0 = net0 = 0
    labels = np.asarray(CLASS_LABELS, dtype=object)
    try:
        chunks = iter_boot_edges(base, boot, chunk_edges=chunk_edges, base_columns=_BASE_EDGE_FIELDS) if n_rows \
            else iter(())
        for chunk in chunks:
            m = int(chunk["pair_index"].size)
            sel = selected[row0 : row0 + m]
            if sel.size != m:
                break
            row0 += m
            k = int(np.count_nonzero(sel))
            out = {name: np.asarray(chunk[source][sel], dtype=NETWORK_EDGE_DTYPES[name])
                   for name, source in NETWORK_SOURCES.items()}
            out["present_low"] = presence(out["r_low"], out["sig_low"], tau)
            out["present_high"] = presence(out["r_high"], out["sig_high"], tau)
            out["qual_score"] = codes[net0 : net0 + k].astype(np.int8)
            out["qual_label"] = labels[out["qual_score"]]
            net0 += k
            yield out
    except (ValueError, OSError) as exc:
        raise InputError(f"{path}: cannot read its network edges: {exc}") from None
    if row0 != n_rows or net0 != n_edges:
        raise InputError(f"{path}: its 02a/02b files ({base}, {boot}) hold other candidate edges than the "
                         f"{n_rows} it selected {n_edges} network edges from (recompute stage 03)")


def write_network(
    path: Path,
    meta: Mapping[str, Any],
    edges: Mapping[str, np.ndarray],
    *,
    qual_summary: Mapping[str, int],
    topology: Mapping[str, tuple[Mapping[str, Any], np.ndarray]],
    focus: Mapping[str, Any],
    gene_names: np.ndarray,
) -> h5py.File:
    """Create the stage 03 file at ``path`` (a temporary name) and return it still open,
    so the caller can add the /memfit attributes before closing it."""
    f = h5py.File(path, "w")
    try:
        write_attrs(f.create_group("meta"), meta)
        group = f.create_group("edges")
        for name, data in edges.items():
            write_dataset(group, name, data)
        write_attrs(group, {"qual_labels": list(CLASS_LABELS)})
        write_attrs(group.create_group("qual_summary"), qual_summary)
        topo = f.create_group("topology")
        for name, (attrs, degrees) in topology.items():
            sub = topo.create_group(f"global_{name}")
            write_attrs(sub, attrs)
            write_dataset(sub, "degrees", degrees, dtype=np.int32)
        fg = f.create_group("focus_gene")
        write_attrs(fg, focus["attrs"])
        write_dataset(fg, "direct_partners", focus["direct_partners"])
        write_dataset(fg, "indirect_partners", focus["indirect_partners"])
        for name in ("direct_stats", "two_layer_stats", "full_stats"):
            write_attrs(fg.create_group(name), _with_established_names(focus[name]))
        write_attrs(fg.create_group("metrics"), focus["metrics"])
        write_gene_names(f, gene_names)
        record = {"meta": {k: plain_attr(v) for k, v in meta.items()},
                  "metrics": {k: plain_attr(v) for k, v in focus["metrics"].items()}}
        write_attrs(f["meta"], {SUMMARY_ATTR: json.dumps(record, sort_keys=True)})
    except BaseException:
        f.close()
        raise
    return f




@dataclass
class NetworkSummary:
    """What 03b needs from one stage 03 file."""

    path: Path
    meta: dict[str, Any]
    metrics: dict[str, Any]


def read_network_summary(path: Path) -> NetworkSummary:
    """meta and focus_gene/metrics values of a stage 03 file (from its SUMMARY_ATTR);
    InputError if unreadable."""
    try:
        with h5py.File(path, "r") as f:
            record = json.loads(attr_value(f["meta"].attrs[SUMMARY_ATTR]))
        meta, metrics = record["meta"], record["metrics"]
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise InputError(f"{path}: not a readable stage 03 network file ({exc})") from None
    if meta.get("format") != NETWORK_FORMAT:
        raise InputError(f"{path}: format {meta.get('format')!r}, expected {NETWORK_FORMAT!r}")
    return NetworkSummary(path, meta, metrics)


def read_gene_names(path: str | os.PathLike) -> list[str]:
    """The root ``gene_names`` dataset of an HDF5 file (expression.h5, 02a, 03 files)."""
    try:
        with h5py.File(path, "r") as f:
            return [s.decode() if isinstance(s, bytes) else str(s) for s in f["gene_names"][()]]
    except (OSError, KeyError) as exc:
        raise InputError(f"{path}: cannot read gene_names ({exc})") from None
