"""Scheduler adaptors: parsing on captured real output (tests/fixtures/), then on the live clusters.

The parsers are pure functions (text -> decision); the fixtures are real output of the
single-node SLURM 22.05 / SGE 8.1.9 test clusters (see the READMEs next to them), except
files named ``*.handwritten.*``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import cluster_util
import pytest
from cluster_util import sge_cluster, slurm_cluster  # noqa: F401 - fixtures

from hpc.schedulers import (
    Sge,
    Slurm,
    SubmitError,
    accounting_record,
    accounting_shows_memory_kill,
    log_shows_memory_kill,
    qhost_max_memory,
    sge_array_limit,
    sinfo_max_memory,
    slurm_array_limit,
    submitted_job_id,
)
from memfit.units import MiB, parse_bytes

FIXTURES = Path(__file__).parent / "fixtures"
ACCOUNTING = FIXTURES / "accounting"
SCHEDULER = FIXTURES / "scheduler"


def fixture(path: Path) -> str:
    return path.read_text()


# --- parsing captured output ---------------------------------------------------------------

@pytest.mark.parametrize("units", ["K", "M", "G", "nounits"])
@pytest.mark.parametrize("job,task,killed", [
    ("4", None, True),    # --mem=200M, grew to 1000 MB: FAILED 0:9, MaxRSS above ReqMem (OverMemoryKill)
    ("3", None, False),   # COMPLETED
    ("6", None, False),   # FAILED 3:0 (a plain exit status)
    ("9", None, False),   # TIMEOUT 0:15: killed, but for time
    ("8", None, False),   # CANCELLED while pending
    ("5", 2, False),      # an array task that completed
    ("4", 1, False),      # no such task: not a memory kill
])
def test_slurm_memory_kill_from_real_sacct(units, job, task, killed):
    text = fixture(ACCOUNTING / f"slurm_22.05_jobs_{'nounits' if units == 'nounits' else 'units' + units}.sacct.txt")
    assert accounting_shows_memory_kill("slurm", text, job, task) is killed


def test_slurm_out_of_memory_state_is_a_memory_kill():
    """State OUT_OF_MEMORY (cgroup clusters; hand-written: the test cluster samples instead)."""
    text = fixture(ACCOUNTING / "slurm_old_suffixes.handwritten.sacct.txt")
    oom_jobs = [line.split("|")[0] for line in text.splitlines() if "|OUT_OF_MEMORY|" in line]
    assert oom_jobs
    job = oom_jobs[0].split(".")[0]
    job, _, task = job.partition("_")
    assert accounting_shows_memory_kill("slurm", text, job, int(task) if task else None)


def test_slurm_record_is_not_final_until_the_request_is_recorded():
    """Right after an OverMemoryKill, sacct shows the job FAILED 0:9 with its request still unset
    (NO_VAL64): not final, and no verdict from it; seconds later the same job is a memory kill."""
    settling = accounting_record("slurm", fixture(ACCOUNTING / "slurm_22.05_oom_settling.sacct.txt"), "1495", None)
    assert settling.state == "FAILED" and settling.requested_bytes is None
    assert not settling.settled and not settling.oom
    settled = accounting_record("slurm", fixture(ACCOUNTING / "slurm_22.05_oom_settled.sacct.txt"), "1495", None)
    assert settled.settled and settled.requested_bytes == 102400 * 1024
    assert settled.oom and settled.max_rss_bytes == 317240 * 1024


@pytest.mark.parametrize("job,task,killed", [
    ("11", None, True),   # h_vmem=800M, 3 processes: killed by execd, failed 37, exit 137, maxvmem 141 %
    ("8", None, False),   # h_rt=0:0:3: also failed 37 / exit 137, but a time kill (maxvmem far below)
    ("4", None, False),   # malloc failed under RLIMIT_AS: exit 1 (the log's MemoryError tells)
    ("7", None, False),   # exit 3 without a status file is not evidence of memory
    ("10", None, False),  # qdel'd while running: failed 100, exit 137
    ("6", 2, False),      # an array task that completed
])
def test_sge_memory_kill_from_real_qacct(job, task, killed):
    text = fixture(ACCOUNTING / "sge_8.1.9_jobs.qacct.txt")
    assert accounting_shows_memory_kill("sge", text, job, task) is killed


def test_memory_kill_from_log_text():
    assert log_shows_memory_kill(
        "slurmstepd-vm: error: StepId=10.batch exceeded memory limit (230694912 > 209715200), being killed")
    assert log_shows_memory_kill("numpy._core._exceptions._ArrayMemoryError: Unable to allocate\nMemoryError")
    assert not log_shows_memory_kill("dcoex task: stage 02a task 3 failed (exit 2)\nbad input")


def test_array_limits_from_real_config():
    # captured `scontrol show config` has MaxArraySize = 10001: task ids up to 10000
    assert slurm_array_limit(fixture(SCHEDULER / "slurm_22.05_scontrol_show_config.txt")) == 10000
    assert sge_array_limit(fixture(SCHEDULER / "sge_8.1.9_qconf_sconf_global.txt")) == 75000
    # settings the scheduler leaves out: its documented defaults; SGE 0 = unlimited
    assert slurm_array_limit("ClusterName = x\n") == 1000
    assert sge_array_limit("max_aj_tasks                 0\n") == 10**9


def test_node_memory_from_real_sinfo_and_qhost():
    sinfo = fixture(SCHEDULER / "slurm_22.05_sinfo_N_m.txt")
    assert sinfo_max_memory(sinfo) == int(sinfo.split()[0]) * MiB
    assert sinfo_max_memory("4000\n64000+\n") == 64000 * MiB
    assert sinfo_max_memory("") is None
    qhost = fixture(SCHEDULER / "sge_8.1.9_qhost.txt")
    memtot = qhost.splitlines()[3].split()[7]  # host row "vm", column MEMTOT, e.g. 23.5G
    assert qhost_max_memory(qhost) == parse_bytes(memtot)
    assert qhost_max_memory("\n".join(qhost.splitlines()[:3])) is None  # only the global row


def test_job_ids_from_real_submission_answers():
    assert submitted_job_id(fixture(SCHEDULER / "slurm_22.05_sbatch_parsable_array.txt"), "sbatch").isdigit()
    sge = fixture(SCHEDULER / "sge_8.1.9_qsub_terse_array.txt")  # "392.1-3:1"
    assert submitted_job_id(sge, "qsub") == sge.split(".")[0]
    assert submitted_job_id("812;cluster2\n", "sbatch") == "812"
    with pytest.raises(SubmitError, match="unexpected answer"):
        submitted_job_id("Unable to run job: error: no suitable queues.", "qsub")


def test_cluster_gate_skips_with_reason_or_fails_under_ci(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster_util, "STATUS_DIR", tmp_path)
    (tmp_path / "slurm.status").write_text("cannot start test clusters: not root\n")
    monkeypatch.setattr(cluster_util.shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not root"):
        cluster_util.require_cluster("slurm")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        cluster_util.require_cluster("slurm")


# --- the live clusters ----------------------------------------------------------------------

def _command(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout


@pytest.mark.cluster
@pytest.mark.usefixtures("slurm_cluster")
def test_slurm_limits_are_read_live():
    config = {k.strip(): v.strip() for k, _, v in
              (line.partition("=") for line in _command(["scontrol", "show", "config"]).splitlines())}
    assert Slurm().array_limit() == int(config["MaxArraySize"]) - 1
    nodes = _command(["scontrol", "show", "node", "-o"])
    real = max(int(part.split("=")[1]) for part in nodes.split() if part.startswith("RealMemory="))
    assert Slurm().max_request_bytes() == real * MiB


@pytest.mark.cluster
@pytest.mark.usefixtures("sge_cluster")
def test_sge_limits_are_read_live():
    conf = dict(line.split(None, 1) for line in _command(["qconf", "-sconf", "global"]).splitlines()
                if len(line.split(None, 1)) == 2)
    expected = int(conf["max_aj_tasks"])
    assert Sge().array_limit() == (expected if expected > 0 else 10**9)
    # the single execution host is this machine: qhost's MEMTOT (rounded to 3 digits) is its MemTotal
    mem_total = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal:"))
    assert Sge().max_request_bytes() == pytest.approx(mem_total, rel=0.01)


def _wait(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"{what} within {timeout:.0f} s")


GROW = f"{sys.executable} -c 'import time; b = bytearray(300 << 20); time.sleep(4)'"


@pytest.mark.cluster
@pytest.mark.usefixtures("slurm_cluster")
def test_slurm_memory_kill_is_recognised_live(tmp_path):
    """A job that outgrows --mem is killed by SLURM; one that exits 3 is not a memory kill."""
    def submit(mem: str, script: str) -> str:
        return _command(["sbatch", "--parsable", "--job-name=dcoex_test_oomprobe", f"--mem={mem}",
                         f"--output={tmp_path}/%j.log", "--wrap", script]).strip()

    killed, plain = submit("100M", GROW), submit("100M", "exit 3")

    def finished():
        text = _command(["sacct", "-X", "-n", "-P", "-j", f"{killed},{plain}", "-o", "State"])
        states = text.split()
        return len(states) == 2 and not any(s in ("PENDING", "RUNNING") for s in states)

    _wait(finished, 90, "both probe jobs finished in sacct")
    scheduler = Slurm()
    assert scheduler.killed_for_memory(killed, None, "")  # from sacct alone (empty log)
    assert not scheduler.killed_for_memory(plain, None, "")


@pytest.mark.cluster
@pytest.mark.usefixtures("sge_cluster")
def test_sge_memory_and_time_kills_are_told_apart_live(tmp_path):
    """Both end as failed 37 / exit 137 in qacct: the h_vmem kill is a memory kill, h_rt is not."""
    def submit(resources: str, script: str) -> str:
        path = tmp_path / f"probe{len(list(tmp_path.iterdir()))}.sh"
        path.write_text(f"#!/bin/bash\n{script}\n")
        return _command(["qsub", "-terse", "-N", "dcoex_test_oomprobe", "-j", "y", "-o", str(tmp_path),
                         "-S", "/bin/bash", "-l", resources, str(path)]).strip()

    # h_vmem is per process (RLIMIT_AS) and per job (execd sums the processes): three
    # processes of 300 MiB each fit the first, not the second
    killed = submit("h_vmem=700M", " & ".join([GROW] * 3) + " & wait")
    timed_out = submit("h_rt=0:0:3,h_vmem=2G", "sleep 30")

    def accounted():
        return all(subprocess.run(["qacct", "-j", j], capture_output=True).returncode == 0 for j in (killed, timed_out))

    _wait(accounted, 120, "both probe jobs in qacct")
    scheduler = Sge()
    assert scheduler.killed_for_memory(killed, None, "")
    assert not scheduler.killed_for_memory(timed_out, None, "")
