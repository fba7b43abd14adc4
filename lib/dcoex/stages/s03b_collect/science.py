"""Stage 03b: gather the per-gene network files into one table (docs/stage03b.md)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dcoex.h5io import write_attrs, write_dataset
from dcoex.stages.s03_network.focus import INTEGER_METRICS, METRIC_NAMES
from dcoex.stages.s03_network.io import RUN_PARAMETERS, NetworkSummary
from hpc.errors import InputError

#: Network-wide per-gene values stored in the summary HDF5 (not in the TSV).
NETWORK_COUNTS: tuple[str, ...] = (
    "n_candidate_edges", "n_unchanged", "n_disappear", "n_new", "n_sign_change", "n_strengthen", "n_weaken",
)
NETWORK_FLOATS: tuple[str, ...] = ("mean_abs_delta", "max_abs_delta")

#: The 56 columns of rewiring_hubs.tsv, in order.
TSV_COLUMNS: tuple[str, ...] = ("gene_idx", "gene_id", "n_sig_edges_diff", *METRIC_NAMES)

STATUS_OK, STATUS_NO_EDGES, STATUS_MISSING = "ok", "no-edges", "missing"


def network_files(networks_dir: Path) -> list[Path]:
    """The stage 03 files ``*.h5`` of a folder (temporary hidden files excluded), sorted."""
    if not networks_dir.is_dir():
        raise InputError(f"{networks_dir}: networks folder does not exist")
    files = sorted(p for p in networks_dir.glob("*.h5") if not p.name.startswith(".") and p.is_file())
    if not files:
        raise InputError(f"{networks_dir}: no network files (*.h5); run stage 03 first")
    return files


def _known(value: Any) -> Any:
    """A parameter value, or None where the file could not know it (NaN, -1, '')."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value == -1:
        return None
    return value


def run_parameters(summaries: Sequence[NetworkSummary]) -> dict[str, Any]:
    """The parameters shared by all files; InputError listing the sets if they differ."""
    sets: dict[tuple, list[Path]] = {}
    for s in summaries:
        key = tuple(_known(s.meta.get(k)) for k in RUN_PARAMETERS)
        sets.setdefault(key, []).append(s.path)
    merged: dict[str, Any] = {}
    differing: list[int] = []
    for pos, name in enumerate(RUN_PARAMETERS):
        values = {key[pos] for key in sets if key[pos] is not None}
        if len(values) > 1:
            differing.append(pos)
        elif values:
            merged[name] = values.pop()
    if differing:
        parts = []
        for key, paths in sorted(sets.items(), key=lambda kv: -len(kv[1])):
            shown = ", ".join(f"{RUN_PARAMETERS[p]}={key[p]!r}" for p in differing)
            parts.append(f"[{shown}] in {len(paths)} file(s), e.g. {paths[0].name}")
        raise InputError(f"mixed parameter sets across {len(summaries)} network files: " + "; ".join(parts))
    return merged


@dataclass
class Collection:
    """One row per reference gene: index, name, status and the value columns."""

    gene_index: np.ndarray
    gene_name: list[str]
    status: list[str]
    integers: dict[str, np.ndarray]
    floats: dict[str, np.ndarray]
    parameters: dict[str, Any]

    def column(self, name: str) -> np.ndarray:
        return self.integers[name] if name in self.integers else self.floats[name]


def collect(
    summaries: Sequence[NetworkSummary], gene_names: Sequence[str], expected: Iterable[int] | None
) -> Collection:
    """Rows for the expected genes (default: all N) and every gene that has a file."""
    params = run_parameters(summaries)
    by_gene: dict[int, NetworkSummary] = {}
    for s in summaries:
        gi = int(s.meta["gene_index_used"])
        if gi in by_gene:
            raise InputError(f"two network files for gene index {gi}: {by_gene[gi].path.name} and {s.path.name}")
        if not 0 <= gi < len(gene_names) or s.meta.get("gene_name") != gene_names[gi]:
            raise InputError(f"{s.path.name}: gene {gi} {s.meta.get('gene_name')!r} does not match the run's gene names")
        by_gene[gi] = s
    universe = range(len(gene_names)) if expected is None else expected
    rows = np.array(sorted(set(universe) | set(by_gene)), dtype=np.int64)
    n = rows.size
    int_names = ["n_sig_edges_diff", *NETWORK_COUNTS, *[m for m in METRIC_NAMES if m in INTEGER_METRICS]]
    float_names = [*NETWORK_FLOATS, *[m for m in METRIC_NAMES if m not in INTEGER_METRICS]]
    integers = {k: np.full(n, -1, dtype=np.int64) for k in int_names}
    floats = {k: np.full(n, np.nan, dtype=np.float64) for k in float_names}
    status = []
    for row, gi in enumerate(rows):
        s = by_gene.get(int(gi))
        if s is None:
            status.append(STATUS_MISSING)
            continue
        values = {**s.meta, **s.metrics, "n_sig_edges_diff": s.meta["n_significant"]}
        try:
            for k in int_names:
                integers[k][row] = int(values[k])
            for k in float_names:
                floats[k][row] = float(values[k])
        except KeyError as exc:
            raise InputError(f"{s.path.name}: network file lacks {exc}") from None
        status.append(STATUS_OK if values["n_sig_edges_diff"] > 0 else STATUS_NO_EDGES)
    names = [gene_names[int(g)] for g in rows]
    return Collection(rows, names, status, integers, floats, params)


def write_summary(f: h5py.File, col: Collection, gene_names: Sequence[str], expected_source: str) -> None:
    """``meta`` attrs (run parameters, counts), root ``gene_names`` and ``per_gene/*``."""
    counts = {s: col.status.count(s) for s in (STATUS_OK, STATUS_NO_EDGES, STATUS_MISSING)}
    write_attrs(f.create_group("meta"), {
        **col.parameters,
        "n_ref_genes": len(col.status),
        "n_ok": counts[STATUS_OK],
        "n_no_edges": counts[STATUS_NO_EDGES],
        "n_missing": counts[STATUS_MISSING],
        "expected_genes": expected_source,
    })
    write_dataset(f, "gene_names", np.asarray(gene_names, dtype=object))
    group = f.create_group("per_gene")
    write_dataset(group, "gene_index", col.gene_index.astype(np.int32))
    write_dataset(group, "gene_name", np.asarray(col.gene_name, dtype=object))
    write_dataset(group, "status", np.asarray(col.status, dtype=object))
    for name, values in {**col.integers, **col.floats}.items():
        write_dataset(group, name, values)


def tsv_rows(col: Collection) -> list[str]:
    """rewiring_hubs.tsv lines (header first): genes with >= 1 edge, by L2L1_deg descending
    (NaN last), ties by gene index; integers as integers, floats with 4 decimals."""
    keep = np.flatnonzero(col.integers["n_sig_edges_diff"] > 0)
    ratio = col.floats["L2L1_deg"][keep]
    key = np.where(np.isnan(ratio), np.inf, -ratio)
    order = keep[np.lexsort((col.gene_index[keep], key))]
    columns = []
    for name in TSV_COLUMNS:
        if name == "gene_idx":
            columns.append([str(v) for v in col.gene_index[order]])
        elif name == "gene_id":
            columns.append([col.gene_name[i] for i in order])
        elif name in col.integers:
            columns.append([str(v) for v in col.integers[name][order].tolist()])
        else:
            columns.append([f"{v:.4f}" for v in col.floats[name][order].tolist()])
    lines = ["\t".join(TSV_COLUMNS)]
    lines.extend("\t".join(cells) for cells in zip(*columns))
    return lines
