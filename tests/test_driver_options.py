"""Driver command line: identical flags for both schedulers; bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cluster_util import DRIVERS, run_driver, sge_cluster, slurm_cluster, write_dataset  # noqa: F401 - fixtures

from dcoex.pipeline.options import parse_args
from hpc.errors import InputError


@pytest.fixture(scope="module")
def tsv(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("opts") / "expr.tsv", n_genes=16, n_samples=30)


def _bad(tmp_path, args, env=None, scheduler="slurm", **kw):
    out = tmp_path / "out"
    done = run_driver(scheduler, [*args, "--out-dir", out] if "--out-dir" not in args else args, env=env, **kw)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists(), "bad input must not create the output folder"
    return lines[0]


@pytest.mark.parametrize("scheduler", ["slurm", "sge"])
def test_unknown_flag(tmp_path, tsv, scheduler):
    line = _bad(tmp_path, ["--expr-tsv", tsv, "--frobnicate", "3", "--dry-run"], scheduler=scheduler)
    assert "--frobnicate" in line


def test_both_or_neither_input(tmp_path, tsv):
    assert "exactly one of --expr-tsv and --expr-h5" in _bad(tmp_path, ["--expr-tsv", tsv, "--expr-h5", tsv])
    assert "exactly one of --expr-tsv and --expr-h5" in _bad(tmp_path, ["--dry-run"])


def test_missing_file(tmp_path):
    line = _bad(tmp_path, ["--expr-tsv", tmp_path / "nope.tsv", "--dry-run"])
    assert "nope.tsv" in line and "no such file" in line


def test_genes_per_task_zero(tmp_path, tsv):
    assert "--genes-per-task must be >= 1, got 0" in _bad(tmp_path, ["--expr-tsv", tsv, "--genes-per-task", "0"])


def test_gene_subset_bare_number_is_a_name_not_an_index(tmp_path, tsv):
    """Genes are G00..G15: "3" is no gene's name, so it is refused (an index is index:3)."""
    subset = tmp_path / "subset.txt"
    subset.write_text("G01\n3\nindex:4\n")
    line = _bad(tmp_path, ["--expr-tsv", tsv, "--gene-subset", subset, "--dry-run"])
    assert "1 unknown gene(s): 3 " in line and "index:N" in line


def test_gene_subset_with_unknown_genes_lists_them(tmp_path, tsv):
    subset = tmp_path / "subset.txt"
    subset.write_text("G01\nNOPE1\nG03\nNOPE2\n")
    line = _bad(tmp_path, ["--expr-tsv", tsv, "--gene-subset", subset, "--dry-run"])
    assert "2 unknown gene(s)" in line and "NOPE1" in line and "NOPE2" in line


def test_bad_stage_and_time(tmp_path, tsv):
    assert "unknown stage" in _bad(tmp_path, ["--expr-tsv", tsv, "--stages", "01,09"])
    assert "HH:MM:SS" in _bad(tmp_path, ["--expr-tsv", tsv, "--time-02a", "5 hours"])
    assert "unknown stage" in _bad(tmp_path, ["--expr-tsv", tsv, "--time-09", "01:00:00"])


@pytest.mark.parametrize("scheduler,command", [("slurm", "sbatch"), ("sge", "qsub")])
def test_missing_scheduler_command_is_named(tmp_path, tsv, scheduler, command):
    empty = tmp_path / "bin"
    empty.mkdir()
    done = subprocess.run([sys.executable, "-m", "dcoex.pipeline", "--scheduler", scheduler, "--expr-tsv", str(tsv),
                           "--out-dir", str(tmp_path / "out")], capture_output=True, text=True,
                          env=dict(os.environ, PATH=str(empty)))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and f"{command} not found on PATH" in done.stderr
    assert "--local" in done.stderr
    assert not (tmp_path / "out").exists()


def _jobs_named(scheduler: str, name: str) -> list[str]:
    """Jobs with this name in the queue or in accounting (job ids, or accounting lines)."""
    if scheduler == "slurm":
        queued = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True).stdout
        done = subprocess.run(["sacct", "-X", "-n", "-P", "-S", "now-1hours", "--name", name, "-o", "JobID"],
                              capture_output=True, text=True).stdout
        return queued.split() + done.split()
    queued = subprocess.run(["qstat", "-u", "*", "-r"], capture_output=True, text=True).stdout
    hits = [line for line in queued.splitlines() if "Full jobname:" in line and name in line]
    done = subprocess.run(["qacct", "-j", name], capture_output=True, text=True)
    return hits + ([done.stdout] if done.returncode == 0 else [])


@pytest.mark.cluster
@pytest.mark.parametrize("scheduler", ["slurm", "sge"])
def test_plan_larger_than_any_node_is_rejected_before_submitting(tmp_path, tsv, scheduler, request):
    """On the real cluster: a plan bigger than the node's memory (sinfo RealMemory / qhost
    MEMTOT) is refused with the numbers, exit 2, and nothing reaches the queue or accounting."""
    request.getfixturevalue(f"{scheduler}_cluster")
    from hpc.schedulers import get_scheduler
    from memfit.units import GiB, MiB, format_bytes

    node_bytes = get_scheduler(scheduler).max_request_bytes()
    assert node_bytes and node_bytes > 1 << 30
    out = tmp_path / "too_big_run"
    # 10^8 bootstrap replicates of 2 x 9 indices: tens of GiB, more than the test node has
    done = run_driver(scheduler, ["--expr-tsv", tsv, "--out-dir", out, "--n-bootstrap", "100000000",
                                  "--genes-per-task", "4"])
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    field = "--mem=" if scheduler == "slurm" else "h_vmem="
    match = re.search(rf"stage (\w+) needs {field}(\d+)M \(([0-9.]+) GiB for ([0-9.]+) GiB estimated peak", lines[0])
    assert match, lines[0]
    per_slot_mib, total_gib = int(match.group(2)), float(match.group(3))
    assert per_slot_mib * MiB > node_bytes and total_gib * GiB > node_bytes
    assert f"the largest node offers {format_bytes(node_bytes)}" in lines[0]
    assert not out.exists()
    assert _jobs_named(scheduler, "dcoex_00_too_big_run") == []
    assert _jobs_named(scheduler, "dcoex_01_too_big_run") == []


def test_help_lists_the_same_flags_for_both(tmp_path):
    texts = [run_driver(s, ["--help"]).stdout for s in ("slurm", "sge")]
    assert texts[0] == texts[1]
    for flag in ("--expr-tsv", "--expr-h5", "--out-dir", "--n-bootstrap", "--batch-size", "--seed", "--low-frac",
                 "--high-frac", "--bootstrap-frac", "--fdr-alpha", "--edge-selection", "--genes-per-task",
                 "--gene-subset", "--stages", "--local", "--dry-run", "--mem-safety", "--max-retries",
                 "--queue/--partition", "--account/--project", "--slots", "--time-<stage>", "DCOEX_TEST_MEM_SCALE_"):
        assert flag in texts[0], flag


def test_driver_scripts_differ_only_in_scheduler_name():
    slurm, sge = (DRIVERS[s].read_text().splitlines() for s in ("slurm", "sge"))
    assert len(slurm) == len(sge)
    differ = [(a, b) for a, b in zip(slurm, sge) if a != b]
    assert [a.replace("SLURM", "SGE") for a, _ in differ[:-1]] == [b for _, b in differ[:-1]]  # comment
    assert differ[-1][0].endswith("--scheduler slurm \"$@\"") and differ[-1][1].endswith("--scheduler sge \"$@\"")
    assert differ[-1][0].replace("slurm", "sge") == differ[-1][1]


def test_parse_args_values(tmp_path, tsv):
    o = parse_args(["--expr-tsv", str(tsv), "--out-dir", str(tmp_path), "--partition", "long", "--project", "p1",
                    "--time-02a", "02:00:00", "--time-03b=00:10:00", "--slots", "4", "--batch-size", "64",
                    "--stages", "02b,03,03b", "--max-retries", "0"], "slurm")
    assert (o.queue, o.account, o.slots, o.batch_size, o.max_retries) == ("long", "p1", 4, 64, 0)
    assert o.times == {"02a": "02:00:00", "03b": "00:10:00"}
    assert o.stages == ["02b", "03", "03b"]
    with pytest.raises(InputError, match=r"--low-frac 0\.7: must be in \(0, 0\.5\]"):
        parse_args(["--expr-tsv", str(tsv), "--out-dir", str(tmp_path), "--low-frac", "0.7"], "sge")


@pytest.mark.cluster
@pytest.mark.parametrize("scheduler", ["slurm", "sge"])
def test_refused_submission_cancels_what_was_submitted(tmp_path, tsv, scheduler, request):
    """The real scheduler refuses stage 02b (its first request scaled past the node's memory
    with the testing knob, after the plan's check): the jobs already submitted (00, 01, 02a and
    their finalisers) are cancelled before running, no manifest is written, exit 2 with the
    scheduler's answer."""
    request.getfixturevalue(f"{scheduler}_cluster")
    tag = f"refused{os.getpid()}"  # job names end with the run folder's name: unique per session
    out = tmp_path / tag
    done = run_driver(scheduler, ["--expr-tsv", tsv, "--out-dir", out, "--genes-per-task", "8",
                                  "--n-bootstrap", "20"], env={"DCOEX_TEST_MEM_SCALE_02B": "1000"})
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    command = "sbatch" if scheduler == "slurm" else "qsub"
    assert len(lines) == 1 and f"{command} of dcoex_02b_{tag} failed" in lines[0], done.stderr
    assert "nothing was left submitted" in lines[0]
    assert not (out / "run_manifest.json").exists()
    names = [f"dcoex_{kind}{stage}{suffix}_{tag}" for stage in ("00", "01", "02a")
             for kind, suffix in (("", ""), ("fin", "_a1"))]
    for name in names:
        if scheduler == "slurm":  # slurmctld keeps ended jobs for MinJobAge: submitted, then CANCELLED
            states = subprocess.run(["squeue", "-h", "-t", "all", "-n", name, "-o", "%T"],
                                    capture_output=True, text=True).stdout.split()
            assert states and set(states) == {"CANCELLED"}, (name, states)
        else:  # SGE lists ended jobs as zombies (finished_jobs): submitted, no longer queued
            live = subprocess.run(["qstat", "-u", "*", "-r"], capture_output=True, text=True).stdout
            ended = subprocess.run(["qstat", "-s", "z", "-u", "*", "-r"], capture_output=True, text=True).stdout
            assert f"Full jobname:     {name}\n" in ended and f"{name}\n" not in live, name
    assert not (out / "logs").exists() or not list((out / "logs").glob("*.log")), "nothing may have run"
