"""Stage 02a: base Spearman correlations, tests and BH of each reference gene.

For every selected gene g, reads LOW_g/HIGH_g from ``bootstrap_indices.h5``, computes the
tests of every gene pair (dcoex.stages.s02a_base_correlations.science) and writes
``{out_dir}/{gi}_{gene}.h5`` atomically (layout: docs/stage02a.md). The expression matrix
is loaded once per task. Genes whose output exists and matches the parameters are
skipped (``--force`` recomputes); a gene that fails does not stop the others.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import h5py
import numpy as np

from dcoex.backend import Backend, for_backend, products_device_bytes, resolve
from dcoex.cli import gene_selection_options, parse_batch_size
from dcoex.edge_files import BASE_EMITTED, BaseEdgeWriter
from dcoex.expression_store import open_expression
from dcoex.genes import gene_file_path, index_width
from dcoex.h5io import write_attrs
from dcoex.indices_file import IndicesFile, check_groups, groups_sha
from dcoex.pergene import resolve_genes, run_genes
from dcoex.provenance import why_stale, write_provenance
from dcoex.ranks import IntegerRanks, exact_dtype
from dcoex.stages.s02a_base_correlations.contract import CONTRACT
from dcoex.stages.s02a_base_correlations.estimator import estimate
from dcoex.stages.s02a_base_correlations.science import differential_edges
from dcoex.stages.upstream import FileUpstream
from dcoex.threads import blas_threads
from hpc.atomic import atomic_output, ensure_writable_dir
from hpc.errors import InputError
from memfit.allocation import detect_allocation
from memfit.plan import plan_batch
from memfit.record import H5_GROUP as MEMFIT_GROUP
from memfit.record import PeakRecorder, h5_attrs, task_sidecar_path, write_sidecar

STAGE = "02a"
#: Tiles taller than this do not run faster; cap the planner there.
MAX_TILE_ROWS = 1024


def tile_device_bytes(n_genes: int, *, k_low: int, k_high: int, tile_rows: int) -> dict[str, int]:
    """GPU bytes of the tile products (02a, and 07 through it): both groups' ranks, uploaded
    once, and both groups' tile products (the caching allocator keeps the two)."""
    n, rows = int(n_genes), max(1, min(int(tile_rows), int(n_genes) - 1))
    ranks = products = 0
    for k in (int(k_low), int(k_high)):
        dtype = exact_dtype(k, k - 1)
        ranks += n * k * np.dtype(dtype).itemsize
        products += products_device_bytes(rows=rows, cols=n, inner=k, dtype=dtype)
    return {"ranks": ranks, "tile_products": products}


def run_base(
    expr_h5: str,
    indices_h5: str,
    out_dir: str,
    *,
    fdr_alpha: float,
    batch_size: int | str | None,
    exact_q: bool,
    selection: dict[str, Any] | None = None,
    force: bool = False,
    quiet: bool = True,
    device: str | Backend = "cpu",
) -> dict[str, Any]:
    """Run 02a for the genes chosen by ``selection`` (select_genes keywords); ``device``:
    ``--device`` (resolved here, once) or a backend."""
    if not 0 < fdr_alpha <= 1:
        raise InputError(f"--fdr-alpha {fdr_alpha}: must be in (0, 1]")
    backend = resolve(device) if isinstance(device, str) else device
    out = ensure_writable_dir(out_dir)
    allocation = detect_allocation()
    with open_expression(expr_h5) as store, IndicesFile(indices_h5) as indices:
        names, n, n_samples = list(store.gene_names), store.n_genes, store.n_samples
        expr_sha = store.content_sha256
        indices.check_expression(n, n_samples, expr_sha, expr_h5)
        if n < 2:
            raise InputError(f"{expr_h5}: {n} gene(s); at least 2 are needed for pairs")
        genes = resolve_genes(n, names, selection or {"gene_index": [0]})

        def estimate_for(rows: int):
            from dcoex.pipeline.sizing import apply_test_estimate_scale  # the driver's testing knob, seen here too

            host = estimate(n, n_samples, k_low=indices.k_low, k_high=indices.k_high, fdr_alpha=fdr_alpha,
                            tile_rows=rows, exact_q=exact_q)
            on_device = tile_device_bytes(n, k_low=indices.k_low, k_high=indices.k_high, tile_rows=rows)
            return apply_test_estimate_scale(STAGE, for_backend(host, backend, on_device))

        plan = plan_batch(batch_size, estimate_for, min(MAX_TILE_ROWS, n - 1), allocation, what="tile",
                          device=backend.device_limit())
        with PeakRecorder(limit_bytes=allocation.limit_bytes) as recorder, blas_threads() as threads:
            expr = store.read_all()

            def output_of(gene: int) -> Path:
                return gene_file_path(out, gene, names[gene], n)

            upstream = FileUpstream(files={"00": Path(expr_h5), "01": Path(indices_h5)}, gene_names=names)
            values = {"fdr_alpha": fdr_alpha, "exact_q": exact_q, "batch_size": batch_size}

            def is_valid(gene: int, path: Path) -> bool:
                return why_stale(path, CONTRACT.wanted(values, upstream, gene)) is None

            def process(gene: int, path: Path) -> None:
                low, high = indices.groups(gene)
                check_groups(low, high, n_samples, gene)
                with atomic_output(path) as tmp:
                    with h5py.File(tmp, "w") as f:
                        writer: list[BaseEdgeWriter] = []
                        tables: dict = {}
                        ranks: list[IntegerRanks] = []

                        def start(n_edges: int) -> None:
                            writer.append(BaseEdgeWriter(f, n_genes=n, n_edges=n_edges, tables=tables, threads=threads,
                                                         ranks=(ranks[0], ranks[1])))

                        try:
                            attrs = differential_edges(
                                expr[:, low], expr[:, high], fdr_alpha, tile_rows=plan.batch_size, exact_q=exact_q,
                                sink=lambda chunk: writer[0].append(chunk), on_count=start, on_tables=tables.update,
                                on_ranks=lambda *pair: ranks.extend(pair),
                                columns=BASE_EMITTED, backend=backend, scratch_dir=out,
                            )
                        except BaseException:
                            if writer:
                                writer[0].abandon()
                            raise
                        if attrs["n_tests_low"] == 0 or attrs["n_tests_high"] == 0:
                            print(
                                f"warning: gene {gene} ({names[gene]}): {attrs['n_const_low']} genes constant in "
                                f"LOW, {attrs['n_const_high']} in HIGH: no testable pairs; writing an empty edge table",
                                file=sys.stderr,
                            )
                        meta = dict(attrs)
                        meta.update(
                            gene_index_used=gene, gene_name=names[gene], storage_mode="sparse",
                            expr_content_sha256=expr_sha, indices_sha=groups_sha(low, high),
                        )
                        writer[0].close(meta, names)
                        write_provenance(f, CONTRACT.wanted(values, upstream, gene))
                        write_attrs(f.require_group(MEMFIT_GROUP), h5_attrs(STAGE, plan.estimate, allocation, recorder, plan.batch_size))

            def finish(done: dict) -> None:
                recorder.stop()
                write_sidecar(
                    task_sidecar_path(out, STAGE, genes, index_width(n)), STAGE, plan.estimate,
                    allocation, recorder, batch_size=plan.batch_size,
                    extra={"genes": genes, "fdr_alpha": fdr_alpha, "threads": threads, "backend": backend.describe(),
                           "n_genes": n, "n_samples": n_samples, **done},
                )

            done = run_genes(genes, output_of, is_valid, process, finish, force=force, quiet=quiet)
    return {**done, "genes": genes, "tile_rows": plan.batch_size, "estimate_bytes": plan.estimate.total_bytes,
            "peak_rss_bytes": recorder.peak_rss_bytes, "wall_s": recorder.elapsed()[0]}



@click.command(name="02a_calc_base_correlations")
@click.option("--expr-h5", required=True, type=click.Path(dir_okay=False), help="expression.h5 from stage 00.")
@click.option("--indices-h5", required=True, type=click.Path(dir_okay=False), help="bootstrap_indices.h5 from stage 01.")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False), help="Folder of the per-gene {gi}_{gene}.h5 files.")
@CONTRACT.click_options
@gene_selection_options
def main(*, expr_h5, indices_h5, out_dir, fdr_alpha, batch_size, exact_q, device, gene_index, gene_range,
         genes_per_task, task_id, gene_list, force, quiet) -> None:
    """Base Spearman correlations, t / Fisher-z tests and BH per reference gene (docs/design.md §4.2–§4.5)."""
    selection = {"gene_index": list(gene_index) or None, "gene_range": gene_range,
                 "genes_per_task": genes_per_task, "task_id": task_id, "gene_list": gene_list}
    info = run_base(expr_h5, indices_h5, out_dir, fdr_alpha=fdr_alpha, batch_size=parse_batch_size(str(batch_size)),
                    exact_q=exact_q, selection=selection, force=force, quiet=quiet, device=device)
    if not quiet:
        print(
            f"02a: {len(info['written'])} written, {len(info['skipped'])} skipped; tile {info['tile_rows']} rows; "
            f"peak RSS {info['peak_rss_bytes'] / 2**20:.0f} MiB (estimate {info['estimate_bytes'] / 2**20:.0f} MiB)",
            file=sys.stderr,
        )
