"""Stage 02b: bootstrap of the selected edges of each reference gene.

For every selected gene g, reads the edges of ``{base_dir}/{gi}_{gene}.h5`` (02a) chosen by
``--edge-selection``, the gene's LOW/HIGH resamples from ``bootstrap_indices.h5`` and
computes Δ^b = r_H^b − r_L^b for every replicate (dcoex.stages.s02b_bootstrap_edges.science), then writes
``{out_dir}/{gi}_{gene}.h5`` atomically (layout: docs/stage02b.md). Edges are processed in
chunks sized by memfit so memory is O(chunk × B). Genes whose output exists and matches
the parameters and inputs are skipped (``--force`` recomputes); a failing gene does not
stop the others.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import click
import h5py
import numpy as np

from dcoex.backend import Backend, for_backend, resolve
from dcoex.cli import gene_selection_options, parse_batch_size
from dcoex.edge_files import (
    BOOT_PRECISIONS,
    BaseEdgesSha,
    BootFileWriter,
    iter_base_edges,
    read_base_meta,
    selected_rows,
    touched_genes,
)
from dcoex.expression_store import open_expression
from dcoex.genes import gene_file_path, index_width
from dcoex.h5io import write_attrs
from dcoex.indices_file import IndicesFile, check_groups, groups_sha
from dcoex.pergene import resolve_genes, run_genes
from dcoex.provenance import why_stale, write_provenance
from dcoex.stages.params import EDGE_SELECTIONS
from dcoex.stages.s02b_bootstrap_edges.contract import CONTRACT
from dcoex.stages.s02b_bootstrap_edges.estimator import band_edges, estimate, max_chunk
from dcoex.stages.s02b_bootstrap_edges.kernels import set_threads
from dcoex.stages.s02b_bootstrap_edges.science import (
    boot_stats,
    bootstrap_band,
    device_bytes,
    positions_in_group,
    replicate_deltas,
)
from dcoex.stages.upstream import FileUpstream
from dcoex.threads import blas_threads
from hpc.atomic import atomic_output, ensure_writable_dir
from hpc.errors import InputError
from memfit.allocation import detect_allocation
from memfit.estimate import MemoryEstimate
from memfit.plan import plan_batch
from memfit.record import H5_GROUP as MEMFIT_GROUP
from memfit.record import PeakRecorder, h5_attrs, task_sidecar_path, write_sidecar

STAGE = "02b"
CI_METHOD = "percentile (numpy linear interpolation over the finite replicates)"
#: The 02a columns 02b reads (selection, hash, genes, Δ_base); the others are not computed.
BASE_COLUMNS = ("pair_index", "gene_i", "gene_j", "r_low", "r_high", "sig_low", "sig_high")
STAT_NAMES = ("delta_mean", "delta_std", "ci_low", "ci_high", "n_finite", "n_minority")


def _sha(*arrays: np.ndarray) -> str:
    sha = hashlib.sha256()
    for array in arrays:
        sha.update(np.ascontiguousarray(array).tobytes())
    return sha.hexdigest()


def run_bootstrap(
    expr_h5: str,
    indices_h5: str,
    base_dir: str,
    out_dir: str,
    *,
    edge_selection: str,
    ci_alpha: float,
    fdr_alpha: float | None,
    n_bootstrap: int | None,
    batch_size: int | str | None,
    store_replicates: bool,
    boot_precision: str = "float32",
    selection: dict[str, Any] | None = None,
    force: bool = False,
    quiet: bool = True,
    device: str | Backend = "cpu",
) -> dict[str, Any]:
    """Run 02b for the genes chosen by ``selection`` (select_genes keywords); ``device``:
    ``--device`` (resolved here, once) or a backend."""
    if edge_selection not in EDGE_SELECTIONS:
        raise InputError(f"--edge-selection {edge_selection!r}: expected one of {', '.join(EDGE_SELECTIONS)}")
    if not 0 < ci_alpha < 1:
        raise InputError(f"--ci-alpha {ci_alpha}: must be in (0, 1)")
    if boot_precision not in BOOT_PRECISIONS:
        raise InputError(f"--boot-precision {boot_precision!r}: expected one of {', '.join(BOOT_PRECISIONS)}")
    base = Path(base_dir)
    if not base.is_dir():
        raise InputError(f"{base}: base correlations folder does not exist (run 02a first)")
    backend = resolve(device) if isinstance(device, str) else device
    out = ensure_writable_dir(out_dir)
    allocation = detect_allocation()
    device_limit = backend.device_limit()
    with open_expression(expr_h5) as store, IndicesFile(indices_h5) as indices:
        names, n, n_samples = list(store.gene_names), store.n_genes, store.n_samples
        expr_sha = store.content_sha256
        indices.check_expression(n, n_samples, expr_sha, expr_h5)
        n_boot = indices.n_bootstrap
        if n_bootstrap is not None and int(n_bootstrap) != n_boot:
            raise InputError(f"{indices_h5}: holds B = {n_boot} bootstrap replicates, --n-bootstrap asks {n_bootstrap}")
        genes = resolve_genes(n, names, selection or {"gene_index": [0]})

        def estimate_for(n_edges: int, chunk: int, n_touched: int | None = None) -> MemoryEstimate:
            host = estimate(n, n_samples, n_bootstrap=n_boot, k_low=indices.k_low, k_high=indices.k_high,
                            kr_low=indices.kr_low, kr_high=indices.kr_high, n_edges=n_edges, edge_chunk=chunk,
                            store_replicates=store_replicates, gathers_on_device=backend.gathers_on_device,
                            n_touched=n_touched)
            return for_backend(host, backend, device_bytes(min(chunk, max(n_edges, 1)), kr_low=indices.kr_low,
                                                           kr_high=indices.kr_high))

        largest = {"estimate": estimate_for(0, 1), "chunk": 1}
        with PeakRecorder(limit_bytes=allocation.limit_bytes) as recorder, blas_threads() as threads:
            set_threads(threads)
            expr = store.read_all()

            def output_of(gene: int) -> Path:
                return gene_file_path(out, gene, names[gene], n)

            def gene_inputs(gene: int) -> dict[str, Any]:
                base_path = gene_file_path(base, gene, names[gene], n)
                meta, n_base = read_base_meta(base_path)
                low, high = indices.groups(gene)
                check_groups(low, high, n_samples, gene)
                problems = []
                if int(meta.get("gene_index_used", -1)) != gene or int(meta.get("n_genes", -1)) != n:
                    problems.append(f"is for gene {meta.get('gene_index_used')} of {meta.get('n_genes')}")
                if str(meta.get("expr_content_sha256", "")) != expr_sha:
                    problems.append("was made from a different expression file")
                if str(meta.get("indices_sha", groups_sha(low, high))) != groups_sha(low, high):
                    problems.append("was made from different LOW/HIGH groups (another bootstrap_indices.h5)")
                if fdr_alpha is not None and not np.isclose(float(meta.get("fdr_alpha", np.nan)), fdr_alpha, rtol=0, atol=1e-12):
                    problems.append(f"was made with --fdr-alpha {meta.get('fdr_alpha')}, not the {fdr_alpha} asked")
                if problems:
                    raise InputError(f"base file {base_path} " + "; ".join(problems))
                return {"meta": meta, "path": base_path, "low": low, "high": high, "n_base": n_base}

            def expected_meta(gene: int, inputs: dict[str, Any], boot_sha: str, base_sha: str) -> dict[str, Any]:
                return {
                    "gene_index_used": gene, "n_genes": n, "n_bootstrap": n_boot,
                    "edge_selection_mode": edge_selection, "ci_alpha": float(ci_alpha),
                    "fdr_alpha": float(inputs["meta"]["fdr_alpha"]), "expr_content_sha256": expr_sha,
                    "indices_sha": groups_sha(inputs["low"], inputs["high"]), "bootstrap_sha": boot_sha,
                    "base_edges_sha": base_sha, "store_replicates": bool(store_replicates),
                    "boot_precision": boot_precision,
                }

            upstream = FileUpstream(files={"00": Path(expr_h5), "01": Path(indices_h5)}, dirs={"02a": base},
                                    gene_names=names)
            values = {"edge_selection": edge_selection, "ci_alpha": ci_alpha, "store_replicates": store_replicates,
                      "boot_precision": boot_precision}

            def is_valid(gene: int, path: Path) -> bool:
                return why_stale(path, CONTRACT.wanted(values, upstream, gene)) is None

            def process(gene: int, path: Path) -> None:
                inputs = gene_inputs(gene)
                lb, hb = indices.boot(gene)
                low, high = inputs["low"], inputs["high"]
                n_base = inputs["n_base"]
                n_touched = touched_genes(inputs["path"]) if n_base else 0
                plan = plan_batch(batch_size, lambda c: estimate_for(n_base, c, n_touched),
                                  max(1, min(n_base, max_chunk(n_boot))), allocation, what="edge chunk",
                                  device=device_limit)
                if plan.estimate.total_bytes > largest["estimate"].total_bytes:
                    largest.update(estimate=plan.estimate, chunk=plan.batch_size)
                x_low, x_high = expr[:, low], expr[:, high]
                pos_low, pos_high = positions_in_group(lb, low), positions_in_group(hb, high)
                buffer = None  # (B, tile) replicate buffer, grown to the largest tile, reused
                pool: dict[str, np.ndarray] = {}  # work arrays kept across tiles
                base_sha = BaseEdgesSha()
                with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
                    writer = BootFileWriter(f, max_edges=n_base, n_boot_stored=n_boot if store_replicates else None,
                                            precision=boot_precision)
                    band = band_edges(plan.batch_size, store_replicates=store_replicates)
                    for chunk in iter_base_edges(inputs["path"], chunk_edges=band, columns=BASE_COLUMNS):
                        keep = selected_rows(chunk, edge_selection)
                        e = {name: col[keep] for name, col in chunk.items()}
                        del chunk
                        gi, gj = e["gene_i"].astype(np.int64), e["gene_j"].astype(np.int64)
                        base_sha.update(e)
                        delta_base = e["r_high"].astype(np.float32) - e["r_low"].astype(np.float32)
                        tile = min(plan.batch_size, gi.size)
                        if buffer is None or buffer.shape[1] < tile:
                            buffer = None
                            buffer = np.empty((n_boot, tile), dtype=np.float32)
                        deltas = None
                        if store_replicates:  # one tile per band: the replicates in the 02a order
                            deltas = replicate_deltas(x_low, x_high, pos_low, pos_high, gene_i=gi, gene_j=gj,
                                                      out=buffer, pool=pool, backend=backend)
                            stats = boot_stats(deltas, delta_base, ci_alpha)
                        else:
                            stats = bootstrap_band(x_low, x_high, pos_low, pos_high, gene_i=gi, gene_j=gj,
                                                   delta_base=delta_base, ci_alpha=ci_alpha, tile_edges=plan.batch_size,
                                                   buffer=buffer, pool=pool, backend=backend)
                        columns = {f"boot/{name}": getattr(stats, name) for name in STAT_NAMES}
                        writer.append(columns, deltas)
                        del deltas, stats, columns, e
                    meta = expected_meta(gene, inputs, _sha(lb, hb), base_sha.hexdigest())
                    meta.update(
                        n_sig_edges=writer.n_edges, n_base_edges=n_base, gene_name=names[gene],
                        k_low=low.size, k_high=high.size, kr_low=lb.shape[1], kr_high=hb.shape[1],
                        ci_method=CI_METHOD, edge_chunk=plan.batch_size,
                    )
                    writer.finish(meta, names)
                    write_provenance(f, CONTRACT.wanted(values, upstream, gene))
                    write_attrs(f.require_group(MEMFIT_GROUP), h5_attrs(STAGE, plan.estimate, allocation, recorder, plan.batch_size))

            def finish(done: dict) -> None:
                recorder.stop()
                write_sidecar(
                    task_sidecar_path(out, STAGE, genes, index_width(n)), STAGE, largest["estimate"],
                    allocation, recorder, batch_size=largest["chunk"],
                    extra={"genes": genes, "n_bootstrap": n_boot, "edge_selection": edge_selection,
                           "threads": threads, "backend": backend.describe(), "n_genes": n, "n_samples": n_samples, **done},
                )

            done = run_genes(genes, output_of, is_valid, process, finish, force=force, quiet=quiet)
    return {**done, "genes": genes, "edge_chunk": largest["chunk"],
            "estimate_bytes": largest["estimate"].total_bytes,
            "peak_rss_bytes": recorder.peak_rss_bytes, "wall_s": recorder.elapsed()[0]}



@click.command(name="02b_bootstrap_significant_edges")
@click.option("--expr-h5", required=True, type=click.Path(dir_okay=False), help="expression.h5 from stage 00.")
@click.option("--indices-h5", required=True, type=click.Path(dir_okay=False), help="bootstrap_indices.h5 from stage 01.")
@click.option("--base-dir", required=True, type=click.Path(file_okay=False), help="Folder of the 02a files.")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False), help="Folder of the per-gene {gi}_{gene}.h5 files.")
@CONTRACT.click_options
@gene_selection_options
def main(*, expr_h5, indices_h5, base_dir, out_dir, edge_selection, ci_alpha, fdr_alpha, n_bootstrap, batch_size,
         store_replicates, boot_precision, device, gene_index, gene_range, genes_per_task, task_id, gene_list, force, quiet) -> None:
    """Bootstrap CI and statistics of Δ = r_H − r_L for each gene's selected edges (docs/design.md §4.6)."""
    selection = {"gene_index": list(gene_index) or None, "gene_range": gene_range,
                 "genes_per_task": genes_per_task, "task_id": task_id, "gene_list": gene_list}
    info = run_bootstrap(expr_h5, indices_h5, base_dir, out_dir, edge_selection=edge_selection, ci_alpha=ci_alpha,
                         fdr_alpha=fdr_alpha, n_bootstrap=n_bootstrap, batch_size=parse_batch_size(str(batch_size)),
                         store_replicates=store_replicates, boot_precision=boot_precision, selection=selection,
                         force=force, quiet=quiet, device=device)
    if not quiet:
        print(
            f"02b: {len(info['written'])} written, {len(info['skipped'])} skipped; edge chunk {info['edge_chunk']}; "
            f"peak RSS {info['peak_rss_bytes'] / 2**20:.0f} MiB (estimate {info['estimate_bytes'] / 2**20:.0f} MiB)",
            file=sys.stderr,
        )
