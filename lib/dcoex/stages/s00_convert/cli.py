"""Stage 00: convert an expression TSV (genes × samples, optionally .gz) to expression.h5.

Streams the TSV in blocks of genes, so memory does not grow with the number of genes
(only the gene names are kept, for the duplicate check). Writes atomically and records
its measured memory in ``<out>.memory.json`` and the ``/memfit`` attrs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dcoex.cli import force_option
from dcoex.expression_store import ExpressionWriter, open_expression
from dcoex.expression_tsv import TsvExpressionReader, tsv_sha256
from dcoex.h5io import write_attrs
from dcoex.progress import progress
from dcoex.provenance import why_stale, write_provenance
from dcoex.stages.s00_convert.contract import CONTRACT
from dcoex.stages.s00_convert.estimator import estimate
from dcoex.stages.upstream import FileUpstream
from hpc.atomic import atomic_output, ensure_writable_dir
from hpc.errors import InputError
from memfit.allocation import detect_allocation
from memfit.record import H5_GROUP as MEMFIT_GROUP
from memfit.record import PeakRecorder, h5_attrs, write_sidecar

STAGE = "00"


def convert(
    expr_tsv: str | Path,
    out_h5: str | Path,
    *,
    compression: str,
    compression_level: int | None,
    block_rows: int,
    force: bool = False,
    quiet: bool = True,
) -> dict:
    """Convert ``expr_tsv`` to ``out_h5``; returns n_genes, n_samples, content_sha256 and
    ``skipped`` (the output was current: made from this TSV's content, docs/design.md §7.4)."""
    out = Path(out_h5)
    if not force and out.exists():
        wanted = CONTRACT.wanted({}, FileUpstream(tsv_sha256=tsv_sha256(expr_tsv)))
        if why_stale(out, wanted) is None:
            with open_expression(out) as store:
                return {"n_genes": store.n_genes, "n_samples": store.n_samples,
                        "content_sha256": store.content_sha256, "skipped": True}
    ensure_writable_dir(out.parent)
    allocation = detect_allocation()
    with PeakRecorder(allocation.limit_bytes) as recorder:
        with TsvExpressionReader(expr_tsv, block_rows=block_rows) as reader:
            with atomic_output(out) as tmp:
                writer = ExpressionWriter(tmp, reader.sample_names, compression, compression_level)
                try:
                    for genes, block in progress(reader.blocks(), quiet=quiet, unit="block"):
                        writer.append(genes, block)
                    if not writer.gene_names:
                        raise InputError(f"{expr_tsv}: header only, no data rows")
                    sha = writer.finish()
                    n_genes, n_samples = len(writer.gene_names), reader.n_samples
                    est = estimate(n_samples, n_genes, block_rows, compression)
                    source_sha = tsv_sha256(expr_tsv)
                    write_attrs(writer.file, {"source_sha256": source_sha})
                    write_provenance(writer.file, CONTRACT.wanted({}, FileUpstream(tsv_sha256=source_sha)))
                    write_attrs(writer.file.require_group(MEMFIT_GROUP), h5_attrs(STAGE, est, allocation, recorder, block_rows))
                finally:
                    writer.close()
    write_sidecar(
        out, STAGE, est, allocation, recorder, batch_size=block_rows,
        extra={"n_genes": n_genes, "n_samples": n_samples, "compression": compression,
               "content_sha256": sha, "output_bytes": out.stat().st_size},
    )
    return {"n_genes": n_genes, "n_samples": n_samples, "content_sha256": sha, "skipped": False}


@click.command(name="00convert_expr_to_hdf5")
@click.option("--expr-tsv", required=True, type=click.Path(dir_okay=False), help="Genes × samples TSV (gene name first column; .gz accepted).")
@click.option("--out-h5", required=True, type=click.Path(dir_okay=False), help="Output expression.h5 (folder created if missing).")
@CONTRACT.click_options
@force_option
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
def main(*, expr_tsv: str, out_h5: str, compression: str, compression_level: int, block_rows: int, force: bool,
         quiet: bool) -> None:
    """Convert an expression TSV to expression.h5 (docs/design.md §3.2)."""
    info = convert(expr_tsv, out_h5, compression=compression, compression_level=compression_level,
                   block_rows=block_rows, force=force, quiet=quiet)
    if not quiet:
        print(
            f"{'current, kept' if info['skipped'] else 'wrote'} {out_h5}: {info['n_genes']} genes x {info['n_samples']} samples, "
            f"content_sha256 {info['content_sha256']}",
            file=sys.stderr,
        )
