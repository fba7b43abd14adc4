"""Submit scripts: --dry-run commands (memory from the estimate / safety) and bad flags; the real
submission and its manifest are tested on the test clusters (test_labeltransfer_cluster.py)."""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess

import pytest
from util_labeltransfer import PYTHON, SGE_SCRIPT, SLURM_SCRIPT, counts_adata, gene_names, write

from memfit.allocation import VIRTUAL_OVERHEAD_BYTES
from memfit.units import MiB


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("lt_submit")
    ref = write(counts_adata(60, gene_names(250), seed=1), d / "ref.h5ad")
    qry = write(counts_adata(30, gene_names(250), seed=2), d / "query.h5ad")
    return ref, qry


def _estimate(ref, qry, device="cpu") -> int:
    from labeltransfer.diagnose import diagnose

    return json.loads(diagnose(str(ref), str(qry), label_key="cell_type", device=device, as_json=True))["peak_bytes"]


def _script(script, *args, env=None):
    full_env = dict(os.environ, DCOEX_PYTHON=PYTHON, **(env or {}))
    return subprocess.run(["bash", str(script), *map(str, args)], capture_output=True, text=True, env=full_env, timeout=300)


def test_slurm_dry_run(pair, tmp_path):
    ref, qry = pair
    out = tmp_path / "out"
    proc = _script(SLURM_SCRIPT, "--reference", ref, "--query", qry, "--out-dir", out, "--dry-run",
                   "--partition", "long", "--time", "02:00:00", "--n-hvg", "0", "--max-epochs", "50")
    assert proc.returncode == 0, proc.stderr
    argv = shlex.split(proc.stdout.strip().splitlines()[-1])
    assert argv[0] == "sbatch"
    expected = math.ceil(_estimate(ref, qry) / 0.7 / MiB)  # n_hvg does not change it: all 250 genes
    assert f"--mem={expected}M" in argv
    assert "--partition=long" in argv and "--time=02:00:00" in argv
    assert not any(a.startswith("--gres") for a in argv)
    job = shlex.split(argv[argv.index("--wrap") + 1])
    assert job[1:4] == ["-m", "labeltransfer", "run"]
    assert job[job.index("--n-hvg") + 1] == "0" and job[job.index("--max-epochs") + 1] == "50"
    assert job[job.index("--device") + 1] == "auto"
    assert not out.exists()  # a dry run writes nothing


def test_slurm_gpu_and_sge_dry_run(pair, tmp_path):
    ref, qry = pair
    proc = _script(SLURM_SCRIPT, "--reference", ref, "--query", qry, "--out-dir", tmp_path / "o", "--dry-run", "--gpu")
    argv = shlex.split(proc.stdout.strip().splitlines()[-1])
    assert "--gres=gpu:1" in argv
    assert "--device gpu" in argv[argv.index("--wrap") + 1]
    assert f"--mem={math.ceil(_estimate(ref, qry, 'gpu') / 0.7 / MiB)}M" in argv
    proc = _script(SGE_SCRIPT, "--reference", ref, "--query", qry, "--out-dir", tmp_path / "o", "--dry-run",
                   "--gpu", "--gpu-resource", "gpu_card=1", "--queue", "all.q", "--cpus", "4", "--mem-safety", "0.5")
    assert proc.returncode == 0, proc.stderr
    argv = shlex.split(proc.stdout.strip().splitlines()[-1])
    assert argv[:2] == ["qsub", "-terse"]
    total = math.ceil((_estimate(ref, qry, "gpu") + VIRTUAL_OVERHEAD_BYTES + 1024 * MiB) / 0.5 / MiB)
    resources = [r for i, a in enumerate(argv) if a == "-l" for r in argv[i + 1].split(",")]
    assert f"h_vmem={math.ceil(total / 4)}M" in resources and "h_rt=24:00:00" in resources
    assert argv[argv.index("-pe") + 1: argv.index("-pe") + 3] == ["smp", "4"]
    assert argv[argv.index("-q") + 1] == "all.q"
    assert "gpu_card=1" in argv
    assert argv[argv.index("-m") - 1] == PYTHON or os.path.abspath(PYTHON) in argv


def test_wrong_scheduler_flag_is_bad_input(pair, tmp_path):
    ref, qry = pair
    proc = _script(SLURM_SCRIPT, "--reference", ref, "--query", qry, "--out-dir", tmp_path / "o", "--queue", "q", "--dry-run")
    assert proc.returncode == 2 and "--queue is for SGE" in proc.stderr
    proc = _script(SGE_SCRIPT, "--reference", tmp_path / "none.h5ad", "--query", qry, "--out-dir", tmp_path / "o", "--dry-run")
    assert proc.returncode == 2 and "no such file" in proc.stderr


@pytest.mark.parametrize("scheduler", ["slurm", "sge"])
def test_calibration_written_by_memfit_scales_the_request(pair, tmp_path, scheduler):
    """A calibration file from memfit's writer (the one ``memory_review --calibrate`` uses) is read
    with the factor memfit's reader returns, and the request grows by it."""
    from hpc.calibration import build_calibration, load_calibration, write_calibration

    ref, qry = pair
    path = write_calibration(tmp_path / "memfit_calibration.json",
                             build_calibration({"label_transfer": [1.99] * 5, "02a": [1.2, 1.3]}))
    factor = load_calibration(path)["label_transfer"]
    assert factor == 1.99
    proc = _script(SLURM_SCRIPT if scheduler == "slurm" else SGE_SCRIPT, "--reference", ref, "--query", qry,
                   "--out-dir", tmp_path / "o", "--dry-run", "--calibration", path, "--cpus", "1")
    assert proc.returncode == 0, proc.stderr
    assert "calibration x1.99" in proc.stderr
    argv = shlex.split(proc.stdout.strip().splitlines()[-1])
    peak = _estimate(ref, qry)
    extra = 0 if scheduler == "slurm" else VIRTUAL_OVERHEAD_BYTES + 1024 * MiB  # SGE h_vmem: virtual memory
    # the estimate's components are scaled (and truncated to whole bytes) one by one: a few bytes less
    expected = {math.ceil((peak * factor - d + extra) / 0.7 / MiB) for d in (0, 64)}
    if scheduler == "slurm":
        requested = int(next(a for a in argv if a.startswith("--mem="))[len("--mem="):-1])
    else:
        requested = int(next(r for i, a in enumerate(argv) if a == "-l" for r in argv[i + 1].split(",")
                             if r.startswith("h_vmem="))[len("h_vmem="):-1])
    assert requested in expected
    assert math.ceil((peak + extra) / 0.7 / MiB) not in expected  # the uncalibrated request would fail


def test_bad_calibration_is_one_line(pair, tmp_path):
    ref, qry = pair
    bad = tmp_path / "cal.json"
    bad.write_text('{"factors": {"label_transfer": 1.99}}')  # not memfit's layout
    proc = _script(SLURM_SCRIPT, "--reference", ref, "--query", qry, "--out-dir", tmp_path / "o", "--dry-run",
                   "--calibration", bad)
    assert proc.returncode == 2 and "no 'stages'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_newer_manifest_is_refused_before_submitting(pair, tmp_path):
    ref, qry = pair
    out = tmp_path / "o"
    out.mkdir()
    newer = json.dumps({"manifest_version": 2, "scheduler": "slurm", "stages": {}})
    (out / "run_manifest.json").write_text(newer)
    proc = _script(SLURM_SCRIPT, "--reference", ref, "--query", qry, "--out-dir", out, "--dry-run")
    assert proc.returncode == 2 and "newer than this dcoex reads" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "sbatch" not in proc.stdout and (out / "run_manifest.json").read_text() == newer
