"""--local runs every task through the same task runner; reruns resume; the task runner maps exits."""

from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import subprocess
import sys

import pytest
from cluster_util import assert_same_outputs, run_driver, write_dataset

from dcoex.pipeline import task as task_mod
from dcoex.pipeline.options import parse_args
from dcoex.pipeline.plan import make_plan
from dcoex.pipeline.stages import STAGES
from hpc.manifest import write_json_atomic
from hpc.schedulers import get_scheduler
from memfit.allocation import VIRTUAL_OVERHEAD_BYTES
from memfit.units import MiB

ARGS = ["--n-bootstrap", "20", "--genes-per-task", "8", "--seed", "3"]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("local")
    tsv = write_dataset(base / "expr.tsv", n_genes=16, n_samples=40)
    out = base / "run"
    done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", out, *ARGS, "--local"], timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return tsv, out


@pytest.mark.slow
def test_local_run_completes_with_manifest(local_run):
    tsv, out = local_run
    m = json.loads((out / "run_manifest.json").read_text())
    assert m["status"] == "complete" and m["scheduler"] == "local"
    assert list(m["stages"]) == ["00", "01", "02a", "02b", "03", "03b", "04", "05"]
    for stage, folder in (("02a", "base_correlations"), ("02b", "bootstrap_significant"), ("03", "networks")):
        assert len(list((out / folder).glob("*.h5"))) == 16
        assert m["stages"][stage]["n_tasks"] == 2
        assert len(list(out.glob(m["stages"][stage]["sidecars"]))) == 2
    assert (out / "rewiring_hubs.tsv").is_file()


@pytest.mark.slow
def test_rerun_resumes_only_missing_tasks(local_run, tmp_path):
    tsv, out = local_run
    done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", out, *ARGS, "--local"])
    assert done.returncode == 0 and "nothing to do" in done.stdout
    snapshot = tmp_path / "before"

    shutil.copytree(out, snapshot)
    victim = sorted((out / "bootstrap_significant").glob("0009_*.h5"))[0]  # gene 9: task 2
    victim.unlink()
    dry = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", out, *ARGS, "--dry-run"])
    assert dry.returncode == 0, dry.stderr
    cmds = [shlex.split(line) for line in dry.stdout.splitlines() if line.startswith("sbatch ")]
    names = [next(a for a in c if a.startswith("--job-name=")).split("=")[1] for c in cmds[0::2]]
    # exactly the missing output: gene 9's 02b file is recomputed with the same provenance, so
    # its network and the summary (made from the same digests) stay current
    assert names == ["dcoex_02b_run"]
    assert "--array=2" in cmds[0]
    assert "02b: runs (missing (1 of 16 genes))" in dry.stdout
    assert all(f"{s}: skipped (current" in dry.stdout for s in ("03", "03b", "04", "05"))
    done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", out, *ARGS, "--local"])
    assert done.returncode == 0, done.stderr
    assert "running stage 02b task 2/2" in done.stdout and "02b task 1/2" not in done.stdout
    assert_same_outputs(snapshot, out)
    assert (out / ".dcoex" / "history" / "run_manifest.1.json").is_file()


@pytest.mark.slow
def test_rerun_after_the_input_tsv_changed_starts_again(local_run, tmp_path):
    """expression.h5 keeps the SHA-256 of the TSV it came from: the same content (even gzipped)
    resumes, an edited TSV reruns everything from stage 00."""
    import gzip

    tsv, out = local_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    text = tsv.read_text()
    same = tmp_path / "same.tsv.gz"
    same.write_bytes(gzip.compress(text.encode()))
    dry = run_driver("slurm", ["--expr-tsv", same, "--out-dir", run, *ARGS, "--dry-run"])
    assert dry.returncode == 0 and "nothing to do" in dry.stdout, dry.stdout + dry.stderr
    header, first, rest = text.split("\n", 2)
    cells = first.split("\t")
    cells[1] = str(float(cells[1]) + 1.5)
    edited = tmp_path / "edited.tsv"
    edited.write_text("\n".join([header, "\t".join(cells), rest]))
    dry = run_driver("slurm", ["--expr-tsv", edited, "--out-dir", run, *ARGS, "--dry-run"])
    assert dry.returncode == 0, dry.stderr
    cmds = [shlex.split(line) for line in dry.stdout.splitlines() if line.startswith("sbatch ")]
    names = [next(a for a in c if a.startswith("--job-name=")).split("=")[1] for c in cmds[0::2]]
    assert names[0] == "dcoex_00_run" and "dcoex_03b_run" in names


@pytest.mark.parametrize("code,state,mapped", [(0, "ok", 0), (3, "oom", 3), (2, "failed", 2), (99, "failed", 1),
                                              (100, "failed", 1)])
def test_task_runner_maps_exit_codes(tmp_path, monkeypatch, code, state, mapped):
    """A stage never exits 99/100 (SGE requeue / error state); 3 is out of memory."""
    write_json_atomic(tmp_path / "run_manifest.json", {"manifest_version": 1,
        "scheduler": "slurm", "stage_order": ["02a"],
        "stages": {"02a": {"stage_command": ["python", "-m", "dcoex.stages.s02a_base_correlations"], "attempts": []}}})
    seen = {}
    monkeypatch.setattr(task_mod, "run_stage", lambda argv: seen.setdefault("argv", argv) and code)
    assert task_mod.main(["--out-dir", str(tmp_path), "--stage", "02a", "--attempt", "2", "--task", "5"]) == mapped
    assert seen["argv"][-2:] == ["--task-id", "5"]
    status = json.loads(task_mod.status_path(tmp_path, "02a", 5, 2).read_text())
    assert status["state"] == state and status["exit"] == mapped


def test_task_runner_skips_tasks_outside_its_attempt(tmp_path, monkeypatch):
    write_json_atomic(tmp_path / "run_manifest.json", {"manifest_version": 1,
        "scheduler": "sge", "stage_order": ["02a"],
        "stages": {"02a": {"stage_command": ["python", "-m", "x"], "attempts": []}}})
    monkeypatch.setattr(task_mod, "run_stage", lambda argv: pytest.fail("must not run"))
    monkeypatch.setenv("SGE_TASK_ID", "4")
    assert task_mod.main(["--out-dir", str(tmp_path), "--stage", "02a", "--only-tasks", "2,7-9"]) == 0
    assert not task_mod.status_path(tmp_path, "02a", 4, 1).exists()


@pytest.mark.slow
def test_stages_rerun_from_existing_upstream_outputs(local_run, tmp_path):
    tsv, out = local_run

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", copy, *ARGS, "--stages", "02b,03,03b", "--force",
                                "--local"])
    assert done.returncode == 0, done.stderr
    assert "running stage 02a" not in done.stdout and "running stage 02b task 1/2" in done.stdout
    assert_same_outputs(out, copy)
    next((copy / "base_correlations").glob("0002_*.h5")).unlink()
    next((copy / "bootstrap_significant").glob("0002_*.h5")).unlink()
    bad = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", copy, *ARGS, "--stages", "02b,03,03b", "--local"])
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "stage 02b needs the outputs of stage 02a" in bad.stderr and "(tasks 1)" in bad.stderr


def _stage_under_limit(command: list[str], scheduler: str, request: int) -> subprocess.CompletedProcess:
    """Run a stage command as a job of ``scheduler`` given ``request`` bytes would: SLURM sets
    SLURM_MEM_PER_NODE (MiB); SGE's h_vmem is the process's RLIMIT_AS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SGE_", "MEMFIT_", "JOB_ID"))}
    env.update(MEMFIT_SAFETY="0.7", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", HDF5_USE_FILE_LOCKING="FALSE")
    preexec = None
    if scheduler == "slurm":
        env["SLURM_MEM_PER_NODE"] = str(request // MiB)
    else:
        env.update(JOB_ID="1", SGE_TASK_ID="1")

        def preexec():
            resource.setrlimit(resource.RLIMIT_AS, (request, request))
    return subprocess.run(command, capture_output=True, text=True, env=env, preexec_fn=preexec, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["slurm", "sge"])
def test_every_stage_fits_the_request_the_driver_plans(local_run, tmp_path, scheduler):
    """Each stage, run under exactly the limit the driver would request for it, accepts it:
    its own estimate (at the batch it chooses) fits safety x request, and the limit it
    detected is the request."""
    tsv, out = local_run
    plan = make_plan(parse_args(["--expr-tsv", str(tsv), "--out-dir", str(out), *ARGS, "--force"], scheduler),
                     get_scheduler(scheduler, dry_run=True))
    assert list(plan.stages) == ["00", "01", "02a", "02b", "03", "03b", "04", "05"]
    copy = tmp_path / "run"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("logs", ".dcoex", "*.memory.json"))
    for stage, p in plan.stages.items():
        # the job's command (as the manifest's stage_command), pointed at the copy
        command = [sys.executable, "-m", STAGES[stage].module,
                   *(arg.replace(str(out), str(copy)) for arg in p.argv)]
        if p.per_gene:
            command += ["--task-id", "1"]
        done = _stage_under_limit(command, scheduler, p.requested_bytes)
        assert done.returncode == 0, f"stage {stage} refused {p.request}:\n{done.stderr[-1500:]}"
        sidecars = (list((copy / STAGES[stage].output / "memory").glob(f"{stage}.genes_*.memory.json"))
                    if p.per_gene else [copy / f"{STAGES[stage].output}.memory.json"])
        assert len(sidecars) == 1, sidecars
        record = json.loads(sidecars[0].read_text())
        allocation, own = record["allocation"], record["estimate"]["total_bytes"]
        assert allocation["limit_bytes"] == p.requested_bytes, (stage, allocation)
        assert own <= allocation["usable_bytes"], (stage, own, allocation)
        # the driver's plan covers the stage's own estimate at its smallest batch
        overhead = VIRTUAL_OVERHEAD_BYTES if scheduler == "sge" else 0
        assert p.minimum_estimate.total_bytes + overhead <= 0.7 * p.requested_bytes
