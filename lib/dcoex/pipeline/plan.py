"""Plan a run: stages to submit, tasks, and the memory each asks for (memfit × calibration)."""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from dcoex.edge_files import read_selected_count
from dcoex.genes import gene_file_path, read_gene_list
from dcoex.pipeline.currency import PlanUpstream, StageStatus, stage_status
from dcoex.pipeline.disk import StageDisk, disk_refusal, free_bytes, stage_disk
from dcoex.pipeline.options import Options
from dcoex.pipeline.shapes import DataShape, read_shape
from dcoex.pipeline.sizing import (
    EDGE_SIZED,
    Request,
    TimeRequest,
    request_for,
    scaled_request,
    time_for,
    time_scale_knob,
)
from dcoex.pipeline.stages import HUBS_TSV, STAGE_ORDER, STAGES, is_array, stage_argv
from hpc.calibration import find_calibration, load_calibration
from hpc.errors import InputError
from hpc.schedulers import Scheduler, compress_tasks, time_limit_seconds
from memfit.estimate import MemoryEstimate
from memfit.units import format_bytes

#: Tasks per array that ``--genes-per-task auto`` aims at on a scheduler (fewer if the array
#: limit is lower); ``--local`` aims at ``Local.auto_target_tasks``.
AUTO_TARGET_TASKS = Scheduler.auto_target_tasks
#: Testing knob: ``DCOEX_TEST_MEM_SCALE_<STAGE>=0.1`` scales the first request of one stage.
TEST_SCALE_ENV = "DCOEX_TEST_MEM_SCALE_"
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
    #: 02b, 03: requests of the tasks whose genes' 02a counts are known (bytes); the others are
    #: at the bound until their 02a task ends (dcoex.pipeline.sizing)
    task_requests: dict[int, int] = field(default_factory=dict)
    task_raw_estimates: dict[int, int] = field(default_factory=dict)  # their raw estimates (bytes)
    sizing: str = ""  # what the request rests on: "" (shape), "02a edge counts", "bound ..."
    #: the upper bound of the sized time limits (--time-<stage> or the default), H:MM:SS
    time_limit_bound: str = ""
    #: 02b, 03: time limits (H:MM:SS) and modelled run times (seconds) of the tasks whose genes'
    #: 02a counts are known (dcoex.pipeline.sizing.time_for); the others have ``time_limit``
    task_time_limits: dict[int, str] = field(default_factory=dict)
    task_seconds: dict[int, float] = field(default_factory=dict)
    test_time_scale: float | None = None  # DCOEX_TEST_TIME_SCALE_<STAGE> (the resize uses it too)

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
    stored_edges: dict[int, int] = field(default_factory=dict)  # gene -> edges of its current 02a file
    selected_edges: dict[int, int] = field(default_factory=dict)  # gene -> |E0| 02b will take from it
    disk: dict[str, StageDisk] = field(default_factory=dict)
    free_bytes: int | None = None
    replaced_bytes: int = 0  # existing outputs the run rewrites: their space comes back

    def table(self) -> str:
        head = ("stage", "jobs/tasks", "genes/task", "memory requested", "estimated peak", "time", "disk")
        rows = [head]
        pending = False
        for s, p in self.stages.items():
            jobs = f"{len(p.tasks)} of {p.n_tasks} tasks" if p.tasks is not None else "1 job"
            peak = format_bytes(p.planned_peak_bytes)
            if p.calibration_factor != 1:
                peak += f" (x{p.calibration_factor:g})"
            req = p.request + (f" [test scale {p.test_scale:g}]" if p.test_scale else "")
            if p.sizing.startswith("bound"):
                req += " *"
                pending = True
            elif p.task_requests and len(set(p.task_requests.values())) > 1:
                req += f" (max; tasks {format_bytes(min(p.task_requests.values()))}..)"
            time_cell = p.time_limit
            if p.task_time_limits and len(set(p.task_time_limits.values())) > 1:
                time_cell += f" (max; tasks {min(p.task_time_limits.values(), key=time_limit_seconds)}..)"
            rows.append((s, jobs, str(p.genes_per_task or "-"), req, peak, time_cell, self._disk_cell(s)))
        if self.disk:
            total = sum(d.expected_bytes for d in self.disk.values())
            bound = sum(d.bound_bytes for d in self.disk.values())
            cell = format_bytes(total) + (f" (bound {format_bytes(bound)})" if bound > total else "")
            rows.append(("total", "", "", "", "", "", cell))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        if pending:
            lines.append("* upper bound for tasks whose 02a edge counts are not known yet (pending 02a): each "
                         "task is resized from its genes' counts when its 02a task ends")
        assumed = [s for s, d in self.disk.items() if "assumed" in d.basis]
        if assumed:
            from dcoex.pipeline.disk import expected_edge_fraction

            alpha = self.options.fdr_alpha
            lines.append(f"disk of {', '.join(assumed)} before 02a has counted the edges: expected at "
                         f"{100 * expected_edge_fraction(alpha):.3g} % of all pairs per gene (alpha {alpha:g}; "
                         "docs/drivers.md), bound = every pair; checked again after 02a")
        if self.free_bytes is not None:
            lines.append(f"disk free on {self.options.out_dir}'s file system: {format_bytes(self.free_bytes)}"
                         + (f", plus {format_bytes(self.replaced_bytes)} of outputs this run replaces"
                            if self.replaced_bytes else "")
                         + (" (check skipped: --ignore-disk-check)" if self.options.ignore_disk_check else ""))
        for s, why in self.why.items():
            lines.append(f"{s}: runs ({why})")
        for s, p in self.stages.items():
            if p.sizing:
                lines.append(f"{s}: memory from {p.sizing}")
        for s, why in self.skipped.items():
            lines.append(f"{s}: skipped ({why})")
        return "\n".join(lines)

    def _disk_cell(self, stage: str) -> str:
        d = self.disk.get(stage)
        if d is None:
            return "-"
        return format_bytes(d.expected_bytes) + (f" (bound {format_bytes(d.bound_bytes)})"
                                                 if d.bound_bytes > d.expected_bytes else "")

    @property
    def disk_needed_bytes(self) -> int:
        return sum(d.expected_bytes for d in self.disk.values())


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
    """``--stages``, in pipeline order; by default every stage but 00 without a TSV and the
    optional ones (07, 08: named in ``--stages`` to run)."""
    if options.stages is None:
        return [s for s in STAGE_ORDER if (s != "00" or options.expr_tsv) and not STAGES[s].optional]
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
    _read_edge_counts(plan)
    _size_stages(plan, scheduler)
    _plan_disk(plan)
    return plan


def _read_edge_counts(plan: RunPlan) -> None:
    """Edge counts of the genes whose 02a outputs are current (kept by this run), from their
    files' attributes: what 02b and 03 will hold for them, and what 02a stored."""
    if not any(s in plan.stages for s in ("02a", *EDGE_SIZED)):
        return
    stale = set(plan.universe) if plan.options.force and "02a" in plan.stages else \
        set(plan.status["02a"].stale_genes) if "02a" in plan.status else set()
    base = STAGES["02a"].output_path(Path(plan.options.out_dir))
    names, n = plan.shape.gene_names, plan.shape.n_genes
    selection = plan.options.edge_selection
    for g in plan.universe:
        if g in stale:
            continue
        path = gene_file_path(base, g, names[g], n)
        stored = read_selected_count(path, "sig_differential")
        if stored is None:
            continue
        plan.stored_edges[g] = stored
        chosen = stored if selection == "sig_differential" else read_selected_count(path, selection)
        if chosen is not None:
            plan.selected_edges[g] = chosen


def _existing_bytes(plan: RunPlan, stage: str, genes: list[int]) -> int:
    """Bytes of the outputs of ``stage`` the run will replace (each new file is renamed over its
    old one, so their space comes back as the run goes)."""
    out = Path(plan.options.out_dir)
    if STAGES[stage].per_gene:
        folder = STAGES[stage].output_path(out)
        names, n = plan.shape.gene_names, plan.shape.n_genes
        paths = [gene_file_path(folder, g, names[g], n) for g in genes]
    else:
        paths = [STAGES[stage].output_path(out)] + ([out / HUBS_TSV] if stage == "03b" else [])
    total = 0
    for path in paths:
        try:
            total += path.stat().st_size
        except OSError:
            pass
    return total


def _plan_disk(plan: RunPlan) -> None:
    """Bytes per stage to write and the check against the free space (InputError when short)."""
    o = plan.options
    for s in plan.stages:
        if STAGES[s].per_gene:
            genes = sorted(set(plan.universe) if o.force else set(plan.status[s].stale_genes)) \
                if s in plan.status else plan.universe
            counts = plan.stored_edges if s == "02a" else plan.selected_edges
        else:
            genes, counts = plan.universe, {}
        plan.disk[s] = stage_disk(s, plan.shape, o.params, genes=genes, counts=counts, n_rows=len(plan.universe))
        plan.replaced_bytes += _existing_bytes(plan, s, genes)
    if not plan.disk:
        return
    plan.free_bytes = free_bytes(o.out_dir)
    if o.ignore_disk_check:
        return
    refusal = disk_refusal(plan.disk_needed_bytes, plan.free_bytes, path=o.out_dir,
                           bound_bytes=sum(d.bound_bytes for d in plan.disk.values()), replaced_bytes=plan.replaced_bytes)
    if refusal:
        raise InputError(refusal)


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
        elif status.current and not any(a in plan.stages for a in STAGES[s].runs_after):
            plan.skipped[s] = "current: every output records the wanted provenance"
            continue
        elif status.current:
            plan.why[s] = "stage " + ", ".join(a for a in STAGES[s].runs_after if a in plan.stages) + " runs"
        else:
            parts = STAGES[s].parts
            plan.why[s] = status.why(len(parts(o.params)) if parts is not None else len(plan.universe))
        if STAGES[s].per_gene:
            stale = set(plan.universe) if o.force else set(status.stale_genes)
            chain[s] = sorted(t for t, genes in plan.task_genes.items() if stale & set(genes))
        plan.stages[s] = None  # type: ignore[assignment]  # sized later
        if STAGES[s].parts is not None:  # array over its own parts: task = part + 1
            units = range(len(STAGES[s].parts(o.params))) if o.force else sorted(status.stale_genes)
            plan.stages[s] = [u + 1 for u in units]  # type: ignore[assignment]
    union = sorted(set().union(*chain.values())) if chain else []
    for s in chain:
        plan.stages[s] = union  # type: ignore[assignment]  # sized later


def _size_stages(plan: RunPlan, scheduler: Scheduler) -> None:
    o = plan.options
    params = o.stage_params()
    params["genes_per_task"] = plan.genes_per_task
    params["gene_list_file"] = (Path(o.out_dir) / ".dcoex" / "gene_list.txt") if o.gene_subset else None
    params["force"] = o.force
    for s, tasks in list(plan.stages.items()):
        spec = STAGES[s]
        factor = plan.factors.get(s, 1.0)

        def sized(n_edges: int | None, stage: str = s, factor: float = factor) -> Request:
            return request_for(stage, plan.shape, o.params, scheduler, factor=factor, safety=o.mem_safety,
                               slots=o.slots, n_edges=n_edges)

        req = sized(None)
        task_requests: dict[int, int] = {}
        task_raw: dict[int, int] = {}
        timed: dict[int, TimeRequest] = {}
        bound = o.times.get(s, o.default_time)
        time_scale = time_scale_knob(s) if s in EDGE_SIZED else None
        time_limit = bound
        sizing = ""
        if s in EDGE_SIZED:
            known = {}
            for t in tasks or []:
                counts = [plan.selected_edges.get(g) for g in plan.task_genes[t]]
                if counts and None not in counts:
                    edges = [c for c in counts if c is not None]
                    known[t] = sized(max(edges))
                    timed[t] = time_for(s, o.params, edges, shape=plan.shape, bound=bound,
                                        scale=time_scale)
            task_requests = {t: r.requested_bytes for t, r in known.items()}
            task_raw = {t: r.raw.total_bytes for t, r in known.items()}
            unknown = len(tasks or []) - len(known)
            # the array asks for its longest task; SLURM lowers the others. Tasks pending 02a: SLURM
            # asks for the bound and lowers each task once its count is known (a user cannot raise a
            # limit); SGE asks for the time of the planning bound of edges (moving a task to an
            # array of its own for a shorter limit is not worth it; a longer one moves it)
            limits = [r.time_limit for r in timed.values()]
            if unknown:
                limits.append(bound if scheduler.name != "sge" else time_for(
                    s, o.params, [int(req.raw.params["n_edges"])] * plan.genes_per_task, shape=plan.shape,
                    bound=bound, scale=time_scale).time_limit)
            time_limit = max(limits, key=time_limit_seconds) if limits else bound
            # the job's own request covers its largest task (SGE asks once per array)
            candidates = list(known.values()) + ([req] if unknown else [])
            req = max(candidates, key=lambda r: r.requested_bytes) if candidates else req
            sizing = ("02a edge counts" if not unknown else
                      f"bound: {min(plan.shape.n_genes * (plan.shape.n_genes - 1) // 2, int(req.raw.params['n_edges']))}"
                      " edges per gene, pending 02a"
                      + (f" ({len(known)} tasks from 02a edge counts)" if known else ""))
        scale = os.environ.get(f"{TEST_SCALE_ENV}{s.upper()}")
        test_scale = None
        if scale:
            try:
                test_scale = float(scale)
            except ValueError:
                raise InputError(f"{TEST_SCALE_ENV}{s.upper()}={scale!r}: not a number") from None
        if spec.parts is not None:
            n_tasks = len(spec.parts(o.params))
        else:
            n_tasks = len(plan.task_genes) if spec.per_gene else 1
        plan.stages[s] = StagePlan(
            stage=s, per_gene=spec.per_gene, genes_per_task=plan.genes_per_task if spec.per_gene else None,
            n_tasks=n_tasks, tasks=tasks if is_array(s) else None,
            slots=o.slots, time_limit=time_limit, raw_estimate=req.raw,
            minimum_estimate=req.minimum, calibration_factor=factor, requested_bytes=req.requested_bytes,
            request=scheduler.request_string(req.requested_bytes, o.slots),
            argv=stage_argv(s, Path(o.out_dir), plan.expr_h5, params),
            test_scale=test_scale, task_requests=task_requests, task_raw_estimates=task_raw, sizing=sizing,
            time_limit_bound=bound, test_time_scale=time_scale,
            task_time_limits={t: r.time_limit for t, r in timed.items()},
            task_seconds={t: r.seconds for t, r in timed.items()},
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
    return scaled_request(plan.requested_bytes, plan.test_scale, plan.slots)


def print_plan(plan: RunPlan, scheduler: Scheduler, out=sys.stdout) -> None:
    o = plan.options
    print(f"dcoex pipeline plan ({scheduler.name}): {plan.shape.n_genes} genes x {plan.shape.n_samples} samples, "
          f"{len(plan.universe)} reference genes, {plan.genes_per_task} per task, memory safety {o.mem_safety:g}"
          + (f", calibration {plan.calibration_file}" if plan.calibration_file else ""), file=out)
    print(plan.table(), file=out)
