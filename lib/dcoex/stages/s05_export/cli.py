"""Stage 05: from a finished run folder, export the top hubs' (and named genes') networks as
TSV tables and GraphML ego networks, and draw the figures (docs/stage05.md). Everything is
written into a hidden temporary folder that replaces ``RUN/export`` when complete."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click
import h5py
import numpy as np

from dcoex.cli import force_option
from dcoex.genes import gene_file_name, gene_file_path
from dcoex.h5io import decode_strings, write_attrs, write_dataset
from dcoex.provenance import write_provenance
from dcoex.stages import stage_contract
from dcoex.stages.s04_focus_topology.science import (
    METRICS,
    Summary,
    check_networks,
    hub_ranking,
    read_summary,
    resolve_focus,
)
from dcoex.stages.s05_export import figures
from dcoex.stages.s05_export.contract import (
    CONTRACT,
    EXPORT_DIR,
    INDEX_NAME,
    NULL_H5,
    PVALS_TSV,
    file_sha256,
    optional_inputs_digest,
    why_export_stale,
)
from dcoex.stages.s05_export.estimator import estimate
from dcoex.stages.s05_export.permutation import read_null, read_pvalues
from dcoex.stages.s05_export.tables import export_gene
from dcoex.stages.upstream import FileUpstream
from hpc.atomic import ensure_writable_dir, temporary_name
from hpc.errors import InputError
from memfit.allocation import detect_allocation
from memfit.estimate import MemoryEstimate
from memfit.plan import MemoryPlanError
from memfit.record import H5_GROUP as MEMFIT_GROUP
from memfit.record import PeakRecorder, h5_attrs, write_sidecar
from memfit.units import format_bytes

STAGE = "05"


def run_export(run_dir: str | Path, *, focus_genes: str | None = None, n_hubs: int = 10,
               hub_metric: str = "L2L1_deg", force: bool = False, quiet: bool = True) -> dict[str, object]:
    """Export and draw from the run folder ``run_dir``; returns what was written (or skipped)."""
    run = Path(run_dir)
    networks = stage_contract("03").output_path(run)
    summary_path, topology_path = stage_contract("03b").output_path(run), stage_contract("04").output_path(run)
    if not run.is_dir():
        raise InputError(f"{run}: run folder does not exist")
    summary = read_summary(summary_path)
    if not topology_path.is_file():
        raise InputError(f"{topology_path}: missing (run stage 04 first)")
    ranking = hub_ranking(summary, hub_metric)
    hubs = [int(g) for g in ranking[:n_hubs]]
    named = resolve_focus(summary.gene_names, focus_genes, ranking, n_hubs) if focus_genes else []
    has_file = {int(g) for g, s in zip(summary.gene_index, summary.status) if s != "missing"}
    exported = [g for g in dict.fromkeys(hubs + named) if g in has_file]
    without = [summary.gene_names[g] for g in named if g not in has_file]
    values = {"focus_genes": focus_genes, "n_hubs": n_hubs, "hub_metric": hub_metric,
              "optional": optional_inputs_digest(run)}
    wanted = CONTRACT.wanted(values, FileUpstream(files={"03b": summary_path, "04": topology_path}))
    index = CONTRACT.output_path(run)
    if not force and why_export_stale(index, wanted) is None:
        return {"skipped": True, "n_genes": len(exported)}
    check_networks(summary, networks)
    allocation = detect_allocation()
    with h5py.File(topology_path, "r") as f:
        n_focus = int(f["focus_genes"].shape[0])
    est = _estimate(summary, exported, n_focus)
    if est.total_bytes > allocation.usable_bytes:
        raise MemoryPlanError(f"stage 05 is estimated at {format_bytes(est.total_bytes)} > usable "
                              f"{format_bytes(allocation.usable_bytes)} ({allocation.describe()}); request more memory",
                              est, allocation)
    ensure_writable_dir(run)
    final = index.parent
    _remove_leftovers(final)
    tmp = temporary_name(final)
    try:
        with PeakRecorder(allocation.limit_bytes) as recorder:
            notes = [f"not exported (no network file): {', '.join(without)}"] if without else []
            notes += _write_all(tmp, run, summary, exported=exported, hubs=hubs, metric=hub_metric,
                               topology_path=topology_path)
            files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
            with h5py.File(tmp / INDEX_NAME, "w") as f:
                _write_index(f, tmp, files, notes=notes, summary=summary, exported=exported, hubs=hubs)
                write_provenance(f, wanted)
                write_attrs(f.require_group(MEMFIT_GROUP), h5_attrs(STAGE, est, allocation, recorder, None))
        write_sidecar(tmp / INDEX_NAME, STAGE, est, allocation, recorder, batch_size=None,
                      extra={"n_exported": len(exported), "n_files": len(files)})
        _replace_folder(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"skipped": False, "n_genes": len(exported), "n_files": len(files), "notes": notes}


def _estimate(summary: Summary, exported: list[int], n_focus: int) -> MemoryEstimate:
    rows = {int(g): k for k, g in enumerate(summary.gene_index)}
    edges = summary.column("n_sig_edges_diff")
    ego = summary.column("L1_n_nodes") + summary.column("n_l1_to_l1_edges")
    picked = [rows[g] for g in exported]
    biggest = int(np.nanmax(edges[picked])) if picked else 0
    biggest_ego = int(np.nanmax(ego[picked])) if picked else 0
    return estimate(n_genes=len(summary.gene_names), n_edges=max(biggest, 0), n_ego_edges=max(biggest_ego, 0),
                    n_focus=n_focus)


def _write_all(tmp: Path, run: Path, summary: Summary, *, exported: list[int], hubs: list[int], metric: str,
               topology_path: Path) -> list[str]:
    """Every table, GraphML and figure under ``tmp``; returns the notes (what was skipped, why)."""
    names, n = summary.gene_names, len(summary.gene_names)
    networks = stage_contract("03").output_path(run)
    notes: list[str] = []
    ego_of_top = None
    for g in exported:
        graph = export_gene(gene_file_path(networks, g, names[g], n), tmp / "genes" / _stem(g, names), names)
        if hubs and g == hubs[0]:
            ego_of_top = graph
    fig_dir = tmp / "figures"
    fig_dir.mkdir(parents=True)
    ranking = hub_ranking(summary, metric)[:figures.RANKED_GENES]
    column = summary.column(metric)
    row_of = {int(g): k for k, g in enumerate(summary.gene_index)}
    observed = np.array([column[row_of[int(g)]] for g in ranking], dtype=np.float64)
    pvalues = read_pvalues(run / PVALS_TSV, metric)
    if pvalues is None:
        notes.append(f"hub ranking drawn without significance: no pval_{metric}/qval_{metric} in {PVALS_TSV}"
                     if (run / PVALS_TSV).is_file() else f"hub ranking drawn without significance: no {PVALS_TSV}")
    figures.hub_ranking(fig_dir / "hub_ranking", [names[int(g)] for g in ranking], observed, metric, pvalues)
    notes += _null_figure(fig_dir, run, summary, hubs, metric)
    if ego_of_top is not None:
        top = hubs[0]
        figures.ego_network(fig_dir / f"ego_{_stem(top, names)}", ego_of_top, names[top])
        with h5py.File(gene_file_path(networks, top, names[top], n), "r") as network:
            figures.delta_distribution(fig_dir / f"delta_distribution_{_stem(top, names)}", network, names[top])
    else:
        notes.append("ego network and delta distribution not drawn: no reference gene has edges")
    with h5py.File(topology_path, "r") as f:
        degrees = f["values"][:, :, METRICS.index("degree_diff")]
        refs = decode_strings(f["ref_gene_ids"][()])
        focus = decode_strings(f["focus_gene_ids"][()])
    figures.focus_heatmap(fig_dir / "focus_degree_heatmap", degrees, refs, focus)
    return notes


def _null_figure(fig_dir: Path, run: Path, summary: Summary, hubs: list[int], metric: str) -> list[str]:
    null = read_null(run / NULL_H5)
    if null is None:
        return [f"null distributions not drawn: no {NULL_H5} (stages 07/08 not run)"]
    names = summary.gene_names
    usable = [m for m in [metric, *null.metrics] if m in null.metrics]
    chosen = next((m for m in usable if _has_column(summary, m)), None)
    genes = [names[g] for g in hubs if names[g] in null.gene_names][:figures.NULL_PANELS]
    if chosen is None or not genes:
        return [f"null distributions not drawn: {NULL_H5} has no {metric} values for the top hubs"]
    column = summary.column(chosen)
    row_of = {names[int(g)]: k for k, g in enumerate(summary.gene_index)}
    figures.null_distributions(fig_dir / "null_distributions", null, genes, [float(column[row_of[g]]) for g in genes],
                               chosen)
    return [] if chosen == metric else [f"null distributions drawn for {chosen} ({metric} is not in {NULL_H5})"]


def _has_column(summary: Summary, name: str) -> bool:
    with h5py.File(summary.path, "r") as f:
        return f"per_gene/{name}" in f


def _stem(gene: int, names: list[str]) -> str:
    return gene_file_name(gene, names[gene], len(names))[:-len(".h5")]


def _write_index(f: h5py.File, folder: Path, files: list[str], *, notes: list[str], summary: Summary,
                 exported: list[int], hubs: list[int]) -> None:
    names = summary.gene_names
    write_attrs(f.create_group("meta"), {"n_files": len(files), "n_exported": len(exported), "n_hubs": len(hubs)})
    write_dataset(f, "files", np.asarray(files, dtype=object))
    write_dataset(f, "sha256", np.asarray([file_sha256(folder / p) for p in files], dtype=object))
    write_dataset(f, "notes", np.asarray(notes, dtype=object))
    write_dataset(f, "exported_genes", np.asarray(exported, dtype=np.int32))
    write_dataset(f, "exported_gene_ids", np.asarray([names[g] for g in exported], dtype=object))
    write_dataset(f, "hubs", np.asarray(hubs, dtype=np.int32))


def _remove_leftovers(final: Path) -> None:
    """Remove the temporary and old export folders of processes that no longer run (a killed 05)."""
    for path in final.parent.glob(f".{final.name}.*-*"):
        kind, _, pid = path.name.rpartition("-")
        if not (kind.endswith((".tmp", ".old")) and pid.isdigit()):
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:  # another user's live process
            continue


def _replace_folder(tmp: Path, final: Path) -> None:
    """Put the complete folder ``tmp`` in place of ``final`` (the old one is removed)."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


@click.command(name="05_export")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False), help="A run's output folder (stages 03-04 done).")
@CONTRACT.click_options
@force_option
@click.option("--quiet", is_flag=True, help="No summary line.")
def main(*, out_dir: str, focus_genes: str | None, n_hubs: int, hub_metric: str, force: bool, quiet: bool) -> None:
    """Export hub networks (TSV, GraphML) and draw the figures (PNG, PDF) into OUT_DIR/export."""
    result = run_export(out_dir, focus_genes=focus_genes, n_hubs=n_hubs, hub_metric=hub_metric, force=force,
                        quiet=quiet)
    if result["skipped"]:
        if not quiet:
            print(f"05: {Path(out_dir) / EXPORT_DIR} is current (its provenance matches); kept (--force recomputes)",
                  file=sys.stderr)
        return
    for note in result["notes"]:
        print(f"05: note: {note}", file=sys.stderr)
    if not quiet:
        print(f"05: {result['n_genes']} gene(s) exported, {result['n_files']} files in {Path(out_dir) / EXPORT_DIR}",
              file=sys.stderr)
