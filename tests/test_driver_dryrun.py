"""--dry-run prints every submission command; a test parses job names, memory, arrays and dependencies."""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path

import pytest
from cluster_util import run_driver, write_dataset

from dcoex.stages import get_estimator
from memfit.allocation import VIRTUAL_OVERHEAD_BYTES
from memfit.units import MiB

STAGES = ["00", "01", "02a", "02b", "03", "03b", "04", "05"]


@pytest.fixture(scope="module")
def tsv(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("dry") / "expr.tsv", n_genes=40, n_samples=60)


def dry_run(scheduler: str, tsv: Path, out: Path, *extra: str) -> tuple[str, list[list[str]]]:
    done = run_driver(scheduler, ["--expr-tsv", tsv, "--out-dir", out, "--genes-per-task", "10", "--dry-run", *extra])
    assert done.returncode == 0, done.stderr
    commands = [shlex.split(line) for line in done.stdout.splitlines() if line.startswith(("sbatch ", "qsub "))]
    assert not out.exists(), "a dry run writes nothing"
    return done.stdout, commands


def _opt(argv: list[str], name: str) -> str | None:
    """Value of ``--name=value`` or ``-name value``."""
    for i, a in enumerate(argv):
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
        if a == name:
            return argv[i + 1]
    return None


def test_slurm_dry_run_commands(tmp_path, tsv):
    out = tmp_path / "run"
    text, cmds = dry_run("slurm", tsv, out)
    assert len(cmds) == 16  # 8 stages + 8 finalisers
    ids = {f"DRYRUN{i + 1}": c for i, c in enumerate(cmds)}
    stage_cmds, fin_cmds = cmds[0::2], cmds[1::2]
    for stage, c in zip(STAGES, stage_cmds):
        name = _opt(c, "--job-name")
        assert name == f"dcoex_{stage}_run" and " " not in name
        per_gene = stage in ("02a", "02b", "03")
        assert _opt(c, "--array") == ("1-4" if per_gene else None)
        log = _opt(c, "--output")
        assert log == str(out / "logs" / (f"{stage}.%A.%a.log" if per_gene else f"{stage}.%j.1.log"))
        assert re.fullmatch(r"\d+M", _opt(c, "--mem"))
        assert _opt(c, "--cpus-per-task") == "1"
        assert c[-1] == str(out / ".dcoex" / "jobs" / f"{stage}.a1.sh")
    # the first job is held until the manifest lists every job; the rest wait on each other
    assert "--hold" in stage_cmds[0] and not any("--hold" in c for c in cmds[1:])
    dep = {s: _opt(c, "--dependency") for s, c in zip(STAGES, stage_cmds)}
    assert dep == {"00": None, "01": "afterok:DRYRUN2", "02a": "afterok:DRYRUN4", "02b": "aftercorr:DRYRUN5",
                   "03": "aftercorr:DRYRUN7", "03b": "afterok:DRYRUN10", "04": "afterok:DRYRUN12",
                   "05": "afterok:DRYRUN14"}
    for i, (stage, c) in enumerate(zip(STAGES, fin_cmds)):
        assert _opt(c, "--dependency") == f"afterany:DRYRUN{2 * i + 1}"
        assert _opt(c, "--job-name") == f"dcoex_fin{stage}_a1_run"
    assert ids  # every placeholder id refers to an earlier command


def test_sge_dry_run_commands(tmp_path, tsv):
    out = tmp_path / "run"
    text, cmds = dry_run("sge", tsv, out, "--slots", "2", "--queue", "all.q", "--time-02b", "01:30:00")
    stage_cmds, fin_cmds = cmds[0::2], cmds[1::2]
    for stage, c in zip(STAGES, stage_cmds):
        assert _opt(c, "-N") == f"dcoex_{stage}_run"
        per_gene = stage in ("02a", "02b", "03")
        assert _opt(c, "-t") == ("1-4" if per_gene else None)
        assert _opt(c, "-o") == str(out / "logs" / (f"{stage}.$JOB_ID.$TASK_ID.log" if per_gene
                                                     else f"{stage}.$JOB_ID.1.log"))
        assert _opt(c, "-pe") == "smp" and c[c.index("-pe") + 2] == "2"
        assert _opt(c, "-q") == "all.q"
        assert "-w" in c and _opt(c, "-w") == "e"  # unschedulable requests are refused at submission
        resources = [c[i + 1] for i, a in enumerate(c) if a == "-l"]
        assert any(re.fullmatch(r"h_vmem=\d+M", r) for r in resources)
        # 02b and 03 pending 02a ask for the modelled time of the planning bound of edges (here the
        # 15-minute floor), within --time-02b / the default; the other stages for their limit as given
        limit = "00:15:00" if stage in ("02b", "03") else "24:00:00"
        assert f"h_rt={limit}" in resources
    holds = {s: (_opt(c, "-hold_jid"), _opt(c, "-hold_jid_ad"), "-h" in c) for s, c in zip(STAGES, stage_cmds)}
    assert holds == {"00": (None, None, True), "01": ("DRYRUN2", None, False), "02a": ("DRYRUN4", None, False),
                     "02b": (None, "DRYRUN5", True), "03": (None, "DRYRUN7", True), "03b": ("DRYRUN10", None, False),
                     "04": ("DRYRUN12", None, False), "05": ("DRYRUN14", None, False)}
    for i, c in enumerate(fin_cmds):
        assert _opt(c, "-hold_jid") == f"DRYRUN{2 * i + 1}"


@pytest.mark.parametrize("scheduler", ["slurm", "sge"])
def test_dry_run_memory_follows_estimators(tmp_path, tsv, scheduler):
    """--mem / h_vmem = estimator peak / safety (SGE: + virtual overhead, per slot; SLURM: at least 256 MiB)."""
    _, cmds = dry_run(scheduler, tsv, tmp_path / "run", "--mem-safety", "0.5", "--slots", "2")
    c = cmds[2 * STAGES.index("02a")]
    peak = get_estimator("02a")(n_genes=40, n_samples=60, k_low=12, k_high=12, fdr_alpha=0.05).total_bytes
    if scheduler == "slurm":
        assert _opt(c, "--mem") == f"{max(math.ceil(peak / 0.5 / MiB), 256)}M"  # 256 MiB: the SLURM floor
    else:
        resources = [c[i + 1] for i, a in enumerate(c) if a == "-l"]
        per_slot = math.ceil((peak + VIRTUAL_OVERHEAD_BYTES) / 0.5 / 2 / MiB)
        assert f"h_vmem={per_slot}M" in resources


def test_dry_run_plan_table_and_stage_selection(tmp_path, tsv):
    text, cmds = dry_run("slurm", tsv, tmp_path / "run", "--stages", "00,01")
    assert "stage  jobs/tasks" in text and "\n02a" not in text
    assert [_opt(c, "--job-name") for c in cmds[0::2]] == ["dcoex_00_run", "dcoex_01_run"]
    # later stages alone need their inputs on disk
    done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", tmp_path / "run", "--stages", "02b,03,03b",
                                "--dry-run"])
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "stage 02b needs the outputs of stage 02a" in done.stderr


@pytest.mark.parametrize("scheduler", ["slurm", "sge"])
def test_device_gpu_requests_a_gpu_for_the_device_stages(tmp_path, tsv, scheduler):
    """--device gpu: 02a, 02b and 07 ask for one GPU (SLURM --gres, SGE -l; the site's names by
    --gres / --gpu-resource), their commands carry --device gpu and their memory holds torch and
    the CUDA context (dcoex.backend's figures, as the stage adds them); the other stages are as on CPUs."""
    from dcoex.backend import CUDA_CONTEXT_HOST_BYTES, TORCH_IMPORT_BYTES
    from dcoex.pipeline.options import parse_args
    from dcoex.pipeline.plan import make_plan
    from hpc.schedulers import get_scheduler

    stages = ["00", "01", "02a", "02b", "03", "07"]
    site = ("--gres", "gpu:a100:1") if scheduler == "slurm" else ("--gpu-resource", "cuda=1")
    args = ["--stages", ",".join(stages), "--device", "gpu"]
    _, cmds = dry_run(scheduler, tsv, tmp_path / "run", *args, *site)
    for stage, c in zip(stages, cmds[0::2]):
        wants = stage in ("02a", "02b", "07")
        if scheduler == "slurm":
            assert (_opt(c, "--gres") == "gpu:a100:1") == wants, (stage, c)
        else:
            assert ("cuda=1" in c) == wants, (stage, c)
    assert not any(_opt(c, "--gres") or "cuda=1" in c for c in cmds[1::2])  # finalisers: CPU only
    argv = ["--expr-tsv", str(tsv), "--out-dir", str(tmp_path / "plan"), "--stages", ",".join(stages)]
    on_cpu = make_plan(parse_args(argv, scheduler), get_scheduler(scheduler, dry_run=True))
    on_gpu = make_plan(parse_args([*argv, "--device", "gpu"], scheduler), get_scheduler(scheduler, dry_run=True))
    for stage in stages:
        cpu, gpu = on_cpu.stages[stage], on_gpu.stages[stage]
        if stage in ("02a", "02b", "07"):
            assert gpu.argv[gpu.argv.index("--device") + 1] == "gpu"
            extra = gpu.raw_estimate.total_bytes - cpu.raw_estimate.total_bytes
            # 02b's core products come back from the device into a host buffer (the host kernel's
            # per-thread row blocks otherwise): its work term grows on a GPU, no other term does
            products = gpu.raw_estimate.components.get("work", 0) - cpu.raw_estimate.components.get("work", 0)
            assert (products > 0) == (stage == "02b")
            assert gpu.raw_estimate.components["backend"] == TORCH_IMPORT_BYTES + CUDA_CONTEXT_HOST_BYTES
            assert extra == gpu.raw_estimate.components["backend"] + products
            assert gpu.requested_bytes > cpu.requested_bytes
        else:
            assert "--device" not in gpu.argv and gpu.requested_bytes == cpu.requested_bytes


def test_device_auto_and_a_missing_gpu_are_refused(tmp_path, tsv):
    from hpc.device import gpu_available

    done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", tmp_path / "a", "--dry-run", "--device", "auto"])
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "--device auto is for a stage run by hand" in done.stderr
    for bad in (["--gres", ""], ["--gpu-resource", "gpu = 1"]):
        done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", tmp_path / "c", "--dry-run", "--device", "gpu", *bad])
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and bad[0] in done.stderr
    if not gpu_available():
        done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", tmp_path / "b", "--local", "--device", "gpu"])
        assert done.returncode == 2 and "torch sees no CUDA GPU" in done.stderr and not (tmp_path / "b").exists()
