"""Planning arithmetic, calibration, task split, resume selection and the finaliser's decisions,
with a recording fake scheduler (no cluster needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cluster_util import write_dataset
from dcoex.errors import InputError
from dcoex.pipeline import finalise as fin
from dcoex.pipeline.jobs import prepare_out_dir, submit_all
from dcoex.pipeline.manifest import read_manifest
from dcoex.pipeline.options import parse_args
from dcoex.pipeline.plan import first_request, make_plan
from dcoex.pipeline.schedulers import Sge, Slurm, compress_tasks
from dcoex.pipeline.task import status_path, write_json_atomic
from memfit.allocation import VIRTUAL_OVERHEAD_BYTES
from memfit.units import MiB


class Recording:
    """Mixin: submissions and supervision calls are recorded, nothing runs."""

    def __init__(self, limit: int = 1000):
        super().__init__(dry_run=False)
        self.limit = limit
        self.calls: list[tuple] = []
        self.jobs: list = []

    def require(self):
        return None

    def array_limit(self):
        return self.limit

    def max_request_bytes(self):
        return None

    def submit(self, job):
        self.jobs.append(job)
        job_id = str(100 + len(self.jobs))
        self.calls.append(("submit", job_id, job.name))
        return job_id, self.command(job)

    def release(self, job_id, task=None):
        self.calls.append(("release", job_id, task))

    def cancel(self, job_id, task=None):
        self.calls.append(("cancel", job_id, task))

    def repoint_task(self, job_id, task, after_job):
        self.calls.append(("repoint_task", job_id, task, after_job))

    def repoint_job(self, job_id, after_job):
        self.calls.append(("repoint_job", job_id, after_job))

    def killed_for_memory(self, job_id, task, log_text):
        return "exceeded memory limit" in log_text


class FakeSlurm(Recording, Slurm):
    pass


class FakeSge(Recording, Sge):
    pass


@pytest.fixture(scope="module")
def tsv(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("plan") / "expr.tsv", n_genes=40, n_samples=60)


def options(tsv, out, *extra, scheduler="slurm"):
    return parse_args(["--expr-tsv", str(tsv), "--out-dir", str(out), *map(str, extra)], scheduler)


def test_requests_are_estimate_times_calibration_over_safety(tmp_path, tsv):
    out = tmp_path / "run"
    out.mkdir()
    (out / "memfit_calibration.json").write_text(json.dumps(
        {"calibration_version": 1, "stages": {"02a": {"factor": 2.0, "n": 4}, "03": {"factor": 0.5, "n": 4}}}))
    slurm = make_plan(options(tsv, out, "--mem-safety", "0.8"), FakeSlurm())
    sge = make_plan(options(tsv, out, "--mem-safety", "0.8", "--slots", "3", scheduler="sge"), FakeSge())
    for stage, p in slurm.stages.items():
        factor = {"02a": 2.0, "03": 0.5}.get(stage, 1.0)
        assert p.calibration_factor == factor
        peak = int(p.raw_estimate.total_bytes * factor)
        assert p.estimate.total_bytes == pytest.approx(peak, abs=len(p.raw_estimate.components))
        assert p.requested_bytes == math.ceil(peak / 0.8 / MiB) * MiB
        assert p.request == f"--mem={p.requested_bytes // MiB}M"
        q = sge.stages[stage]  # (its estimate may differ: some stages' memory depends on the slots)
        peak = int(q.raw_estimate.total_bytes * factor)
        per_slot = math.ceil((peak + VIRTUAL_OVERHEAD_BYTES) / 0.8 / 3 / MiB)
        assert q.request == f"h_vmem={per_slot}M"
        assert q.requested_bytes == per_slot * 3 * MiB
    assert slurm.calibration_file == str(out / "memfit_calibration.json")


def test_genes_per_task_auto_and_array_limit(tmp_path, tsv):
    plan = make_plan(options(tsv, tmp_path), FakeSlurm(limit=3))
    assert plan.genes_per_task == 14 and sorted(plan.task_genes) == [1, 2, 3]
    assert plan.task_genes[3] == list(range(28, 40))
    with pytest.raises(InputError, match="exceed the scheduler's array limit .3.; use --genes-per-task 14"):
        make_plan(options(tsv, tmp_path, "--genes-per-task", "5"), FakeSlurm(limit=3))
    plan = make_plan(options(tsv, tmp_path, "--genes-per-task", "5"), FakeSlurm())
    assert plan.stages["02a"].tasks == list(range(1, 9)) and plan.stages["02a"].n_tasks == 8


def test_gene_subset_is_the_task_universe(tmp_path, tsv):
    subset = tmp_path / "subset.txt"
    subset.write_text("G05\n3\nG39\nG05\n")
    plan = make_plan(options(tsv, tmp_path / "run", "--gene-subset", subset, "--genes-per-task", "2"), FakeSlurm())
    assert plan.universe == [3, 5, 39]
    assert plan.task_genes == {1: [3, 5], 2: [39]}
    argv = plan.stages["02a"].argv
    assert argv[argv.index("--gene-list") + 1] == str(tmp_path / "run" / ".dcoex" / "gene_list.txt")


def test_test_knob_scales_only_the_first_request(tmp_path, tsv, monkeypatch):
    monkeypatch.setenv("DCOEX_TEST_MEM_SCALE_02B", "0.25")
    plan = make_plan(options(tsv, tmp_path, "--slots", "2"), FakeSlurm())
    p = plan.stages["02b"]
    assert p.test_scale == 0.25
    assert first_request(p) == math.ceil(p.requested_bytes * 0.25 / (2 * MiB)) * 2 * MiB
    assert first_request(plan.stages["02a"]) == plan.stages["02a"].requested_bytes


def _submitted(tmp_path, tsv, scheduler, *extra):
    out = tmp_path / "run"
    plan = make_plan(options(tsv, out, "--genes-per-task", "10", *extra,
                             scheduler="sge" if isinstance(scheduler, Sge) else "slurm"), scheduler)
    prepare_out_dir(plan)
    submit_all(plan, scheduler)
    return out, read_manifest(out)


def _status(out, stage, task, attempt, state, code):
    path = status_path(out, stage, task, attempt)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"state": state, "exit": code})


def test_manifest_records_every_submission(tmp_path, tsv):
    sched = FakeSlurm()
    out, m = _submitted(tmp_path, tsv, sched)
    assert m["manifest_version"] == 1 and m["scheduler"] == "slurm"
    assert m["data_shape"] == {"n_genes": 40, "n_samples": 60}
    assert m["parameters"]["n_bootstrap"] == 1000 and m["parameters"]["genes_per_task"] == 10
    a = m["stages"]["02a"]["attempts"][0]
    assert (a["attempt"], a["tasks"], a["task_list"], a["reason"]) == (1, "1-4", [1, 2, 3, 4], "initial")
    assert a["command"][0] == "sbatch" and a["requested_bytes"] == m["stages"]["02a"]["requested_bytes"]
    assert m["stages"]["02a"]["sidecars"] == "base_correlations/memory/02a.genes_*.memory.json"
    assert m["stages"]["01"]["sidecars"] == "bootstrap_indices.h5.memory.json"
    # the first job is released only after everything was submitted
    assert sched.calls[-1] == ("release", m["stages"]["00"]["attempts"][0]["job_id"], None)


def test_finaliser_retries_oom_and_cancels_failed_downstream_slurm(tmp_path, tsv):
    sched = FakeSlurm()
    out, m = _submitted(tmp_path, tsv, sched)
    j02a = m["stages"]["02a"]["attempts"][0]["job_id"]
    j02b = m["stages"]["02b"]["attempts"][0]["job_id"]
    j03 = m["stages"]["03"]["attempts"][0]["job_id"]
    _status(out, "02a", 1, 1, "ok", 0)
    _status(out, "02a", 2, 1, "oom", 3)           # the stage's own out-of-memory exit
    _status(out, "02a", 3, 1, "failed", 2)        # bad input: not retried
    log4 = out / "logs" / f"02a.{j02a}.4.log"     # killed by the scheduler: no status
    log4.write_text("slurmstepd: error: StepId=9.batch exceeded memory limit (5 > 4), being killed\n")
    sched.calls.clear()
    fin.finalise(out, "02a", 1, scheduler=sched)
    m = read_manifest(out)
    attempts = m["stages"]["02a"]["attempts"]
    assert [a["reason"] for a in attempts] == ["initial", "oom-retry"]
    retry = attempts[1]
    assert retry["task_list"] == [2, 4]
    assert retry["requested_bytes"] == max(math.ceil(attempts[0]["requested_bytes"] * 1.5 / MiB) * MiB,
                                           m["stages"]["02a"]["requested_bytes"])
    assert "--array=2,4" in retry["command"]
    assert ("repoint_task", j02b, 2, retry["job_id"]) in sched.calls
    assert ("repoint_task", j02b, 4, retry["job_id"]) in sched.calls
    assert ("cancel", j02b, 3) in sched.calls and ("cancel", j03, 3) in sched.calls
    assert m["stages"]["02b"]["cancelled_tasks"] == [3] and m["stages"]["03"]["cancelled_tasks"] == [3]
    failure = m["stages"]["02a"]["failures"][0]
    assert failure["task"] == 3 and failure["log"] == str(out / "logs" / f"02a.{j02a}.3.log")
    assert "status" not in m  # the other genes go on; the last finaliser sets the status
    # the retry's finaliser: task 2 fails again for memory, task 4 succeeds; max retries (2) not reached
    _status(out, "02a", 2, 2, "oom", 3)
    _status(out, "02a", 4, 2, "ok", 0)
    fin.finalise(out, "02a", 2, scheduler=sched)
    attempts = read_manifest(out)["stages"]["02a"]["attempts"]
    assert attempts[2]["task_list"] == [2]
    assert attempts[2]["requested_bytes"] >= 1.5 * attempts[1]["requested_bytes"] - MiB
    # third failure: the retries are used up, so the task is given up and its successors cancelled
    _status(out, "02a", 2, 3, "oom", 3)
    sched.calls.clear()
    fin.finalise(out, "02a", 3, scheduler=sched)
    m = read_manifest(out)
    assert len(m["stages"]["02a"]["attempts"]) == 3
    assert ("cancel", j02b, 2) in sched.calls and ("cancel", j03, 2) in sched.calls
    # 03b collects what completed; its finaliser reports the run as failed
    _status(out, "03b", None, 1, "ok", 0)
    fin.finalise(out, "03b", 1, scheduler=sched)
    assert read_manifest(out)["status"] == "failed"


def test_failed_single_job_cancels_the_rest(tmp_path, tsv):
    sched = FakeSlurm()
    out, m = _submitted(tmp_path, tsv, sched)
    _status(out, "01", None, 1, "failed", 2)
    sched.calls.clear()
    fin.finalise(out, "01", 1, scheduler=sched)
    m = read_manifest(out)
    assert m["status"] == "failed"
    for stage in ("02a", "02b", "03", "03b"):
        a = m["stages"][stage]["attempts"][0]
        assert ("cancel", a["job_id"], None) in sched.calls and ("cancel", a["finaliser_job_id"], None) in sched.calls
        assert m["stages"][stage]["cancelled"]


def test_finaliser_repoints_whole_stage_dependents(tmp_path, tsv):
    sched = FakeSge()
    out, m = _submitted(tmp_path, tsv, sched)
    j02a = m["stages"]["02a"]["attempts"][0]["job_id"]
    _status(out, "01", None, 1, "oom", 3)
    sched.calls.clear()
    fin.finalise(out, "01", 1, scheduler=sched)
    m = read_manifest(out)
    retry = m["stages"]["01"]["attempts"][1]
    assert retry["task_list"] is None and retry["command"][0] == "qsub"
    assert ("repoint_job", j02a, retry["finaliser_job_id"]) in sched.calls


def test_sge_finaliser_releases_successors_and_uses_task_filter(tmp_path, tsv):
    sched = FakeSge()
    out, m = _submitted(tmp_path, tsv, sched)
    j02b = m["stages"]["02b"]["attempts"][0]["job_id"]
    for t in (1, 2, 4):
        _status(out, "02a", t, 1, "ok", 0)
    _status(out, "02a", 3, 1, "oom", 3)
    sched.calls.clear()
    fin.finalise(out, "02a", 1, scheduler=sched)
    assert {c for c in sched.calls if c[0] == "release"} == {("release", j02b, t) for t in (1, 2, 4)}
    assert not [c for c in sched.calls if c[0] == "repoint_task"]  # SGE: 02b task 3 stays held
    retry = read_manifest(out)["stages"]["02a"]["attempts"][1]
    assert retry["command"][retry["command"].index("-t") + 1] == "3-3"
    script = Path(retry["command"][-1]).read_text()
    assert "--only-tasks 3" in script and "--attempt 2" in script


def test_compress_tasks():
    assert compress_tasks([7, 1, 2, 3, 9, 10]) == "1-3,7,9-10"
    assert compress_tasks([4]) == "4"


def test_sge_array_with_gaps_runs_only_its_tasks(tmp_path, tsv):
    """SGE arrays are ranges: a resume of tasks 1 and 3 submits -t 1-3 and the runner skips 2."""
    sched = FakeSge()
    out = tmp_path / "run"
    plan = make_plan(options(tsv, out, "--genes-per-task", "10", "--stages", "00,01,02a", scheduler="sge"), sched)
    plan.stages["02a"].tasks = [1, 3]
    prepare_out_dir(plan)
    m = submit_all(plan, sched)
    command = m["stages"]["02a"]["attempts"][0]["command"]
    assert command[command.index("-t") + 1] == "1-3"
    assert "--only-tasks 1,3" in Path(command[-1]).read_text()
    assert m["stages"]["02a"]["attempts"][0]["task_list"] == [1, 3]


def test_refused_submission_cancels_what_was_submitted(tmp_path, tsv):
    from dcoex.pipeline.schedulers import SubmitError

    class Refusing(FakeSlurm):
        def submit(self, job):
            if len(self.jobs) == 4:
                raise SubmitError("sbatch of dcoex_02a_run failed: Requested time limit is invalid")
            return super().submit(job)

    sched = Refusing()
    plan = make_plan(options(tsv, tmp_path / "run", "--genes-per-task", "10"), sched)
    prepare_out_dir(plan)
    with pytest.raises(SubmitError, match="time limit"):
        submit_all(plan, sched)
    submitted = [c[1] for c in sched.calls if c[0] == "submit"]
    assert len(submitted) == 4
    assert [c[1] for c in sched.calls if c[0] == "cancel"] == submitted[::-1]
    assert not (tmp_path / "run" / "run_manifest.json").exists()


def test_retry_that_cannot_be_submitted_is_a_failure(tmp_path, tsv):
    from dcoex.pipeline.schedulers import SubmitError

    sched = FakeSlurm()
    out, m = _submitted(tmp_path, tsv, sched)
    j02b = m["stages"]["02b"]["attempts"][0]["job_id"]
    for t in (1, 3, 4):
        _status(out, "02a", t, 1, "ok", 0)
    _status(out, "02a", 2, 1, "oom", 3)

    def refuse(job):
        raise SubmitError("sbatch of dcoex_02a_r1_run failed: QOSMaxSubmitJobPerUserLimit")

    sched.submit = refuse
    fin.finalise(out, "02a", 1, scheduler=sched)
    m = read_manifest(out)
    assert len(m["stages"]["02a"]["attempts"]) == 1
    assert "retry could not be submitted" in m["stages"]["02a"]["failures"][0]["reason"]
    assert ("cancel", j02b, 2) in sched.calls
