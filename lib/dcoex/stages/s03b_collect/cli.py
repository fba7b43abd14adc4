"""Stage 03b: collect networks/{gi}_{gene}.h5 into differential_network_summary.h5 and
rewiring_hubs.tsv (docs/stage03b.md). Both outputs are renamed into place together, after
every input has been read and checked."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import click
import h5py

from dcoex.cli import force_option
from dcoex.genes import read_gene_list
from dcoex.h5io import write_attrs
from dcoex.progress import progress
from dcoex.provenance import Provenance, read_provenance_attr, why_stale, write_provenance
from dcoex.stages.s03_network.io import read_gene_names, read_network_summary
from dcoex.stages.s03b_collect.contract import CONTRACT, TSV_SHA_ATTR
from dcoex.stages.s03b_collect.estimator import estimate
from dcoex.stages.s03b_collect.science import collect, network_files, tsv_rows, write_summary
from dcoex.stages.upstream import FileUpstream
from hpc.atomic import atomic_output, ensure_writable_dir
from hpc.errors import InputError
from memfit.allocation import detect_allocation
from memfit.record import H5_GROUP as MEMFIT_GROUP
from memfit.record import PeakRecorder, h5_attrs, write_sidecar

STAGE = "03b"


def run_collect(
    networks_dir: str | Path,
    out_h5: str | Path,
    *,
    out_focus_tsv: str | Path | None = None,
    gene_list: str | Path | None = None,
    force: bool = False,
    quiet: bool = True,
) -> dict[str, int]:
    """Collect the stage 03 files; returns the counts per status."""
    networks_dir, out_h5 = Path(networks_dir), Path(out_h5)
    files = [p for p in network_files(networks_dir) if p.resolve() != out_h5.resolve()]
    if not files:
        raise InputError(f"{networks_dir}: no network files (*.h5) besides the output; run stage 03 first")
    ensure_writable_dir(out_h5.parent)
    if out_focus_tsv is not None:
        ensure_writable_dir(Path(out_focus_tsv).parent)
    allocation = detect_allocation()
    with PeakRecorder(allocation.limit_bytes) as recorder:
        summaries = [read_network_summary(p) for p in progress(files, quiet=quiet, unit="file")]
        gene_names = read_gene_names(files[0])
        expected = read_gene_list(gene_list, gene_names) if gene_list else None
        col = collect(summaries, gene_names, expected)
        est = estimate(n_genes=len(gene_names), n_files=len(files))
        tsv_text = "\n".join(tsv_rows(col)) + "\n" if out_focus_tsv is not None else None
        upstream = FileUpstream(dirs={"03": networks_dir}, gene_names=gene_names)
        provenance = CONTRACT.wanted({"genes": [int(g) for g in col.gene_index]}, upstream)
        tsv_sha = hashlib.sha256(tsv_text.encode()).hexdigest() if tsv_text is not None else ""
        counts = {s: col.status.count(s) for s in ("ok", "no-edges", "missing")}
        if not force and _current(out_h5, provenance, out_focus_tsv, tsv_sha):
            return {**counts, "skipped": True}
        with atomic_output(out_h5) as tmp_h5:
            with h5py.File(tmp_h5, "w") as f:
                write_summary(f, col, gene_names, "gene_list" if gene_list else "all")
                write_provenance(f, provenance, extra={TSV_SHA_ATTR: tsv_sha})
                write_attrs(f.require_group(MEMFIT_GROUP), h5_attrs(STAGE, est, allocation, recorder, None))
            if tsv_text is not None:
                with atomic_output(out_focus_tsv) as tmp_tsv:
                    tmp_tsv.write_text(tsv_text)
    write_sidecar(out_h5, STAGE, est, allocation, recorder, batch_size=None,
                  extra={"n_files": len(files), "n_genes": len(gene_names), **counts})
    return {**counts, "skipped": False}


def _current(out_h5: Path, wanted: Provenance, out_tsv: str | Path | None, tsv_sha: str) -> bool:
    """The summary records ``wanted`` and the TSV asked for is the one written with it."""
    if why_stale(out_h5, wanted) is not None or read_provenance_attr(out_h5, TSV_SHA_ATTR) != tsv_sha:
        return False
    return out_tsv is None or (Path(out_tsv).is_file() and hashlib.sha256(Path(out_tsv).read_bytes()).hexdigest() == tsv_sha)


@click.command(name="03b_collect_networks")
@click.option("--networks-dir", required=True, type=click.Path(file_okay=False), help="Folder of stage 03 networks/{gi}_{gene}.h5.")
@click.option("--out-h5", required=True, type=click.Path(dir_okay=False), help="differential_network_summary.h5 to write.")
@click.option("--out-focus-tsv", default=None, type=click.Path(dir_okay=False), help="rewiring_hubs.tsv to write (optional).")
@click.option("--gene-list", default=None, type=click.Path(dir_okay=False), help="Reference genes expected (one a line: a name, or index:N, 0-based); default: all N genes. Expected genes without a file get status 'missing'.")
@force_option
@click.option("--quiet", is_flag=True, help="No progress bar or summary line.")
def main(*, networks_dir: str, out_h5: str, out_focus_tsv: str | None, gene_list: str | None, force: bool,
         quiet: bool) -> None:
    """Collect per-gene differential networks into one summary and rewiring_hubs.tsv."""
    counts = run_collect(networks_dir, out_h5, out_focus_tsv=out_focus_tsv, gene_list=gene_list, force=force,
                         quiet=quiet)
    if counts["missing"]:
        print(f"03b: warning: {counts['missing']} expected gene(s) have no network file (status 'missing')", file=sys.stderr)
    if not quiet and counts["skipped"]:
        print(f"03b: {out_h5} is current (its provenance matches); kept (--force recomputes)", file=sys.stderr)
    if not quiet:
        print(f"03b: {counts['ok']} ok, {counts['no-edges']} without edges, {counts['missing']} missing", file=sys.stderr)
