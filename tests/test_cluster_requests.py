"""Requests from what 02a found, on the real SLURM and SGE test clusters (issue 11, item 3).

Synthetic data (1,000 genes × 100 samples) with one modulator whose module of 700 genes is
co-expressed only in its HIGH group: 244,650 planted differential pairs, more than the 200,000
edges 02b is planned at before 02a has run. Two reference genes, one per task: the modulator
(many edges) and a noise gene (few). When its 02a task ends, each task's 02b and 03 requests are
sized from its gene's edge count before they start (SLURM: scontrol update of the pending task;
SGE: the task moved to an array of its own): the gene with many edges gets more memory than
planned and more than the other gene, and no task runs out of memory. Their time limits are
sized alongside from the run-time model (scaled by DCOEX_TEST_TIME_SCALE_* so that the sizes of
this tiny data show above the 15-minute floor): the gene with many edges gets a longer limit than
the gene with few, both below 24 h (SLURM: each task lowered from the 24 h bound; SGE: the array
asks for the time of the planning bound of 200,000 edges, and the big gene's task moves with its
own, longer one), and no task is killed.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest
from cluster_util import cluster_status, require_cluster, run_driver, wait_for_run
from test_cluster_pipeline import _limit_s, accounting
from util_stage02 import stored_edge_count

from dcoex.genes import gene_file_path
from dcoex.synthetic import make_synthetic, write_tsv
from hpc.manifest import latest_attempt

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
SCHEDULERS = ("slurm", "sge")
N_GENES, MODULE = 1000, 700
ARGS = ["--n-bootstrap", "20", "--seed", "7", "--genes-per-task", "1", "--fdr-alpha", "0.1"]
#: A lower SLURM floor than the default 256 MiB, and modelled run times × 100, so that the sizes
#: themselves show.
ENV = {"DCOEX_MIN_REQUEST": "64M", "DCOEX_TEST_TIME_SCALE_02B": "1000", "DCOEX_TEST_TIME_SCALE_03": "1000"}
DAY_S = 24 * 3600


@pytest.fixture(scope="module")
def sized_runs(tmp_path_factory):
    if not any(cluster_status(s)[0] for s in SCHEDULERS):
        require_cluster("slurm")
    base = tmp_path_factory.mktemp("sized_runs")
    data = make_synthetic(N_GENES, 100, seed=3, n_modulators=1, module_size=MODULE, strength=4.0)
    tsv = write_tsv(base / "expr.tsv", data)
    big = data.modulators[0]
    small = next(g for g in range(N_GENES) if g != big and g not in data.modules[big])
    subset = base / "subset.txt"  # the rerun test finds it and expr.tsv beside the run folders
    subset.write_text(f"index:{big}\nindex:{small}\n")
    started, plans = {}, {}
    for sched in SCHEDULERS:
        if not cluster_status(sched)[0]:
            continue
        out = base / sched
        done = run_driver(sched, ["--expr-tsv", tsv, "--out-dir", out, *ARGS, "--gene-subset", subset], env=ENV)
        assert done.returncode == 0, done.stderr
        started[sched], plans[sched] = out, done.stdout
    manifests = {s: wait_for_run(out, timeout=900) for s, out in started.items()}
    # tasks follow the gene list's order (ascending indices)
    tasks = {g: t for t, g in enumerate(sorted((big, small)), start=1)}
    return {"dirs": started, "manifests": manifests, "plans": plans, "big": big, "small": small, "tasks": tasks,
            "names": data.gene_names}


def _need(runs, sched):
    require_cluster(sched)
    if sched not in runs["dirs"]:
        pytest.fail(f"the {sched} run was not started")
    return runs["dirs"][sched], runs["manifests"][sched]


def _stored_edges(out: Path, gene: int, names: list[str]) -> int:
    """The edges 02a stored for a gene: the length of its edge table (not the count attribute)."""
    with h5py.File(gene_file_path(out / "base_correlations", gene, names[gene], N_GENES), "r") as f:
        return stored_edge_count(f)


def _task_row(sched: str, entry: dict, task: int) -> dict:
    """The scheduler's accounting of task ``task``'s last attempt."""
    attempt = latest_attempt(entry, task)
    return accounting(sched, [attempt["job_id"]])[f"{attempt['job_id']}_{task}"]


def _task_request_mib(sched: str, entry: dict, task: int) -> float:
    """What the scheduler's accounting says task ``task`` asked for (MiB; SGE h_vmem per slot)."""
    return _task_row(sched, entry, task)["req_mib"]


def _task_time_limit_s(sched: str, entry: dict, task: int) -> int:
    """The time limit the scheduler's accounting records for task ``task`` (seconds)."""
    limit = _task_row(sched, entry, task)["time_limit_s"]
    assert limit, (sched, task)
    return limit


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_many_edges_get_a_larger_request_and_nothing_runs_out_of_memory(sized_runs, sched):
    out, manifest = _need(sized_runs, sched)
    assert manifest["status"] == "complete", json.dumps({s: e.get("failures") for s, e in manifest["stages"].items()})
    big, small, tasks = sized_runs["big"], sized_runs["small"], sized_runs["tasks"]
    edges = {g: _stored_edges(out, g, sized_runs["names"]) for g in (big, small)}
    assert edges[big] >= MODULE * (MODULE - 1) // 2 > 200_000 and edges[big] > 20 * edges[small]
    assert "pending 02a" in sized_runs["plans"][sched]
    for stage in ("02b", "03"):
        entry = manifest["stages"][stage]
        assert entry["task_edges"] == {str(tasks[g]): edges[g] for g in (big, small)}, stage
        # nothing ran out of memory or failed: no retry, each task ran once
        assert {a["reason"] for a in entry["attempts"]} <= {"initial", "resize"}, entry["attempts"]
        assert not entry["failures"]
        asked = {g: _task_request_mib(sched, entry, tasks[g]) for g in (big, small)}
        # 03 holds the network's edges; 02b one tile of them (x B), so it may ask the same
        assert asked[big] > asked[small] if stage == "03" else asked[big] >= asked[small], (stage, asked)
        # what was asked is what the manifest records for the task (sized from the count)
        sized = {g: entry["task_requests"][str(tasks[g])] / 2**20 / (entry["slots"] if sched == "sge" else 1)
                 for g in (big, small)}
        assert asked[big] == pytest.approx(sized[big]), (stage, asked, sized)
        for g in (big, small):  # each task's measured peak fits what it asked for
            sidecar = json.loads(next((out / {"02b": "bootstrap_significant", "03": "networks"}[stage] / "memory")
                                      .glob(f"{stage}.genes_{g:04d}-{g:04d}.memory.json")).read_text())
            assert sidecar["peak_rss_bytes"] < asked[g] * 2**20, (stage, g, sidecar["peak_rss_bytes"])
        # time limits sized from the counts: longer for more edges, below the 24 h bound
        assert entry["time_limit_bound"] == "24:00:00"
        limits = {g: _task_time_limit_s(sched, entry, tasks[g]) for g in (big, small)}
        sized_limits = {g: _limit_s(entry["task_time_limits"][str(tasks[g])]) for g in (big, small)}
        assert entry["task_seconds"][str(tasks[big])] > entry["task_seconds"][str(tasks[small])]
        assert limits[big] == sized_limits[big] > sized_limits[small] >= 15 * 60, (stage, limits, sized_limits)
        if sched == "slurm":  # the array asked for the bound; each task was lowered in place
            assert entry["time_limit"] == "24:00:00" and limits[small] == sized_limits[small]
        else:  # the array asked for the planning bound's time; the small task kept it
            assert limits[small] == _limit_s(entry["time_limit"]) >= sized_limits[small]
        assert limits[small] < limits[big] < DAY_S, (stage, limits)
    # the big gene's 03 task was sized again from its count when its 02a task ended
    entry = manifest["stages"]["03"]
    if sched == "sge":  # SGE changes no single array task: the big one moved to an array of its own
        moved = [a for a in entry["attempts"] if a["reason"] == "resize"]
        assert [a["task_list"] for a in moved] == [[tasks[big]]] and moved[0]["split_of"] == 1
        assert tasks[big] not in entry["attempts"][0]["task_list"]
        assert moved[0]["time_limit"] == entry["task_time_limits"][str(tasks[big])]
    else:
        assert len(entry["attempts"]) == 1 and str(tasks[big]) in entry["attempts"][0]["task_requests"]
        assert set(entry["attempts"][0]["task_time_limits"]) == {str(tasks[big]), str(tasks[small])}


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_a_rerun_is_sized_from_the_02a_outputs_at_planning(sized_runs, sched):
    """02b and 03 again (``--force``) from the current 02a outputs: sized at planning. SLURM gives
    each task its own request at submission; SGE asks the largest task's for the whole array."""
    out, _ = _need(sized_runs, sched)
    big, small, tasks = sized_runs["big"], sized_runs["small"], sized_runs["tasks"]
    done = run_driver(sched, ["--expr-tsv", out.parent / "expr.tsv", "--out-dir", out, *ARGS, "--gene-subset",
                              out.parent / "subset.txt", "--stages", "02b,03", "--force"], env=ENV)
    assert done.returncode == 0, done.stderr
    assert "02b: memory from 02a edge counts" in done.stdout and "pending 02a" not in done.stdout
    manifest = wait_for_run(out, timeout=600)
    assert manifest["status"] == "complete"
    for stage in ("02b", "03"):
        entry = manifest["stages"][stage]
        assert [a["reason"] for a in entry["attempts"]] == ["initial"]
        asked = {g: _task_request_mib(sched, entry, tasks[g]) for g in (big, small)}
        per_slot = entry["slots"] if sched == "sge" else 1
        assert asked[big] == pytest.approx(entry["task_requests"][str(tasks[big])] / 2**20 / per_slot)
        limits = {g: _task_time_limit_s(sched, entry, tasks[g]) for g in (big, small)}
        sized_limits = {g: _limit_s(entry["task_time_limits"][str(tasks[g])]) for g in (big, small)}
        assert limits[big] == sized_limits[big] > sized_limits[small], (stage, limits, sized_limits)
        if sched == "slurm":
            assert asked[small] == pytest.approx(entry["task_requests"][str(tasks[small])] / 2**20)
            assert asked[small] < asked[big] if stage == "03" else asked[small] <= asked[big]
            assert limits[small] == sized_limits[small]  # lowered at submission
        else:
            assert asked[small] == asked[big] and limits[small] == limits[big]  # the array asks for its largest
