"""Plan a run: stages to submit, tasks, and the memory each asks for (memfit × calibration)."""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from dcoex.genes import read_gene_list
from dcoex.pipeline import validate
from dcoex.pipeline.estimates import stage_estimate
from dcoex.pipeline.options import Options
from dcoex.pipeline.shapes import DataShape, read_shape
from dcoex.pipeline.stages import PER_GENE_CHAIN, STAGE_ORDER, STAGES, HUBS_TSV, stage_argv, stage_options
from hpc.calibration import find_calibration, load_calibration
from hpc.errors import InputError
from hpc.schedulers import Scheduler, compress_tasks
from memfit.estimate import MemoryEstimate
from memfit.units import MiB, format_bytes

#: Tasks per array that ``--genes-per-task auto`` aims at on a scheduler (fewer if the array
#: limit is lower); ``--local`` aims at ``Local.auto_target_tasks``.
AUTO_TARGET_TASKS = Scheduler.auto_target_tasks
#: Testing knob: ``DCOEX_TEST_MEM_SCALE_<STAGE>=0.1`` scales the first request of one stage.
TEST_SCALE_ENV = "DCOEX_TEST_MEM_SCALE_"
#: Testing knob: ``DCOEX_TEST_ESTIMATE_SCALE_<STAGE>=0.5`` scales the planned raw estimate of one stage.
TEST_ESTIMATE_SCALE_ENV = "DCOEX_TEST_ESTIMATE_SCALE_"
@dataclass
class StagePlan:
    """What one stage will ask for: tasks, memory (bytes), slots and time."""

    stage: str
    per_gene: bool
    genes_per_task: int | None
    n_tasks: int
    tasks: list[int] | None  # tasks to run (per-gene stages), None for single jobs
    slots: int
    time_limit: str
    raw_estimate: MemoryEstimate
    minimum_estimate: MemoryEstimate  # the stage's own estimate at its smallest batch
    calibration_factor: float
    requested_bytes: int
    request: str
    argv: list[str]
    test_scale: float | None = None

    @property
    def estimate(self) -> MemoryEstimate:
        return self.raw_estimate.scaled(self.calibration_factor) if self.calibration_factor != 1 else self.raw_estimate

    @property
    def planned_peak_bytes(self) -> int:
        """The peak the request covers: estimate × calibration, never below the stage's minimum
        (the stage refuses to start when its own estimate does not fit safety × its limit)."""
        return max(int(self.raw_estimate.total_bytes * self.calibration_factor), self.minimum_estimate.total_bytes)


@dataclass
class RunPlan:
    options: Options
    shape: DataShape
    expr_h5: Path
    universe: list[int]
    genes_per_task: int
    task_genes: dict[int, list[int]]
    calibration_file: str | None
    factors: dict[str, float]
    stages: dict[str, StagePlan] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # stage -> why it is not submitted

    def table(self) -> str:
        head = ("stage", "jobs/tasks", "genes/task", "memory requested", "estimated peak", "time")
        rows = [head]
        for s, p in self.stages.items():
            jobs = f"{len(p.tasks)} of {p.n_tasks} tasks" if p.tasks is not None else "1 job"
            peak = format_bytes(p.planned_peak_bytes)
            if p.calibration_factor != 1:
                peak += f" (x{p.calibration_factor:g})"
            req = p.request + (f" [test scale {p.test_scale:g}]" if p.test_scale else "")
            rows.append((s, jobs, str(p.genes_per_task or "-"), req, peak, p.time_limit))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        for s, why in self.skipped.items():
            lines.append(f"{s}: skipped ({why})")
        return "\n".join(lines)


def load_factors(options: Options) -> tuple[str | None, dict[str, float]]:
    """Calibration factors per stage from ``--calibration`` or ``OUT_DIR/memfit_calibration.json``
    (hpc.calibration; a bad file is a CalibrationError, one line)."""
    path = options.calibration
    if path is None:
        found = find_calibration(options.out_dir)
        path = str(found) if found is not None else None
    if path is None:
        return None, {}
    return path, load_calibration(path)


def apply_test_estimate_scale(stage: str, raw: MemoryEstimate) -> MemoryEstimate:
    """Testing knob ``DCOEX_TEST_ESTIMATE_SCALE_<STAGE>=F``: the planned raw estimate times F
    (an estimator off by 1/F, for the calibration round-trip test of ``memfit review``)."""
    scale = os.environ.get(f"{TEST_ESTIMATE_SCALE_ENV}{stage.upper()}")
    if not scale:
        return raw
    try:
        factor = float(scale)
    except ValueError:
        raise InputError(f"{TEST_ESTIMATE_SCALE_ENV}{stage.upper()}={scale!r}: not a number") from None
    return MemoryEstimate(raw.stage, {k: int(v * factor) for k, v in raw.components.items()},
                          dict(raw.params, test_estimate_scale=factor))


def _auto_genes_per_task(n_universe: int, array_limit: int, target_tasks: int) -> int:
    target = max(1, min(target_tasks, array_limit))
    return max(1, math.ceil(n_universe / target))


def split_tasks(universe: list[int], genes_per_task: int | str, array_limit: int,
                target_tasks: int = AUTO_TARGET_TASKS) -> tuple[int, dict[int, list[int]]]:
    """Genes per task and {task id (1-based): gene indices}, within the array limit.

    ``genes_per_task`` "auto" aims at ``target_tasks`` tasks (fewer if the limit is lower).
    """
    if genes_per_task == "auto":
        gpt = _auto_genes_per_task(len(universe), array_limit, target_tasks)
    else:
        gpt = int(genes_per_task)
    n_tasks = math.ceil(len(universe) / gpt)
    if n_tasks > array_limit:
        raise InputError(
            f"{n_tasks} tasks of {gpt} genes exceed the scheduler's array limit ({array_limit}); "
            f"use --genes-per-task {math.ceil(len(universe) / array_limit)} or more"
        )
    return gpt, {t: universe[(t - 1) * gpt: t * gpt] for t in range(1, n_tasks + 1)}


def selected_stages(options: Options) -> list[str]:
    if options.stages is None:
        return [s for s in STAGE_ORDER if s != "00" or options.expr_tsv]
    chosen = [s for s in STAGE_ORDER if s in options.stages]
    if "00" in chosen and not options.expr_tsv:
        raise InputError("--stages 00 needs --expr-tsv (stage 00 converts a TSV)")
    return chosen


def make_plan(options: Options, scheduler: Scheduler) -> RunPlan:
    """Read shapes, check the input, choose tasks and memory for every stage to submit."""
    out_dir = Path(options.out_dir)
    shape = read_shape(options.expr_tsv, options.expr_h5)
    expr_h5 = Path(options.expr_h5).resolve() if options.expr_h5 else out_dir / STAGES["00"].output
    stages = selected_stages(options)
    universe = list(range(shape.n_genes))
    if options.gene_subset:
        universe = read_gene_list(options.gene_subset, shape.gene_names)
        if not universe:
            raise InputError(f"{options.gene_subset}: the gene subset is empty")
    gpt, task_genes = split_tasks(universe, options.genes_per_task, scheduler.array_limit(),
                                   scheduler.auto_target_tasks)
    cal_file, factors = load_factors(options)
    plan = RunPlan(options, shape, expr_h5, universe, gpt, task_genes, cal_file, factors)
    _choose_work(plan, stages)
    _check_upstream(plan)
    _size_stages(plan, scheduler)
    return plan


def _check_upstream(plan: RunPlan) -> None:
    """Every stage to run has its inputs: from a stage that runs too, or already on disk."""
    out = Path(plan.options.out_dir)
    running = list(plan.stages)
    for s in running:
        before = STAGE_ORDER[STAGE_ORDER.index(s) - 1] if s != "00" else None
        if before is None or before in running or (before == "00" and plan.options.expr_h5):
            continue
        spec = STAGES[before]
        hint = f"stage {s} needs the outputs of stage {before}; add {before} to --stages (or run it first)"
        if not spec.per_gene:
            path = plan.expr_h5 if before == "00" else spec.output_path(out)
            if not path.exists():
                raise InputError(f"{hint}: {path} is missing")
            continue
        tasks = plan.stages[s] if STAGES[s].per_gene else sorted(plan.task_genes)
        missing = validate.missing_tasks(spec.output_path(out), {t: plan.task_genes[t] for t in tasks},
                                         plan.shape.gene_names, plan.shape.n_genes)
        if missing:
            raise InputError(f"{hint}: outputs of {len(missing)} task(s) are missing or invalid in "
                             f"{spec.output_path(out)} (tasks {compress_tasks(missing)})")


def _choose_work(plan: RunPlan, stages: list[str]) -> None:
    """Decide per stage: skip (outputs validate), run all, or run some tasks."""
    o, out = plan.options, Path(plan.options.out_dir)
    params = o.stage_params()
    dirty = bool(o.force)  # something upstream runs again: everything downstream must too
    chain_tasks: list[int] | None = None
    all_tasks = sorted(plan.task_genes)
    for s in stages:
        spec = STAGES[s]
        if not spec.per_gene:
            if s == "00":
                ok = validate.expression_valid(plan.expr_h5, plan.options.expr_tsv)
            elif s == "01":
                ok = validate.indices_valid(spec.output_path(out), params)
            else:
                ok = validate.collect_valid(spec.output_path(out), out / HUBS_TSV)
            if dirty or not ok:
                plan.stages[s] = None  # type: ignore[assignment]  # sized later
                dirty = True
            else:
                plan.skipped[s] = "outputs exist and validate"
            continue
        if chain_tasks is None:
            if dirty:
                chain_tasks = all_tasks
            else:
                here = validate.missing_tasks(
                    spec.output_path(out), plan.task_genes, plan.shape.gene_names, plan.shape.n_genes)
                if not here:
                    plan.skipped[s] = "outputs exist and validate"
                    continue
                later = [c for c in stages if c in PER_GENE_CHAIN and STAGE_ORDER.index(c) > STAGE_ORDER.index(s)]
                missing = set(here)
                for c in later:
                    missing |= set(validate.missing_tasks(
                        STAGES[c].output_path(out), plan.task_genes, plan.shape.gene_names, plan.shape.n_genes))
                chain_tasks = sorted(missing)
        plan.stages[s] = chain_tasks  # type: ignore[assignment]  # sized later
        dirty = True  # the collect after re-run per-gene stages must run again


def _size_stages(plan: RunPlan, scheduler: Scheduler) -> None:
    o = plan.options
    shape = plan.shape
    params = o.stage_params()
    params["genes_per_task"] = plan.genes_per_task
    params["gene_list_file"] = (Path(o.out_dir) / ".dcoex" / "gene_list.txt") if o.gene_subset else None
    # per-gene outputs made from a previous 00/01 must be recomputed
    params["force"] = o.force or "00" in plan.stages or "01" in plan.stages
    for s, tasks in list(plan.stages.items()):
        spec = STAGES[s]
        own = stage_estimate(s, shape, o.n_bootstrap, o.low_frac, o.high_frac, o.bootstrap_frac, o.fdr_alpha,
                             o.batch_size, o.slots)
        raw, minimum = apply_test_estimate_scale(s, own.planned), apply_test_estimate_scale(s, own.minimum)
        factor = plan.factors.get(s, 1.0)
        peak = max(int(raw.total_bytes * factor), minimum.total_bytes)
        requested = scheduler.request_bytes(peak, o.mem_safety, o.slots)
        scale = os.environ.get(f"{TEST_SCALE_ENV}{s.upper()}")
        test_scale = None
        if scale:
            try:
                test_scale = float(scale)
            except ValueError:
                raise InputError(f"{TEST_SCALE_ENV}{s.upper()}={scale!r}: not a number") from None
        plan.stages[s] = StagePlan(
            stage=s, per_gene=spec.per_gene, genes_per_task=plan.genes_per_task if spec.per_gene else None,
            n_tasks=len(plan.task_genes) if spec.per_gene else 1, tasks=tasks if spec.per_gene else None,
            slots=o.slots, time_limit=o.times.get(s, o.default_time), raw_estimate=raw,
            minimum_estimate=minimum, calibration_factor=factor, requested_bytes=requested,
            request=scheduler.request_string(requested, o.slots),
            argv=stage_argv(s, Path(o.out_dir), plan.expr_h5, params, stage_options(s)),
            test_scale=test_scale,
        )
    limit = None if o.local else scheduler.max_request_bytes()
    if limit:
        too_big = [p for p in plan.stages.values() if p.requested_bytes > limit]
        if too_big:
            p = too_big[0]
            raise InputError(
                f"stage {p.stage} needs {p.request} ({format_bytes(p.requested_bytes)} for "
                f"{format_bytes(p.planned_peak_bytes)} estimated peak / safety {o.mem_safety:g}) but the largest "
                f"node offers {format_bytes(limit)}; lower --batch-size or --genes-per-task, or use a bigger node"
            )


def first_request(plan: StagePlan) -> int:
    """Bytes the first attempt asks for (the test knob scales it down)."""
    if plan.test_scale:
        unit = MiB * plan.slots  # whole MiB per slot, as the schedulers are asked
        return max(int(math.ceil(plan.requested_bytes * plan.test_scale / unit)), 1) * unit
    return plan.requested_bytes


def print_plan(plan: RunPlan, scheduler: Scheduler, out=sys.stdout) -> None:
    o = plan.options
    print(f"dcoex pipeline plan ({scheduler.name}): {plan.shape.n_genes} genes x {plan.shape.n_samples} samples, "
          f"{len(plan.universe)} reference genes, {plan.genes_per_task} per task, memory safety {o.mem_safety:g}"
          + (f", calibration {plan.calibration_file}" if plan.calibration_file else ""), file=out)
    print(plan.table(), file=out)
