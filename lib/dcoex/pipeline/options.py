"""The drivers' command line (identical for SLURM and SGE), parsed with one-line errors."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcoex.cli import parse_positive_int
from dcoex.pipeline.stages import STAGE_ORDER, STAGES
from dcoex.stages.contract import Param
from hpc.errors import InputError
from hpc.schedulers import DEFAULT_SGE_GPU_RESOURCE, DEFAULT_SLURM_GRES
from memfit.allocation import SAFETY_SCHEDULER

_TIME = re.compile(r"^\d+:[0-5]\d:[0-5]\d$")
#: Defaults of the driver's own options (each written once; the help text is built from them).
DEFAULT_GENES_PER_TASK = "auto"
DEFAULT_MEM_SAFETY = SAFETY_SCHEDULER
DEFAULT_MAX_RETRIES = 2
DEFAULT_SLOTS = 1
DEFAULT_TIME = "24:00:00"

USAGE_TEMPLATE = """run_bootstrap_pipeline.sh (--expr-tsv F | --expr-h5 F) --out-dir D [options]

Plan and submit the dcoex pipeline {chain} as jobs (02a, 02b, 03: array jobs); the
optional stages ({optional}) run when named in --stages (07, the permutation null, after 01;
08, its p-values, after 03b and 07).

input/output:
  --expr-tsv F            genes x samples TSV (stage 00 converts it to OUT_DIR/expression.h5)
  --expr-h5 F             an existing expression store (stage 00 is skipped)
  --out-dir D             output folder (created)
{science}work split and scheduling:
  --genes-per-task N|auto reference genes per array task ({genes_per_task}: <= 500 tasks, within the array limit)
  --gene-subset FILE      reference genes to process, one a line: a gene name, or index:N (0-based)
  --stages LIST           comma-separated subset of {stage_list} (default: all that are needed
                          but the optional ones)
  --force                 recompute outputs even when they are current
  --local                 run every task here, in order, without a scheduler (same outputs)
  --dry-run               print the plan and every submission command; submit nothing
  --mem-safety X          stages plan for X x their limit, so requests are estimate / X ({mem_safety})
  --ignore-disk-check     submit even when the outputs' expected size exceeds the free space of
                          OUT_DIR's file system (the plan shows both)
  --max-retries N         resubmissions of a task killed for memory (1.5x memory) or time (2x time) ({max_retries})
  --calibration FILE      memfit calibration (default: OUT_DIR/memfit_calibration.json if present)
  --queue/--partition Q   queue (SGE) or partition (SLURM)
  --account/--project A   account (SLURM) or project (SGE)
  --slots N               CPU slots per task; sets OMP/OPENBLAS/MKL threads ({slots})
  --gres G                with --device gpu: the GPU each 02a/02b/07 task asks SLURM for
                          (--gres={gres})
  --gpu-resource R        with --device gpu: the GPU each 02a/02b/07 task asks SGE for (-l {gpu_resource})
  --time-<stage> HH:MM:SS time limit of a stage, e.g. --time-02a 02:00:00 ({time}); for 02b and 03
                          the upper bound of limits sized from 02a's edge counts
  -h, --help              this help

SLURM requests are at least 256 MiB; DCOEX_MIN_REQUEST (e.g. 128M, 0) changes that floor.

Testing knob: DCOEX_TEST_MEM_SCALE_<STAGE>=F (e.g. DCOEX_TEST_MEM_SCALE_02B=0.05) scales the
first attempt's memory request of that stage by F, so OOM recovery can be exercised;
DCOEX_TEST_ESTIMATE_SCALE_<STAGE>=F scales the stage's planned raw estimate (an estimator off
by 1/F), so memory-review calibration can be exercised."""


def driver_params() -> tuple[Param, ...]:
    """The science parameters the driver offers: every stage's ``driver`` parameters, in stage
    order, each once (a name shared by stages is one declaration)."""
    seen: dict[str, Param] = {}
    for stage in STAGE_ORDER:
        for p in STAGES[stage].params:
            if not p.driver:
                continue
            if p.name in seen and seen[p.name] is not p:
                raise AssertionError(f"parameter {p.name} is declared twice with different meanings")
            seen[p.name] = p
    return tuple(seen.values())


def _science_help() -> str:
    lines = ["science (passed to the stages that take them; defaults from the stage contracts):"]
    for p in driver_params():
        left = f"  {p.flag}" if p.switch else f"  {p.flag} {p.metavar}"
        default = "" if p.switch else f" ({p.default})"
        lines.append(f"{left:<26}{p.help}{default}")
    return "\n".join(lines) + "\n"


USAGE = USAGE_TEMPLATE.format(science=_science_help(), chain=" -> ".join(s for s in STAGE_ORDER if not STAGES[s].optional),
                              stage_list=",".join(STAGE_ORDER),
                              optional=", ".join(s for s in STAGE_ORDER if STAGES[s].optional), genes_per_task=DEFAULT_GENES_PER_TASK,
                              mem_safety=DEFAULT_MEM_SAFETY, max_retries=DEFAULT_MAX_RETRIES, slots=DEFAULT_SLOTS,
                              time=DEFAULT_TIME, gres=DEFAULT_SLURM_GRES, gpu_resource=DEFAULT_SGE_GPU_RESOURCE)


@dataclass
class Options:
    scheduler: str
    out_dir: str
    expr_tsv: str | None = None
    expr_h5: str | None = None
    params: dict[str, Any] = field(default_factory=lambda: {p.name: p.default for p in driver_params()})
    genes_per_task: int | str = DEFAULT_GENES_PER_TASK
    gene_subset: str | None = None
    stages: list[str] | None = None
    local: bool = False
    dry_run: bool = False
    force: bool = False
    ignore_disk_check: bool = False
    mem_safety: float = DEFAULT_MEM_SAFETY
    max_retries: int = DEFAULT_MAX_RETRIES
    calibration: str | None = None
    queue: str | None = None
    account: str | None = None
    slots: int = DEFAULT_SLOTS
    times: dict[str, str] = field(default_factory=dict)
    default_time: str = DEFAULT_TIME
    gres: str = DEFAULT_SLURM_GRES
    gpu_resource: str = DEFAULT_SGE_GPU_RESOURCE

    def gpu_request(self, stage: str) -> str | None:
        """What a task of ``stage`` asks the scheduler for besides CPUs and memory: one GPU
        (``--gres`` on SLURM, ``-l`` on SGE) for the stages taking --device when it is gpu."""
        if self.params.get("device") != "gpu" or not any(p.name == "device" for p in STAGES[stage].params):
            return None
        return self.gpu_resource if self.scheduler == "sge" else self.gres

    def __getattr__(self, name: str) -> Any:
        """Science parameters read as attributes (``options.fdr_alpha``)."""
        params = self.__dict__.get("params", {})
        if name in params:
            return params[name]
        raise AttributeError(name)

    def stage_params(self) -> dict:
        """Parameters passed on to the stages (and recorded in the manifest)."""
        return {
            "expr_tsv": str(Path(self.expr_tsv).resolve()) if self.expr_tsv else None,
            "expr_h5": str(Path(self.expr_h5).resolve()) if self.expr_h5 else None,
            **self.params,
            "genes_per_task": self.genes_per_task, "slots": self.slots,
            "gene_subset": str(Path(self.gene_subset).resolve()) if self.gene_subset else None,
        }


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (through InputError)
        raise InputError(message)


def _fraction(name: str, text: str, low_open: float = 0.0, high: float = 1.0) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{name} {text!r}: expected a number") from None
    if not low_open < value <= high:
        raise InputError(f"{name} must be in ({low_open:g}, {high:g}], got {value:g}")
    return value


def parse_args(argv: list[str], scheduler: str) -> Options | None:
    """Options from the command line; None when --help was printed."""
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return None
    times: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):  # --time-<stage> HH:MM:SS (one flag per stage)
        arg = argv[i]
        match = re.fullmatch(r"--time-([0-9a-z]+)(?:=(.*))?", arg)
        if match:
            stage = match.group(1)
            if stage not in STAGE_ORDER:
                raise InputError(f"{arg}: unknown stage {stage!r}; stages are {', '.join(STAGE_ORDER)}")
            value = match.group(2)
            if value is None:
                if i + 1 >= len(argv):
                    raise InputError(f"{arg} needs a value HH:MM:SS")
                value = argv[i + 1]
                i += 1
            if not _TIME.match(value):
                raise InputError(f"{arg} {value!r}: expected HH:MM:SS")
            times[stage] = value
        else:
            rest.append(arg)
        i += 1
    p = _Parser(prog="run_bootstrap_pipeline.sh", add_help=False, allow_abbrev=False)
    p.add_argument("--expr-tsv")
    p.add_argument("--expr-h5")
    p.add_argument("--out-dir")
    for param in driver_params():
        if param.switch:
            p.add_argument(param.flag, dest=param.name, action="store_true")
        else:
            p.add_argument(param.flag, dest=param.name, default=None)
    p.add_argument("--genes-per-task", default=DEFAULT_GENES_PER_TASK)
    p.add_argument("--gene-subset")
    p.add_argument("--stages")
    p.add_argument("--local", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--force", action="store_true")
    p.add_argument("--ignore-disk-check", action="store_true")
    p.add_argument("--mem-safety", default=str(DEFAULT_MEM_SAFETY))
    p.add_argument("--max-retries", default=str(DEFAULT_MAX_RETRIES))
    p.add_argument("--calibration")
    p.add_argument("--queue", "--partition", dest="queue")
    p.add_argument("--account", "--project", dest="account")
    p.add_argument("--slots", default=str(DEFAULT_SLOTS))
    p.add_argument("--gres", default=DEFAULT_SLURM_GRES)
    p.add_argument("--gpu-resource", default=DEFAULT_SGE_GPU_RESOURCE)
    ns, unknown = p.parse_known_args(rest)
    if unknown:
        raise InputError(f"unknown option {unknown[0]!r} (see --help)")
    if bool(ns.expr_tsv) == bool(ns.expr_h5):
        raise InputError("give exactly one of --expr-tsv and --expr-h5")
    if not ns.out_dir:
        raise InputError("--out-dir is required")
    for flag, path in (("--expr-tsv", ns.expr_tsv), ("--expr-h5", ns.expr_h5), ("--gene-subset", ns.gene_subset),
                       ("--calibration", ns.calibration)):
        if path and not os.path.isfile(path):
            raise InputError(f"{flag} {path}: no such file")
    stages = None
    if ns.stages:
        stages = [s.strip() for s in ns.stages.split(",") if s.strip()]
        bad = [s for s in stages if s not in STAGE_ORDER]
        if bad or not stages:
            raise InputError(f"--stages {ns.stages!r}: unknown stage(s) {', '.join(bad)}; stages are {','.join(STAGE_ORDER)}")
    gpt: int | str = "auto" if ns.genes_per_task == "auto" else parse_positive_int("--genes-per-task", ns.genes_per_task)
    params = {param.name: param.value(getattr(ns, param.name)) for param in driver_params()}
    if params["low_frac"] + params["high_frac"] > 1:
        raise InputError("--low-frac + --high-frac > 1: the groups would overlap")
    if params["device"] == "auto":
        raise InputError("--device auto is for a stage run by hand: the driver asks the scheduler for a GPU only "
                         "with --device gpu (or computes on CPUs with cpu)")
    for flag, value in (("--gres", ns.gres), ("--gpu-resource", ns.gpu_resource)):
        if not value or any(ch.isspace() for ch in value):
            raise InputError(f"{flag} {value!r}: expected the scheduler's GPU request, e.g. "
                             f"{DEFAULT_SLURM_GRES if flag == '--gres' else DEFAULT_SGE_GPU_RESOURCE}")
    if params["device"] == "gpu" and ns.local and not ns.dry_run:
        from hpc.device import gpu_available

        if not gpu_available():
            raise InputError("--device gpu --local: torch sees no CUDA GPU on this machine (use --device cpu)")
    try:
        max_retries = int(ns.max_retries)
    except ValueError:
        raise InputError("--max-retries must be a whole number") from None
    if max_retries < 0:
        raise InputError(f"--max-retries must be >= 0, got {max_retries}")
    return Options(
        scheduler="local" if ns.local else scheduler, out_dir=str(Path(ns.out_dir).resolve()),
        expr_tsv=ns.expr_tsv, expr_h5=ns.expr_h5, params=params, genes_per_task=gpt, gene_subset=ns.gene_subset, stages=stages,
        local=ns.local, dry_run=ns.dry_run, force=ns.force, ignore_disk_check=ns.ignore_disk_check, mem_safety=_fraction("--mem-safety", ns.mem_safety),
        max_retries=max_retries, calibration=ns.calibration, queue=ns.queue, account=ns.account,
        slots=parse_positive_int("--slots", ns.slots), times=times, gres=ns.gres, gpu_resource=ns.gpu_resource,
    )
