"""Stage 04: the focus genes' degrees and edge classes in every reference gene's low, high
and differential networks (docs/stage04.md). Writes focus_gene_topology.h5 (reference genes
× focus genes × metrics) and focus_gene_topology.tsv, both renamed into place together."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import click
import h5py
import numpy as np

from dcoex.cli import force_option
from dcoex.h5io import write_attrs, write_dataset
from dcoex.provenance import Provenance, read_provenance_attr, why_stale, write_provenance
from dcoex.stages.s03b_collect.contract import TSV_SHA_ATTR
from dcoex.stages.s04_focus_topology.contract import CONTRACT
from dcoex.stages.s04_focus_topology.estimator import estimate
from dcoex.stages.s04_focus_topology.science import (
    INTEGER_METRICS,
    METRICS,
    check_networks,
    focus_topology,
    hub_ranking,
    read_summary,
    resolve_focus,
)
from dcoex.stages.upstream import FileUpstream
from hpc.atomic import atomic_output, ensure_writable_dir
from hpc.errors import InputError
from memfit.allocation import detect_allocation
from memfit.plan import MemoryPlanError
from memfit.record import H5_GROUP as MEMFIT_GROUP
from memfit.record import PeakRecorder, h5_attrs, write_sidecar
from memfit.units import format_bytes

STAGE = "04"


def run_focus_topology(
    networks_dir: str | Path,
    summary_h5: str | Path,
    out_h5: str | Path,
    *,
    out_tsv: str | Path | None = None,
    focus_genes: str | None = None,
    n_hubs: int = 10,
    hub_metric: str = "L2L1_deg",
    force: bool = False,
    quiet: bool = True,
) -> dict[str, object]:
    """Compute and write the focus-gene topology; returns counts and whether it was skipped."""
    networks_dir, summary_h5, out_h5 = Path(networks_dir), Path(summary_h5), Path(out_h5)
    if not networks_dir.is_dir():
        raise InputError(f"{networks_dir}: networks folder does not exist (run stage 03 first)")
    summary = read_summary(summary_h5)
    focus = resolve_focus(summary.gene_names, focus_genes, hub_ranking(summary, hub_metric), n_hubs)
    values = {"focus_genes": focus_genes, "n_hubs": n_hubs, "hub_metric": hub_metric}
    wanted = CONTRACT.wanted(values, FileUpstream(files={"03b": summary_h5}))
    ensure_writable_dir(out_h5.parent)
    if out_tsv is not None:
        ensure_writable_dir(Path(out_tsv).parent)
    if not force and _current(out_h5, wanted, out_tsv):
        return {"skipped": True, "n_focus": len(focus)}
    check_networks(summary, networks_dir)
    allocation = detect_allocation()
    refs_with_file = [s != "missing" for s in summary.status]
    edges = summary.column("n_sig_edges_diff")[refs_with_file]
    est = estimate(n_genes=len(summary.gene_names), n_ref_genes=int(sum(refs_with_file)), n_focus=len(focus),
                   n_edges=int(edges.max()) if edges.size else 0)
    if est.total_bytes > allocation.usable_bytes:
        raise MemoryPlanError(
            f"stage 04 for {len(focus)} focus genes is estimated at {format_bytes(est.total_bytes)} "
            f"> usable {format_bytes(allocation.usable_bytes)} ({allocation.describe()}); request more memory",
            est, allocation)
    with PeakRecorder(allocation.limit_bytes) as recorder:
        refs, table = focus_topology(summary, networks_dir, focus, quiet=quiet)
        names = summary.gene_names
        with atomic_output(out_h5) as tmp_h5:
            tsv_sha = ""
            if out_tsv is not None:
                with atomic_output(out_tsv) as tmp_tsv:
                    tsv_sha = _write_tsv(tmp_tsv, _tsv_lines(names, refs, focus, table))
            with h5py.File(tmp_h5, "w") as f:
                _write_h5(f, names, refs, focus, table, source="focus_genes" if focus_genes else
                          f"top {n_hubs} hubs by {hub_metric}", values=values)
                write_provenance(f, wanted, extra={TSV_SHA_ATTR: tsv_sha})
                write_attrs(f.require_group(MEMFIT_GROUP), h5_attrs(STAGE, est, allocation, recorder, None))
    write_sidecar(out_h5, STAGE, est, allocation, recorder, batch_size=None,
                  extra={"n_ref_genes": int(refs.size), "n_focus": len(focus)})
    return {"skipped": False, "n_focus": len(focus), "n_ref_genes": int(refs.size)}


def _current(out_h5: Path, wanted: Provenance, out_tsv: str | Path | None) -> bool:
    """The output records ``wanted`` and the TSV asked for is the one written with it."""
    if why_stale(out_h5, wanted) is not None:
        return False
    recorded = read_provenance_attr(out_h5, TSV_SHA_ATTR)
    if out_tsv is None:
        return True
    path = Path(out_tsv)
    return path.is_file() and recorded == hashlib.sha256(path.read_bytes()).hexdigest()


def _write_h5(f: h5py.File, names: Sequence[str], refs: np.ndarray, focus: Sequence[int], table: np.ndarray, *,
              source: str, values: dict[str, object]) -> None:
    write_attrs(f.create_group("meta"), {
        "n_genes": len(names), "n_ref_genes": int(refs.size), "n_focus_genes": len(focus),
        "focus_source": source, "hub_metric": values["hub_metric"], "n_hubs": values["n_hubs"],
    })
    write_dataset(f, "gene_names", np.asarray(names, dtype=object))
    write_dataset(f, "ref_genes", refs.astype(np.int32))
    write_dataset(f, "ref_gene_ids", np.asarray([names[int(g)] for g in refs], dtype=object))
    write_dataset(f, "focus_genes", np.asarray(focus, dtype=np.int32))
    write_dataset(f, "focus_gene_ids", np.asarray([names[g] for g in focus], dtype=object))
    write_dataset(f, "metrics", np.asarray(METRICS, dtype=object))
    write_dataset(f, "values", table)
    for name in ("degree_low", "degree_high", "degree_diff"):  # the established (focus × reference) matrices
        write_dataset(f, name, table[:, :, METRICS.index(name)].T.astype(np.int32))


def _tsv_lines(names: Sequence[str], refs: np.ndarray, focus: Sequence[int], table: np.ndarray) -> Iterator[str]:
    yield "\t".join(("ref_gene_idx", "ref_gene_id", "focus_gene_idx", "focus_gene_id", *METRICS))
    for row, g in enumerate(refs.tolist()):
        for k, f in enumerate(focus):
            cells = [str(int(v)) if m in INTEGER_METRICS else f"{v:.4f}" for m, v in zip(METRICS, table[row, k].tolist())]
            yield "\t".join((str(g), names[g], str(f), names[f], *cells))


def _write_tsv(path: Path, lines: Iterator[str]) -> str:
    """Write ``lines`` (newline-terminated) to ``path``; return the file's SHA-256."""
    sha = hashlib.sha256()
    with open(path, "wb") as handle:
        for line in lines:
            data = (line + "\n").encode()
            sha.update(data)
            handle.write(data)
    return sha.hexdigest()


@click.command(name="04_focus_topology")
@click.option("--networks-dir", required=True, type=click.Path(file_okay=False), help="Folder of stage 03 networks/{gi}_{gene}.h5.")
@click.option("--summary-h5", required=True, type=click.Path(dir_okay=False), help="differential_network_summary.h5 of stage 03b.")
@click.option("--out-h5", required=True, type=click.Path(dir_okay=False), help="focus_gene_topology.h5 to write.")
@click.option("--out-tsv", default=None, type=click.Path(dir_okay=False), help="focus_gene_topology.tsv to write (optional).")
@CONTRACT.click_options
@force_option
@click.option("--quiet", is_flag=True, help="No progress bar or summary line.")
def main(*, networks_dir: str, summary_h5: str, out_h5: str, out_tsv: str | None, focus_genes: str | None,
         n_hubs: int, hub_metric: str, force: bool, quiet: bool) -> None:
    """Degrees and edge classes of focus genes in every reference gene's networks."""
    result = run_focus_topology(networks_dir, summary_h5, out_h5, out_tsv=out_tsv, focus_genes=focus_genes,
                                n_hubs=n_hubs, hub_metric=hub_metric, force=force, quiet=quiet)
    if not quiet:
        if result["skipped"]:
            print(f"04: {out_h5} is current (its provenance matches); kept (--force recomputes)", file=sys.stderr)
        else:
            print(f"04: {result['n_focus']} focus genes in {result['n_ref_genes']} reference networks", file=sys.stderr)
