"""Plan a run: stages to submit, tasks, and the memory each asks for (memfit × calibration)."""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from dcoex.genes import read_gene_list
from dcoex.pipeline.currency import PlanUpstream, StageStatus, stage_status
from dcoex.pipeline.estimates import stage_estimate
from dcoex.pipeline.options import Options
from dcoex.pipeline.shapes import DataShape, read_shape
from dcoex.pipeline.stages import STAGE_ORDER, STAGES, stage_argv
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
    why: dict[str, str] = field(default_factory=dict)  # stage -> why it runs
    status: dict[str, StageStatus] = field(default_factory=dict)
    upstream: PlanUpstream | None = None

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
        for s, why in self.why.items():
            lines.append(f"{s}: runs ({why})")
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
    if options.focus_genes:  # the stages would refuse them (exit 2) after the whole chain ran
        unknown = sorted(set(options.focus_genes.split(",")) - set(shape.gene_names))
        if unknown:
            raise InputError(f"--focus-genes: {len(unknown)} unknown gene name(s): {', '.join(unknown)}")
    gpt, task_genes = split_tasks(universe, options.genes_per_task, scheduler.array_limit(),
                                   scheduler.auto_target_tasks)
    cal_file, factors = load_factors(options)
    plan = RunPlan(options, shape, expr_h5, universe, gpt, task_genes, cal_file, factors)
    _choose_work(plan, stages)
    _check_upstream(plan)
    _size_stages(plan, scheduler)
    return plan


def _check_upstream(plan: RunPlan) -> None:
    """Every stage to run has current inputs: from a stage that runs too, or already on disk."""
    running = set(plan.stages)
    for s in plan.stages:
        for before in reversed(STAGES[s].upstream):  # the nearest first
            if before in running or (before == "00" and plan.options.expr_h5):
                continue
            status = plan.status.get(before) or stage_status(before, plan.upstream, plan.universe)
            if status.current:
                continue
            hint = f"stage {s} needs the outputs of stage {before}; add {before} to --stages (or run it first)"
            if STAGES[before].per_gene:
                tasks = sorted({t for t, genes in plan.task_genes.items() if set(genes) & set(status.stale_genes)})
                raise InputError(f"{hint}: outputs of {len(tasks)} task(s) in {STAGES[before].output_path(Path(plan.options.out_dir))} "
                                 f"are not current (tasks {compress_tasks(tasks)}): {status.why(len(plan.universe))}")
            raise InputError(f"{hint}: {STAGES[before].output_path(Path(plan.options.out_dir))}: {status.why()}")


def _choose_work(plan: RunPlan, stages: list[str]) -> None:
    """Decide per stage: skip (every output current), run all, or run the tasks with stale genes.

    The per-gene chain 02a → 02b → 03 runs one task list (the union of the tasks any of them
    must redo, for per-task dependencies); inside a task a stage skips its current genes.
    """
    o = plan.options
    plan.upstream = PlanUpstream(out_dir=Path(o.out_dir), expr_h5=plan.expr_h5, expr_tsv=o.expr_tsv,
                                 params=o.params, gene_names=plan.shape.gene_names, universe=plan.universe)
    chain: dict[str, list[int]] = {}
    for s in stages:
        status = stage_status(s, plan.upstream, plan.universe)
        plan.status[s] = status
        if o.force:
            plan.why[s] = "--force"
        elif status.current:
            plan.skipped[s] = "current: every output records the wanted provenance"
            continue
        else:
            plan.why[s] = status.why(len(plan.universe))
        if STAGES[s].per_gene:
            stale = set(plan.universe) if o.force else set(status.stale_genes)
            chain[s] = sorted(t for t, genes in plan.task_genes.items() if stale & set(genes))
        plan.stages[s] = None  # type: ignore[assignment]  # sized later
    union = sorted(set().union(*chain.values())) if chain else []
    for s in chain:
        plan.stages[s] = union  # type: ignore[assignment]  # sized later


def _size_stages(plan: RunPlan, scheduler: Scheduler) -> None:
    o = plan.options
    shape = plan.shape
    params = o.stage_params()
    params["genes_per_task"] = plan.genes_per_task
    params["gene_list_file"] = (Path(o.out_dir) / ".dcoex" / "gene_list.txt") if o.gene_subset else None
    params["force"] = o.force
    for s, tasks in list(plan.stages.items()):
        spec = STAGES[s]
        own = stage_estimate(s, shape, n_bootstrap=o.n_bootstrap, low_frac=o.low_frac, high_frac=o.high_frac,
                             bootstrap_frac=o.bootstrap_frac, fdr_alpha=o.fdr_alpha,
                             batch_size=o.batch_size, slots=o.slots, focus_genes=o.focus_genes, n_hubs=o.n_hubs)
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
            argv=stage_argv(s, Path(o.out_dir), plan.expr_h5, params),
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
