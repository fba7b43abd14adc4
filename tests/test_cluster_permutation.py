"""Stages 07 and 08 on the real SLURM and SGE test clusters: 07 waits only for 01 (it runs
beside the per-gene chain), 08 for 03b and 07; a 07 task killed for memory is retried and
08 is re-pointed to the retry; the outputs equal a --local run."""

from __future__ import annotations

import pytest
from cluster_util import assert_same_outputs, cluster_status, require_cluster, run_driver, wait_for_run, write_dataset
from test_cluster_pipeline import accounting, stage_rows

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
SCHEDULERS = ("slurm", "sge")
ALL = "00,01,02a,02b,03,03b,07,08"
ARGS = ["--n-bootstrap", "20", "--genes-per-task", "8", "--seed", "3", "--fdr-alpha", "0.3", "--n-permutations", "12",
        "--perms-per-task", "6", "--stages", ALL]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if not any(cluster_status(s)[0] for s in SCHEDULERS):
        require_cluster("slurm")
    base = tmp_path_factory.mktemp("cluster_perm")
    tsv = write_dataset(base / "expr.tsv", n_genes=16, n_samples=40)
    started = {}
    for sched in SCHEDULERS:
        if cluster_status(sched)[0]:
            out = base / sched
            done = run_driver(sched, ["--expr-tsv", tsv, "--out-dir", out, *ARGS],
                              env={"DCOEX_TEST_MEM_SCALE_07": "0.35"})
            assert done.returncode == 0, done.stderr
            started[sched] = out
    local = base / "local"
    done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", local, *ARGS, "--local"], timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return {"local": local, "dirs": started, "manifests": {s: wait_for_run(o, timeout=600) for s, o in started.items()}}


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_permutation_stages_run_with_their_dependencies(runs, sched):
    require_cluster(sched)
    out, m = runs["dirs"][sched], runs["manifests"][sched]
    assert m["status"] == "complete", m
    assert m["stage_order"] == ALL.split(",")
    attempts = m["stages"]["07"]["attempts"]
    assert [a["reason"] for a in attempts] == ["initial", "oom-retry"] and attempts[1]["task_list"] == [1, 2]
    jobs = [a["job_id"] for e in m["stages"].values() for a in e["attempts"]]
    acct = accounting(sched, jobs)
    rows = {s: stage_rows(acct, e["attempts"][-1]) for s, e in m["stages"].items()}
    ends = {s: max(r["end"] for r in rows[s].values()) for s in rows}
    starts = {s: min(r["start"] for r in rows[s].values()) for s in rows}
    assert starts["07"] >= ends["01"]
    assert starts["08"] >= ends["07"] and starts["08"] >= ends["03b"], (starts, ends)
    first_07 = stage_rows(acct, attempts[0])
    assert starts["08"] >= max(r["end"] for r in first_07.values())
    assert_same_outputs(runs["local"], out)
    assert (runs["local"] / "rewiring_hubs_with_pvals.tsv").read_bytes() == (out / "rewiring_hubs_with_pvals.tsv").read_bytes()
