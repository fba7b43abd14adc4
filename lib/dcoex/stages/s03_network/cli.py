"""Stage 03: the differential network of each reference gene (docs/design.md §4.7–§4.9, docs/stage03.md).

For every selected gene, reads ``base_correlations/{gi}_{gene}.h5`` (02a) and
``bootstrap_significant/{gi}_{gene}.h5`` (02b), checks that they agree, keeps the edges E
(CI excludes 0, |delta| >= min_effect), classifies them, computes the topology of the
low / high / diff networks and the focus-gene L1/L2 metrics, and writes
``{out_dir}/{gi}_{gene}.h5`` atomically. Genes are independent: a failing gene does not
stop the others (exit 1 at the end, naming them).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from dcoex.cli import gene_selection_options
from dcoex.genes import gene_file_path, index_width
from dcoex.h5io import write_attrs
from dcoex.pergene import resolve_genes, run_genes
from dcoex.provenance import why_stale, write_provenance
from dcoex.stages.s03_network.build import NetworkOptions, reconstruct
from dcoex.stages.s03_network.classify import select_edges
from dcoex.stages.s03_network.contract import CONTRACT
from dcoex.stages.s03_network.estimator import estimate
from dcoex.stages.s03_network.io import (
    base_summary,
    network_edge_count,
    read_gene_inputs,
    read_gene_names,
    write_network,
)
from dcoex.stages.upstream import FileUpstream
from hpc.atomic import atomic_output, ensure_writable_dir
from hpc.errors import InputError
from memfit.allocation import detect_allocation
from memfit.heap import fix_mmap_threshold
from memfit.plan import MemoryPlanError
from memfit.record import H5_GROUP as MEMFIT_GROUP
from memfit.record import PeakRecorder, h5_attrs, task_sidecar_path, write_sidecar
from memfit.units import format_bytes

STAGE = "03"


def gene_universe(base_dir: Path, expr_h5: str | None) -> tuple[list[str], str | None]:
    """(gene names, expression checksum or None): from --expr-h5 if given, else from the
    first ``*.h5`` of the base folder (its root ``gene_names``)."""
    if expr_h5:
        from dcoex.expression_store import open_expression

        with open_expression(expr_h5) as store:
            return list(store.gene_names), store.content_sha256
    if not base_dir.is_dir():
        raise InputError(f"{base_dir}: base correlations folder does not exist")
    files = sorted(p for p in base_dir.glob("*.h5") if not p.name.startswith("."))
    if not files:
        raise InputError(f"{base_dir}: no base correlation files (*.h5); give --expr-h5 or run 02a first")
    return read_gene_names(files[0]), None


def run_network(
    base_dir: str | Path,
    boot_dir: str | Path,
    out_dir: str | Path,
    *,
    genes: Sequence[int] | None = None,
    options: NetworkOptions = NetworkOptions(),
    expr_h5: str | None = None,
    gene_selection: dict[str, Any] | None = None,
    force: bool = False,
    quiet: bool = True,
) -> dict[str, Any]:
    """Run stage 03 for the selected genes; returns {"written", "skipped", "failed"}.

    ``genes`` are 0-based indices; otherwise ``gene_selection`` (the select_genes
    keyword arguments) chooses them. Raises GenesFailedError after the loop if any failed.
    """
    base_dir, boot_dir, out_dir = Path(base_dir), Path(boot_dir), Path(out_dir)
    names, expr_sha = gene_universe(base_dir, expr_h5)
    n = len(names)
    if genes is None:
        genes = resolve_genes(n, names, gene_selection or {})
    genes = sorted(set(int(g) for g in genes))
    bad = [g for g in genes if not 0 <= g < n]
    if bad:
        raise InputError(f"gene index {bad[0]} out of range 0..{n - 1}")
    ensure_writable_dir(out_dir)
    fix_mmap_threshold()  # freed per-edge temporaries leave the resident set (the estimate adds no two phases)
    params = options.meta()
    allocation = detect_allocation()
    names_array = np.asarray(names, dtype=object)

    upstream_of: dict[int, dict[str, Any]] = {}

    def keep(e: dict[str, np.ndarray]) -> np.ndarray:
        return select_edges(e["delta"], e["ci_low"], e["ci_high"], options.min_effect, options.ci_filter)

    max_edges = max_candidates = 0
    network_edges: dict[int, int | None] = {}
    for g in genes:
        n_candidates, upstream_of[g] = base_summary(gene_file_path(base_dir, g, names[g], n))
        n_network = network_edge_count(gene_file_path(base_dir, g, names[g], n), gene_file_path(boot_dir, g, names[g], n),
                                       keep) if n_candidates else 0
        network_edges[g] = n_network
        max_edges = max(max_edges, n_candidates if n_network is None else n_network)
        max_candidates = max(max_candidates, n_candidates)
    est = estimate(n_genes=n, n_edges=max_edges, n_candidates=max_candidates)
    if est.total_bytes > allocation.usable_bytes:
        raise MemoryPlanError(
            f"stage 03 for {max_edges} network edges is estimated at {format_bytes(est.total_bytes)} "
            f"> usable {format_bytes(allocation.usable_bytes)} ({allocation.describe()}); request more memory",
            est, allocation,
        )

    def output_of(g: int) -> Path:
        return gene_file_path(out_dir, g, names[g], n)

    upstream = FileUpstream(dirs={"02a": base_dir, "02b": boot_dir}, gene_names=names)
    values = {"min_effect": options.min_effect, "corr_threshold": options.corr_threshold,
              "no_ci_filter": not options.ci_filter, "zero_undefined": options.zero_undefined}

    def is_valid(g: int, path: Path) -> bool:
        return why_stale(path, CONTRACT.wanted(values, upstream, g)) is None

    per_gene: dict[str, Any] = {}
    with PeakRecorder(allocation.limit_bytes) as recorder:

        def process(g: int, path: Path) -> None:
            t0 = time.monotonic()
            name = names[g]
            base_path, boot_path = gene_file_path(base_dir, g, name, n), gene_file_path(boot_dir, g, name, n)
            inputs = read_gene_inputs(base_path, boot_path, g, name, n, keep=keep, expected_kept=network_edges.get(g))
            if expr_sha and inputs.upstream.get("expr_content_sha256") not in ("", expr_sha):
                raise InputError(f"gene {g} ({name}): base file was made from another expression matrix than {expr_h5}")
            network = reconstruct(inputs, options)
            network.meta.update(base_file=Path(os.path.relpath(base_path, path.parent)).as_posix(),
                                boot_file=Path(os.path.relpath(boot_path, path.parent)).as_posix())
            with atomic_output(path) as tmp:
                f = write_network(tmp, network.meta, network.stored, qual_summary=network.qual_summary,
                                  topology=network.topology, focus=network.focus, gene_names=names_array)
                try:
                    write_provenance(f, CONTRACT.wanted(values, upstream, g))
                    write_attrs(f.require_group(MEMFIT_GROUP), h5_attrs(STAGE, est, allocation, recorder, 1))
                finally:
                    f.close()
            per_gene[str(g)] = {"n_candidate_edges": inputs.n_candidates,
                                "n_edges": network.meta["n_significant"],
                                "wall_s": round(time.monotonic() - t0, 4)}

        def finish(done: dict) -> None:
            recorder.stop()
            write_sidecar(
                task_sidecar_path(out_dir, STAGE, genes, index_width(n)), STAGE, est, allocation, recorder,
                batch_size=1,
                extra={"genes": genes, **done, "per_gene": per_gene, "n_genes": n,
                       "max_candidate_edges": max_candidates, "max_network_edges": max_edges, **params},
            )

        return run_genes(genes, output_of, is_valid, process, finish, force=force, quiet=quiet)


@click.command(name="03_reconstruct_diff_network")
@click.option("--base-dir", required=True, type=click.Path(file_okay=False), help="Folder of 02a base_correlations/{gi}_{gene}.h5.")
@click.option("--boot-dir", required=True, type=click.Path(file_okay=False), help="Folder of 02b bootstrap_significant/{gi}_{gene}.h5.")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False), help="Output folder networks/ (created if missing).")
@click.option("--expr-h5", default=None, type=click.Path(dir_okay=False), help="expression.h5: gene names and checksum (default: gene_names of the first base file).")
@CONTRACT.click_options
@gene_selection_options
def main(*, base_dir: str, boot_dir: str, out_dir: str, expr_h5: str | None, min_effect: float,
         corr_threshold: float, no_ci_filter: bool, zero_undefined: bool, gene_index: tuple[int, ...],
         gene_range: str | None, genes_per_task: int | None, task_id: int | None, gene_list: str | None,
         force: bool, quiet: bool) -> None:
    """Reconstruct the differential network of each selected reference gene."""
    options = NetworkOptions(min_effect, corr_threshold, not no_ci_filter, zero_undefined)
    selection = {"gene_index": list(gene_index) or None, "gene_range": gene_range,
                 "genes_per_task": genes_per_task, "task_id": task_id, "gene_list": gene_list}
    result = run_network(base_dir, boot_dir, out_dir, options=options, expr_h5=expr_h5, gene_selection=selection,
                         force=force, quiet=quiet)
    if not quiet:
        print(f"03: {len(result['written'])} written, {len(result['skipped'])} skipped (valid output exists)", file=sys.stderr)
