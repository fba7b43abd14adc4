"""Stage 07: the permutation null of the hub metrics (docs/stage07.md).

Each array task computes the permutations of its part, [(t−1)·K, min(t·K, P)) for task t
(K = ``--perms-per-task``), and writes ``{out_dir}/perm_<first>-<last>.h5`` atomically. A
part whose provenance is current is skipped (``--force`` recomputes). Without a task id (no
``--task-id``, no SGE_TASK_ID/SLURM_ARRAY_TASK_ID) every part is computed in turn. Reads only
``expression.h5`` (00) and the group sizes of ``bootstrap_indices.h5`` (01), so it runs beside 02a.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
import h5py
import numpy as np

from dcoex.backend import Backend, for_backend, resolve
from dcoex.cli import force_option, parse_batch_size
from dcoex.expression_store import open_expression
from dcoex.genes import task_id_from_env
from dcoex.h5io import write_attrs
from dcoex.indices_file import IndicesFile
from dcoex.progress import progress
from dcoex.provenance import why_stale, write_provenance
from dcoex.stages.s02a_base_correlations.cli import MAX_TILE_ROWS, tile_device_bytes
from dcoex.stages.s07_permutation_null.contract import CONTRACT, n_parts, part_name, part_ranges
from dcoex.stages.s07_permutation_null.estimator import estimate
from dcoex.stages.s07_permutation_null.io import write_part
from dcoex.stages.s07_permutation_null.science import METRICS, RNG_SCHEME, EdgeRules, null_metrics, permutation_groups
from dcoex.stages.upstream import FileUpstream
from dcoex.threads import blas_threads
from hpc.atomic import atomic_output, ensure_writable_dir
from hpc.errors import InputError
from memfit.allocation import detect_allocation
from memfit.plan import plan_batch
from memfit.record import H5_GROUP as MEMFIT_GROUP
from memfit.record import PeakRecorder, h5_attrs, write_sidecar

STAGE = "07"
PER_PERMUTATION = ("n_sig_low", "n_sig_high", "n_sig_differential", "n_tests_diff")


def run_null(expr_h5: str | Path, indices_h5: str | Path, out_dir: str | Path, *, values: dict[str, Any],
             task_id: int | None = None, force: bool = False, quiet: bool = True,
             backend: Backend | None = None) -> dict[str, Any]:
    """Run the parts of task ``task_id`` (1-based; None: every part). ``values``: the contract's
    parameters by name (missing ones take their defaults); ``backend`` (tests) overrides the
    one ``device`` resolves to."""
    v = CONTRACT.resolve(values)
    backend = resolve(v["device"]) if backend is None else backend
    ranges = part_ranges(v["n_permutations"], v["perms_per_task"])
    if task_id is not None and not 1 <= task_id <= len(ranges):
        raise InputError(f"--task-id {task_id}: {v['n_permutations']} permutations in tasks of "
                         f"{v['perms_per_task']} make {len(ranges)} task(s)")
    units = [task_id - 1] if task_id is not None else list(range(n_parts(v)))
    out = ensure_writable_dir(out_dir)
    rules = EdgeRules(v["edge_selection"], v["min_effect"], v["corr_threshold"])
    allocation = detect_allocation()
    with open_expression(expr_h5) as store, IndicesFile(indices_h5) as indices:
        names, n, s = list(store.gene_names), store.n_genes, store.n_samples
        indices.check_expression(n, s, store.content_sha256, expr_h5)
        if n < 2:
            raise InputError(f"{expr_h5}: {n} gene(s); at least 2 are needed for pairs")
        k_low, k_high = indices.k_low, indices.k_high
        upstream = FileUpstream(files={"00": Path(expr_h5), "01": Path(indices_h5)}, gene_names=names)

        def estimate_for(rows: int):
            host = estimate(n, s, k_low=k_low, k_high=k_high, fdr_alpha=v["fdr_alpha"], tile_rows=rows,
                            perms_per_task=min(v["perms_per_task"], v["n_permutations"]))
            return for_backend(host, backend, tile_device_bytes(n, k_low=k_low, k_high=k_high, tile_rows=rows))

        plan = plan_batch(parse_batch_size(str(v["batch_size"])), estimate_for, min(MAX_TILE_ROWS, n - 1),
                          allocation, what="tile", device=backend.device_limit())
        written, skipped, per_part = [], [], {}
        with PeakRecorder(limit_bytes=allocation.limit_bytes) as recorder, blas_threads():
            expr = None
            for unit in units:
                first, stop = ranges[unit]
                path = out / part_name(first, stop)
                wanted = CONTRACT.wanted(v, upstream, unit)
                if not force and why_stale(path, wanted) is None:
                    skipped.append(unit + 1)
                    continue
                if expr is None:
                    expr = store.read_all()
                t0 = time.monotonic()
                null = {m: np.empty((stop - first, n), np.float64) for m in METRICS}
                counts = {c: np.empty(stop - first, np.int64) for c in (*PER_PERMUTATION, "n_edges")}
                for row, perm in enumerate(progress(range(first, stop), quiet=quiet, unit="perm")):
                    low, high = permutation_groups(s, k_low, k_high, v["seed"], perm)
                    metrics, attrs = null_metrics(expr, low, high, alpha=v["fdr_alpha"], rules=rules,
                                                  tile_rows=plan.batch_size, backend=backend)
                    for m in METRICS:
                        null[m][row] = metrics[m]
                    for c in PER_PERMUTATION:
                        counts[c][row] = int(attrs[c])
                    counts["n_edges"][row] = int(metrics["n_sig_edges_diff"][0])
                meta = {"n_genes": n, "n_samples": s, "k_low": k_low, "k_high": k_high, "first_permutation": first,
                        "n_permutations_part": stop - first, "n_permutations": v["n_permutations"],
                        "perms_per_task": v["perms_per_task"], "seed": v["seed"], "rng_scheme": RNG_SCHEME,
                        "fdr_alpha": v["fdr_alpha"], "edge_selection": v["edge_selection"],
                        "min_effect": v["min_effect"], "corr_threshold": v["corr_threshold"],
                        "expr_content_sha256": store.content_sha256}
                counts["index"] = np.arange(first, stop, dtype=np.int64)
                with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
                    write_part(f, meta=meta, gene_names=names, null=null, per_permutation=counts)
                    write_provenance(f, wanted)
                    write_attrs(f.require_group(MEMFIT_GROUP), h5_attrs(STAGE, plan.estimate, allocation, recorder,
                                                                        plan.batch_size))
                written.append(unit + 1)
                per_part[str(unit + 1)] = {"permutations": f"{first}-{stop - 1}",
                                           "wall_s": round(time.monotonic() - t0, 3),
                                           "s_per_permutation": round((time.monotonic() - t0) / (stop - first), 4)}
            recorder.stop()
        first_unit, last_unit = min(units), max(units)
        sidecar = out / "memory" / f"{STAGE}.perms_{ranges[first_unit][0]:07d}-{ranges[last_unit][1] - 1:07d}.memory.json"
        write_sidecar(sidecar, STAGE, plan.estimate, allocation, recorder, batch_size=plan.batch_size,
                      extra={**({"task_id": str(task_id)} if task_id is not None else {}),
                             "tasks": [u + 1 for u in units], "written": written, "skipped": skipped,
                             "per_task": per_part, "n_genes": n, "n_samples": s, "backend": backend.describe()})
    return {"written": written, "skipped": skipped, "tile_rows": plan.batch_size,
            "estimate_bytes": plan.estimate.total_bytes, "peak_rss_bytes": recorder.peak_rss_bytes}


@click.command(name="07_permutation_null")
@click.option("--expr-h5", required=True, type=click.Path(dir_okay=False), help="expression.h5 from stage 00.")
@click.option("--indices-h5", required=True, type=click.Path(dir_okay=False),
              help="bootstrap_indices.h5 from stage 01 (only its group sizes k_L, k_H are used).")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False), help="Folder of the part files (permutation_null/).")
@CONTRACT.click_options
@click.option("--task-id", type=int, default=None,
              help="1-based array task (default: SGE_TASK_ID / SLURM_ARRAY_TASK_ID; none: every part).")
@force_option
@click.option("--quiet", is_flag=True, help="No progress bar or summary line.")
def main(*, expr_h5: str, indices_h5: str, out_dir: str, task_id: int | None, force: bool, quiet: bool,
         **values: Any) -> None:
    """Permutation null of the direct hub metrics: random LOW/HIGH splits, all-pairs tests and BH."""
    info = run_null(expr_h5, indices_h5, out_dir, values=values,
                    task_id=task_id if task_id is not None else task_id_from_env(), force=force, quiet=quiet)
    if not quiet:
        print(f"07: {len(info['written'])} part(s) written, {len(info['skipped'])} current and kept; tile "
              f"{info['tile_rows']} rows; peak RSS {info['peak_rss_bytes'] / 2**20:.0f} MiB "
              f"(estimate {info['estimate_bytes'] / 2**20:.0f} MiB)", file=sys.stderr)
