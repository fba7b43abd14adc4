"""Submit scripts on the real single-node SLURM and SGE test clusters (tests/cluster/clusters_up.sh)."""

from __future__ import annotations

import json
import math
import time

import pytest
from cluster_util import cluster_status, require_cluster
from util_labeltransfer import SGE_SCRIPT, SLURM_SCRIPT, counts_adata, gene_names, write

from memfit.units import MiB

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.labels]
SCRIPTS = {"slurm": SLURM_SCRIPT, "sge": SGE_SCRIPT}


@pytest.fixture(scope="module")
def submitted(tmp_path_factory):
    """Submit one tiny run to every running cluster at once; {scheduler: (out_dir, job_id)}."""
    import os
    import subprocess
    import sys

    base = tmp_path_factory.mktemp("lt_cluster")
    ref = write(counts_adata(120, gene_names(220), seed=1), base / "ref.h5ad")
    qry = write(counts_adata(50, gene_names(220), seed=2), base / "query.h5ad")
    jobs = {}
    for sched, script in SCRIPTS.items():
        if not cluster_status(sched)[0]:
            continue
        out = base / sched
        proc = subprocess.run(
            ["bash", str(script), "--reference", str(ref), "--query", str(qry), "--out-dir", str(out),
             "--query-label-key", "cell_type", "--max-epochs", "3", "--n-latent", "4", "--n-hvg", "0",
             "--cpus", "1", "--time", "00:20:00"],
            capture_output=True, text=True, timeout=300, env=dict(os.environ, DCOEX_PYTHON=sys.executable),
        )
        assert proc.returncode == 0, proc.stderr
        jobs[sched] = (out, proc.stdout.strip().splitlines()[-1])
    return jobs


def _wait(out, timeout=900.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (out / "report.json").exists():
            return json.loads((out / "report.json").read_text())
        errors = [p.read_text() for p in (out / "logs").glob("label_transfer.*.log")] if (out / "logs").exists() else []
        if any("error:" in e for e in errors):
            pytest.fail("job failed:\n" + "\n".join(e[-1500:] for e in errors))
        time.sleep(3)
    pytest.fail(f"no report.json in {out} after {timeout:.0f} s")


@pytest.mark.parametrize("scheduler", ["slurm", "sge"])
def test_submit_runs_on_cluster(submitted, scheduler):
    require_cluster(scheduler)
    out, job_id = submitted[scheduler]
    assert job_id.isdigit()
    manifest = json.loads((out / "run_manifest.json").read_text())
    stage = manifest["stages"]["label_transfer"]
    assert manifest["manifest_version"] == 1
    assert manifest["scheduler"] == scheduler and stage["attempts"][0]["job_id"] == job_id
    assert stage["attempts"][0]["command"][0] == {"slurm": "sbatch", "sge": "qsub"}[scheduler]
    assert stage["estimate"]["total_bytes"] == stage["raw_estimate_bytes"]
    assert manifest["data_shape"]["n_reference"] == 120 and manifest["data_shape"]["n_query"] == 50
    if scheduler == "slurm":
        assert stage["requested_bytes"] == math.ceil(stage["raw_estimate_bytes"] / 0.7 / MiB) * MiB
    report = _wait(out)
    assert report["predictions"]["n_query"] == 50
    sidecar = json.loads((out / "label_transfer.memory.json").read_text())
    # the job saw the allocation the script requested, and fitted under it
    assert sidecar["allocation"]["source"].startswith(scheduler)
    assert sidecar["allocation"]["limit_bytes"] <= stage["requested_bytes"]
    assert sidecar["peak_rss_bytes"] < sidecar["allocation"]["limit_bytes"]
    assert sidecar["estimate_bytes"] == stage["estimate"]["total_bytes"]
