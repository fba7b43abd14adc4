"""The drivers' command line (identical for SLURM and SGE), parsed with one-line errors."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from dcoex.cli import parse_positive_int
from dcoex.pipeline.stages import STAGE_ORDER
from hpc.errors import InputError

_TIME = re.compile(r"^\d+:[0-5]\d:[0-5]\d$")
EDGE_SELECTIONS = ("sig_differential", "sig_edges")

USAGE = """run_bootstrap_pipeline.sh (--expr-tsv F | --expr-h5 F) --out-dir D [options]

Plan and submit the dcoex pipeline 00 -> 01 -> 02a -> 02b -> 03 -> 03b as array jobs.

input/output:
  --expr-tsv F            genes x samples TSV (stage 00 converts it to OUT_DIR/expression.h5)
  --expr-h5 F             an existing expression store (stage 00 is skipped)
  --out-dir D             output folder (created)
science:
  --n-bootstrap N         bootstrap replicates (1000)
  --seed N                random seed (42)
  --low-frac X            fraction of samples in LOW (0.2)
  --high-frac X           fraction of samples in HIGH (0.2)
  --bootstrap-frac X      resample size as a fraction of each group (0.8)
  --fdr-alpha X           BH false discovery rate (0.05)
  --edge-selection S      sig_differential | sig_edges (sig_differential)
  --batch-size N|auto     batch size of the stages that take one (auto)
work split and scheduling:
  --genes-per-task N|auto reference genes per array task (auto: <= 500 tasks, within the array limit)
  --gene-subset FILE      reference genes to process: names or 0-based indices, one per line
  --stages LIST           comma-separated subset of 00,01,02a,02b,03,03b (default: all that are needed)
  --force                 recompute outputs that already exist and validate
  --local                 run every task here, in order, without a scheduler (same outputs)
  --dry-run               print the plan and every submission command; submit nothing
  --mem-safety X          stages plan for X x their limit, so requests are estimate / X (0.7)
  --max-retries N         resubmissions of a task killed for memory, each with 1.5x memory (2)
  --calibration FILE      memfit calibration (default: OUT_DIR/memfit_calibration.json if present)
  --queue/--partition Q   queue (SGE) or partition (SLURM)
  --account/--project A   account (SLURM) or project (SGE)
  --slots N               CPU slots per task; sets OMP/OPENBLAS/MKL threads (1)
  --time-<stage> HH:MM:SS time limit of a stage, e.g. --time-02a 02:00:00 (24:00:00)
  -h, --help              this help

SLURM requests are at least 256 MiB; DCOEX_MIN_REQUEST (e.g. 128M, 0) changes that floor.

Testing knob: DCOEX_TEST_MEM_SCALE_<STAGE>=F (e.g. DCOEX_TEST_MEM_SCALE_02B=0.05) scales the
first attempt's memory request of that stage by F, so OOM recovery can be exercised;
DCOEX_TEST_ESTIMATE_SCALE_<STAGE>=F scales the stage's planned raw estimate (an estimator off
by 1/F), so memory-review calibration can be exercised."""


@dataclass
class Options:
    scheduler: str
    out_dir: str
    expr_tsv: str | None = None
    expr_h5: str | None = None
    n_bootstrap: int = 1000
    batch_size: int | str = "auto"
    seed: int = 42
    low_frac: float = 0.2
    high_frac: float = 0.2
    bootstrap_frac: float = 0.8
    fdr_alpha: float = 0.05
    edge_selection: str = "sig_differential"
    genes_per_task: int | str = "auto"
    gene_subset: str | None = None
    stages: list[str] | None = None
    local: bool = False
    dry_run: bool = False
    force: bool = False
    mem_safety: float = 0.7
    max_retries: int = 2
    calibration: str | None = None
    queue: str | None = None
    account: str | None = None
    slots: int = 1
    times: dict[str, str] = field(default_factory=dict)
    default_time: str = "24:00:00"

    def stage_params(self) -> dict:
        """Parameters passed on to the stages (and recorded in the manifest)."""
        return {
            "expr_tsv": str(Path(self.expr_tsv).resolve()) if self.expr_tsv else None,
            "expr_h5": str(Path(self.expr_h5).resolve()) if self.expr_h5 else None,
            "n_bootstrap": self.n_bootstrap, "batch_size": self.batch_size, "seed": self.seed,
            "low_frac": self.low_frac, "high_frac": self.high_frac, "bootstrap_frac": self.bootstrap_frac,
            "fdr_alpha": self.fdr_alpha, "edge_selection": self.edge_selection,
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
    p.add_argument("--n-bootstrap", default="1000")
    p.add_argument("--batch-size", default="auto")
    p.add_argument("--seed", default="42")
    p.add_argument("--low-frac", default="0.2")
    p.add_argument("--high-frac", default="0.2")
    p.add_argument("--bootstrap-frac", default="0.8")
    p.add_argument("--fdr-alpha", default="0.05")
    p.add_argument("--edge-selection", default="sig_differential")
    p.add_argument("--genes-per-task", default="auto")
    p.add_argument("--gene-subset")
    p.add_argument("--stages")
    p.add_argument("--local", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--force", action="store_true")
    p.add_argument("--mem-safety", default="0.7")
    p.add_argument("--max-retries", default="2")
    p.add_argument("--calibration")
    p.add_argument("--queue", "--partition", dest="queue")
    p.add_argument("--account", "--project", dest="account")
    p.add_argument("--slots", default="1")
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
    if ns.edge_selection not in EDGE_SELECTIONS:
        raise InputError(f"--edge-selection {ns.edge_selection!r}: expected one of {', '.join(EDGE_SELECTIONS)}")
    gpt: int | str = "auto" if ns.genes_per_task == "auto" else parse_positive_int("--genes-per-task", ns.genes_per_task)
    batch: int | str = "auto" if ns.batch_size == "auto" else parse_positive_int("--batch-size", ns.batch_size)
    low = _fraction("--low-frac", ns.low_frac, 0, 0.5)
    high = _fraction("--high-frac", ns.high_frac, 0, 0.5)
    try:
        max_retries = int(ns.max_retries)
        seed = int(ns.seed)
    except ValueError:
        raise InputError("--max-retries and --seed must be whole numbers") from None
    if max_retries < 0:
        raise InputError(f"--max-retries must be >= 0, got {max_retries}")
    return Options(
        scheduler="local" if ns.local else scheduler, out_dir=str(Path(ns.out_dir).resolve()),
        expr_tsv=ns.expr_tsv, expr_h5=ns.expr_h5, n_bootstrap=parse_positive_int("--n-bootstrap", ns.n_bootstrap),
        batch_size=batch, seed=seed, low_frac=low, high_frac=high,
        bootstrap_frac=_fraction("--bootstrap-frac", ns.bootstrap_frac), fdr_alpha=_fraction("--fdr-alpha", ns.fdr_alpha),
        edge_selection=ns.edge_selection, genes_per_task=gpt, gene_subset=ns.gene_subset, stages=stages,
        local=ns.local, dry_run=ns.dry_run, force=ns.force, mem_safety=_fraction("--mem-safety", ns.mem_safety),
        max_retries=max_retries, calibration=ns.calibration, queue=ns.queue, account=ns.account,
        slots=parse_positive_int("--slots", ns.slots), times=times,
    )
