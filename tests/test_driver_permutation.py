"""Stages 07 and 08 through the driver under --local: the chain, resume, bad flags."""

from __future__ import annotations

import json

import h5py
import pytest
from cluster_util import run_driver, write_dataset

ALL = "00,01,02a,02b,03,03b,07,08"
ARGS = ["--n-bootstrap", "20", "--genes-per-task", "8", "--seed", "3", "--fdr-alpha", "0.3", "--perms-per-task", "6"]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("perm_local")
    tsv = write_dataset(base / "expr.tsv", n_genes=16, n_samples=40)
    out = base / "run"
    done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", out, *ARGS, "--n-permutations", "12", "--local",
                                "--stages", ALL], timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return tsv, out, done.stdout


@pytest.mark.slow
def test_local_run_computes_null_and_pvalues(local_run):
    tsv, out, stdout = local_run
    m = json.loads((out / "run_manifest.json").read_text())
    assert m["status"] == "complete" and list(m["stages"]) == ALL.split(",")
    assert m["stages"]["07"]["n_tasks"] == 2 and m["stages"]["07"]["tasks_planned"] == "1-2"
    assert "07: runs (missing (2 of 2 parts))" in stdout
    assert sorted(p.name for p in (out / "permutation_null").glob("*.h5")) == [
        "perm_0000000-0000005.h5", "perm_0000006-0000011.h5"]
    assert len(list(out.glob(m["stages"]["07"]["sidecars"]))) == 2
    with h5py.File(out / "permutation_pvalues.h5", "r") as f:
        assert f["null/L1_n_nodes"].shape == (12, 16) and f["provenance"].attrs["stage"] == "08"
    header = (out / "rewiring_hubs_with_pvals.tsv").read_text().splitlines()[0].split("\t")
    assert header[:3] == ["gene_idx", "gene_id", "n_sig_edges_diff"] and header[-1] == "any_sig"


@pytest.mark.slow
def test_rerun_resumes_and_more_permutations_reuse_parts(local_run):
    tsv, out, _ = local_run
    done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", out, *ARGS, "--n-permutations", "12", "--local",
                                "--stages", ALL])
    assert done.returncode == 0 and "nothing to do" in done.stdout, done.stdout
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "permutation_null").glob("*.h5")}
    done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", out, *ARGS, "--n-permutations", "18", "--local",
                                "--stages", "07,08"], timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "07: runs (missing (1 of 3 parts))" in done.stdout and "08: runs (input null changed)" in done.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (out / "permutation_null").glob("*.h5") if p.name in kept} == kept
    with h5py.File(out / "permutation_pvalues.h5", "r") as f:
        assert f["null/L1_n_nodes"].shape == (18, 16)


def test_bad_permutation_flags_are_one_line(tmp_path):
    tsv = write_dataset(tmp_path / "expr.tsv", n_genes=8, n_samples=30)
    for flag, value in (("--n-permutations", "0"), ("--perms-per-task", "x")):
        done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", tmp_path / "run", flag, value, "--dry-run",
                                    "--stages", ALL])
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert flag in done.stderr
    done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", tmp_path / "run", "--dry-run", "--stages", "08"])
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "stage 08 needs the outputs of stage" in done.stderr


def test_default_run_leaves_out_the_optional_stages(tmp_path):
    tsv = write_dataset(tmp_path / "expr.tsv", n_genes=8, n_samples=30)
    done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", tmp_path / "run", "--dry-run", "--local"])
    assert done.returncode == 0, done.stderr
    assert "stage 07" not in done.stdout and "-m dcoex.pipeline.task --out-dir" in done.stdout
    assert "--stage 07" not in done.stdout and "--stage 03b" in done.stdout


@pytest.mark.parametrize("sched", ["slurm", "sge"])
def test_dry_run_dependencies(tmp_path, sched):
    tsv = write_dataset(tmp_path / "expr.tsv", n_genes=8, n_samples=30)
    done = run_driver(sched, ["--expr-tsv", tsv, "--out-dir", tmp_path / "run", "--dry-run", "--stages", ALL,
                              "--genes-per-task", "4", "--n-permutations", "10", "--perms-per-task", "4"])
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith(("sbatch", "qsub"))]
    ids = {}  # stage -> (job placeholder, finaliser placeholder), in submission order
    stages = ALL.split(",")
    for n, stage in enumerate(stages):
        ids[stage] = (f"DRYRUN{2 * n + 1}", f"DRYRUN{2 * n + 2}")
    job = {s: next(line for line in lines if f"dcoex_{s}_run" in line) for s in stages}
    if sched == "slurm":
        assert f"--dependency=afterok:{ids['01'][1]} " in job["07"] and "--array=1-3" in job["07"]
        assert f"--dependency=afterok:{ids['03b'][1]}:{ids['07'][1]} " in job["08"]
        assert f"--dependency=afterok:{ids['01'][1]} " in job["02a"]
    else:
        assert f"-hold_jid {ids['01'][1]} " in job["07"] and "-t 1-3" in job["07"]
        assert f"-hold_jid {ids['03b'][1]},{ids['07'][1]} " in job["08"]


def test_export_waits_for_the_permutation_pvalues_when_they_run():
    from dcoex.pipeline.stages import dependencies

    chain = ["00", "01", "02a", "02b", "03", "03b", "04", "07", "08", "05"]
    assert set(dependencies("05", chain)) == {"04", "08"}
    assert dependencies("05", ["03b", "04", "05"]) == ["04"]
    assert dependencies("08", chain) == ["03b", "07"]
