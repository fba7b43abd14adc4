"""The HPC layer (lib/hpc): job-id parsing, the versioned manifest (and the driver refusing a newer
or corrupt one), and ``--local --dry-run`` printing what would run while writing nothing."""

from __future__ import annotations

import json
import math
import os
import shlex
from pathlib import Path

import pytest
from cluster_util import run_driver, write_dataset

from hpc.manifest import MANIFEST_VERSION, ManifestError, locked_manifest, read_manifest
from hpc.schedulers import JobSpec, Sge, Slurm, SubmitError, submitted_job_id
from memfit.units import MiB

# --- job ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize("command,answer,job_id", [
    ("sbatch", "123\n", "123"),
    ("sbatch", "  812;cluster2\n", "812"),
    ("sbatch", "5;my-cluster.b\n", "5"),
    ("qsub", "392\n", "392"),
    ("qsub", "392.1-3:1\n", "392"),
    ("qsub", 'Your job 77 ("dcoex_00_run") has been submitted\n', "77"),
    ("qsub", 'Your job-array 78.1-4:1 ("dcoex_02a_run") has been submitted\n', "78"),
])
def test_job_id_of_valid_answers(command, answer, job_id):
    assert submitted_job_id(answer, command) == job_id
    adaptor = Slurm() if command == "sbatch" else Sge()
    assert adaptor.parse_job_id(answer) == job_id


@pytest.mark.parametrize("command,answer", [
    ("qsub", "Unable to run job: error: no suitable queues.\nExiting.\n"),
    ("sbatch", "sbatch: error: Batch job submission failed: Invalid account or account/partition combination"),
    ("sbatch", ""),
    ("sbatch", "123 456"),
    ("sbatch", "12a"),
    ("sbatch", "123;"),
    ("sbatch", "392.1-3:1"),  # qsub's array answer is not sbatch's
    ("qsub", "123;cluster"),  # sbatch's cluster suffix is not qsub's
    ("qsub", "Your job abc (\"x\") has been submitted"),
    ("sbatch", "Submitted batch job 99\nwarning: something"),
])
def test_garbage_answers_are_one_line_errors(command, answer):
    with pytest.raises(SubmitError) as info:
        submitted_job_id(answer, command)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{command}: unexpected answer")
    first = answer.split()[0] if answer.split() else "nothing"
    assert first in message  # quotes what the scheduler printed


@pytest.mark.parametrize("adaptor", [Slurm(dry_run=True), Sge(dry_run=True)], ids=["slurm", "sge"])
def test_a_command_job_is_submitted_like_a_script_job(adaptor, tmp_path):
    """Label transfer's job (a command line) and the driver's single-job stages (a script) share
    one command builder: the command lines differ only in what runs."""
    common = dict(name="j", log=tmp_path, log_stem="label_transfer", mem_bytes=1000 * MiB, slots=2,
                  time_limit="01:00:00", queue="q", account="a")
    script = adaptor.command(JobSpec(script=tmp_path / "j.sh", **common))
    command = adaptor.command(JobSpec(script=None, command=["python", "-c", "print(1)"], **common))
    assert script[-1] == str(tmp_path / "j.sh") and command[:len(script) - 1] == script[:-1]
    what_runs = {"slurm": ["--wrap", "python -c 'print(1)'"],
                 "sge": ["-b", "y", "-V", "-cwd", "python", "-c", "print(1)"]}[adaptor.name]
    assert command[len(script) - 1:] == what_runs
    with pytest.raises(ValueError, match="script or a command"):
        JobSpec(script=None, **common)


# --- the manifest -------------------------------------------------------------------------------

def _write(out: Path, text: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "run_manifest.json").write_text(text)


MINIMAL = {"manifest_version": MANIFEST_VERSION, "scheduler": "slurm", "stages": {"00": {"attempts": []}}}


@pytest.mark.parametrize("content,needle", [
    (json.dumps(dict(MINIMAL, manifest_version=MANIFEST_VERSION + 1)), "newer than this dcoex reads"),
    (json.dumps(dict(MINIMAL, manifest_version=0)), "manifest_version 0"),
    (json.dumps(dict(MINIMAL, manifest_version="1")), "corrupt"),
    ('{"manifest_version": 1, "scheduler": "slurm", "stag', "corrupt: not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps(dict(MINIMAL, scheduler="pbs")), "scheduler 'pbs'"),
    (json.dumps({k: v for k, v in MINIMAL.items() if k != "stages"}), "no 'stages'"),
    (json.dumps(dict(MINIMAL, stages={"00": {"attempts": {}}})), "no 'attempts' list"),
])
def test_manifest_read_checks_version_and_layout(tmp_path, content, needle):
    _write(tmp_path, content)
    with pytest.raises(ManifestError) as info:
        read_manifest(tmp_path)
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert str(tmp_path / "run_manifest.json") in str(info.value)
    with pytest.raises(ManifestError), locked_manifest(tmp_path) as manifest:  # nor changed under the lock
        manifest["status"] = "complete"
    assert (tmp_path / "run_manifest.json").read_text() == content


def test_locked_manifest_round_trip(tmp_path):
    with locked_manifest(tmp_path) as manifest:
        manifest.update(MINIMAL)
    with locked_manifest(tmp_path) as manifest:
        manifest["stages"]["00"]["attempts"].append({"attempt": 1, "job_id": "5"})
    assert read_manifest(tmp_path)["stages"]["00"]["attempts"] == [{"attempt": 1, "job_id": "5"}]
    assert not [p.name for p in tmp_path.iterdir() if "tmp" in p.name]


@pytest.fixture(scope="module")
def tsv(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("hpc") / "expr.tsv", n_genes=16, n_samples=40)


def _listing(folder: Path) -> list[tuple[str, int, int]]:
    """Every path under ``folder`` with its size and modification time (ns)."""
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


@pytest.mark.parametrize("content,needle", [
    (json.dumps(dict(MINIMAL, manifest_version=MANIFEST_VERSION + 1)), "newer than this dcoex reads"),
    ("{corrupt", "corrupt"),
])
@pytest.mark.parametrize("mode", [["--local"], ["--dry-run"]])
def test_driver_refuses_a_newer_or_corrupt_manifest(tmp_path, tsv, content, needle, mode):
    out = tmp_path / "run"
    _write(out, content)
    before = _listing(out)
    done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", out, "--genes-per-task", "8", *mode])
    assert done.returncode == 2, done.stdout + done.stderr
    assert needle in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert _listing(out) == before  # not replaced, nothing written


# --- --local --dry-run --------------------------------------------------------------------------

def test_local_dry_run_prints_the_commands_and_writes_nothing(tmp_path, tsv):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("an earlier file\n")
    before = _listing(out)
    done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", out, "--genes-per-task", "6", "--n-bootstrap", "10",
                                "--local", "--dry-run"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert _listing(out) == before
    lines = [line for line in done.stdout.splitlines() if " -m dcoex.pipeline.task " in line]
    runs = []
    for line in lines:
        argv = shlex.split(line)
        assert argv[1:3] == ["-m", "dcoex.pipeline.task"] and os.path.basename(argv[0]).startswith("python")
        assert argv[argv.index("--out-dir") + 1] == str(out)
        stage = argv[argv.index("--stage") + 1]
        task = int(argv[argv.index("--task") + 1]) if "--task" in argv else None
        assert argv[-3] == ">" and argv[-2] == str(out / "logs" / f"{stage}.local.{task or 1}.log")
        runs.append((stage, task))
    n_tasks = math.ceil(16 / 6)  # 16 genes, 6 per task
    per_gene = [(s, t) for s in ("02a", "02b", "03") for t in range(1, n_tasks + 1)]
    assert runs == [("00", None), ("01", None), *per_gene, ("03b", None), ("04", None), ("05", None)]


def test_local_dry_run_without_out_dir_creates_none(tmp_path, tsv):
    out = tmp_path / "absent"
    done = run_driver("sge", ["--expr-tsv", tsv, "--out-dir", out, "--local", "--dry-run"])
    assert done.returncode == 0, done.stderr
    assert " -m dcoex.pipeline.task " in done.stdout and not out.exists()
