"""Planning arithmetic: estimates, calibration, floors, task split, test knobs.

Pure planning only (``make_plan`` with a dry-run scheduler object, which submits nothing);
submission, retries and dependencies are tested on the real clusters
(tests/test_cluster_pipeline.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from cluster_util import write_dataset

from dcoex.genes import read_gene_list
from dcoex.pipeline.estimates import AUTO_BATCH_01, stage_estimate
from dcoex.pipeline.jobs import prepare_out_dir
from dcoex.pipeline.options import parse_args
from dcoex.pipeline.plan import first_request, make_plan, split_tasks
from dcoex.stages import get_estimator
from dcoex.stages.s01_bootstrap_indices.science import group_sizes
from hpc.errors import InputError
from hpc.schedulers import SLURM_MIN_REQUEST_BYTES, Sge, Slurm, compress_tasks
from memfit.allocation import VIRTUAL_OVERHEAD_BYTES
from memfit.units import MiB


@pytest.fixture(scope="module")
def tsv(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("plan") / "expr.tsv", n_genes=40, n_samples=60)


def options(tsv, out, *extra, scheduler="slurm"):
    return parse_args(["--expr-tsv", str(tsv), "--out-dir", str(out), *map(str, extra)], scheduler)


def test_requests_are_estimate_times_calibration_over_safety(tmp_path, tsv, monkeypatch):
    monkeypatch.setenv("DCOEX_MIN_REQUEST", "0")  # the arithmetic itself; the floor is tested below
    out = tmp_path / "run"
    out.mkdir()
    (out / "memfit_calibration.json").write_text(json.dumps(
        {"calibration_version": 1, "stages": {"02a": {"factor": 2.0, "n": 4}, "03": {"factor": 0.5, "n": 4}}}))
    slurm = make_plan(options(tsv, out, "--mem-safety", "0.8"), Slurm(dry_run=True))
    sge = make_plan(options(tsv, out, "--mem-safety", "0.8", "--slots", "3", scheduler="sge"), Sge(dry_run=True))
    for stage, p in slurm.stages.items():
        factor = {"02a": 2.0, "03": 0.5}.get(stage, 1.0)
        assert p.calibration_factor == factor
        # never below what the stage itself needs at its smallest batch (it would refuse to start)
        peak = max(int(p.raw_estimate.total_bytes * factor), p.minimum_estimate.total_bytes)
        assert p.planned_peak_bytes == peak
        assert p.requested_bytes == math.ceil(peak / 0.8 / MiB) * MiB
        assert p.request == f"--mem={p.requested_bytes // MiB}M"
        q = sge.stages[stage]  # (its estimate may differ: stage 01's memory depends on the threads = slots)
        per_slot = math.ceil((q.planned_peak_bytes + VIRTUAL_OVERHEAD_BYTES) / 0.8 / 3 / MiB)
        assert q.request == f"h_vmem={per_slot}M"
        assert q.requested_bytes == per_slot * 3 * MiB
    # stage 03 has no batch: its minimum is its estimate, so a factor below 1 cannot lower it
    assert slurm.stages["03"].planned_peak_bytes == slurm.stages["03"].raw_estimate.total_bytes
    assert slurm.stages["02a"].planned_peak_bytes == int(slurm.stages["02a"].raw_estimate.total_bytes * 2)
    assert slurm.calibration_file == str(out / "memfit_calibration.json")


def test_slurm_requests_have_a_floor(tmp_path, tsv, monkeypatch):
    monkeypatch.delenv("DCOEX_MIN_REQUEST", raising=False)
    plan = make_plan(options(tsv, tmp_path), Slurm(dry_run=True))
    for p in plan.stages.values():
        assert p.requested_bytes == max(math.ceil(p.planned_peak_bytes / 0.7 / MiB) * MiB, SLURM_MIN_REQUEST_BYTES)
    assert SLURM_MIN_REQUEST_BYTES == 256 * MiB
    assert plan.stages["00"].requested_bytes == 256 * MiB  # a 40-gene conversion needs far less
    monkeypatch.setenv("DCOEX_MIN_REQUEST", "1G")
    assert make_plan(options(tsv, tmp_path), Slurm(dry_run=True)).stages["00"].request == "--mem=1024M"
    monkeypatch.setenv("DCOEX_MIN_REQUEST", "lots")
    with pytest.raises(InputError, match="DCOEX_MIN_REQUEST='lots': not a size"):
        make_plan(options(tsv, tmp_path), Slurm(dry_run=True))


def test_stage_estimates_use_the_stages_own_inputs(tsv):
    """The driver's estimate of 01 is the stage's: its group sizes, threads = slots, the batch
    it will take (explicit: min(N, genes); auto: at least its batch of 1)."""
    from dcoex.pipeline.shapes import read_shape

    shape = read_shape(str(tsv), None)
    sizes = group_sizes(60, 0.25, 0.2, 0.8)
    est01 = get_estimator("01")

    def own(batch, threads):
        return est01(n_genes=40, n_samples=60, n_bootstrap=50, k_low=sizes.k_low, k_high=sizes.k_high,
                     kr_low=sizes.kr_low, kr_high=sizes.kr_high, batch_size=batch, threads=threads,
                     input_kind="h5", compression="gzip").total_bytes

    explicit = stage_estimate("01", shape, n_bootstrap=50, low_frac=0.25, high_frac=0.2, bootstrap_frac=0.8,
                              fdr_alpha=0.05, batch_size=7, slots=3)
    assert explicit.planned.total_bytes == explicit.minimum.total_bytes == own(7, 3)
    auto = stage_estimate("01", shape, n_bootstrap=50, low_frac=0.25, high_frac=0.2, bootstrap_frac=0.8, fdr_alpha=0.05,
                          batch_size="auto", slots=1)
    assert auto.minimum.total_bytes == own(1, 1)
    assert auto.planned.total_bytes == own(min(AUTO_BATCH_01, 40), 1) >= auto.minimum.total_bytes
    # 02a: tiles of at most N - 1 rows; 02b: at most N(N-1)/2 edges per gene
    big = stage_estimate("02a", shape, n_bootstrap=50, low_frac=0.25, high_frac=0.2, bootstrap_frac=0.8, fdr_alpha=0.05,
                         batch_size=5000, slots=1)
    assert big.planned.params["tile_rows"] == 39
    e02b = stage_estimate("02b", shape, n_bootstrap=50, low_frac=0.25, high_frac=0.2, bootstrap_frac=0.8,
                          fdr_alpha=0.05, batch_size="auto", slots=1)
    assert e02b.planned.params["n_edges"] == 780 and e02b.minimum.params["edge_chunk"] == 1
    with pytest.raises(InputError, match="give k_low = 3"):  # groups too small: bad input, before submitting
        stage_estimate("01", shape, n_bootstrap=50, low_frac=0.05, high_frac=0.2, bootstrap_frac=0.5, fdr_alpha=0.05,
                       batch_size="auto", slots=1)


def test_task_split_and_array_limit():
    universe = list(range(40))
    gpt, tasks = split_tasks(universe, "auto", 3)
    assert gpt == 14 and sorted(tasks) == [1, 2, 3] and tasks[3] == list(range(28, 40))
    with pytest.raises(InputError, match="exceed the scheduler's array limit .3.; use --genes-per-task 14"):
        split_tasks(universe, 5, 3)
    gpt, tasks = split_tasks(universe, 5, 10000)
    assert gpt == 5 and sorted(tasks) == list(range(1, 9)) and tasks[8] == list(range(35, 40))
    assert split_tasks(universe, "auto", 10000)[0] == 1  # 40 tasks of 1 gene (aims at 500 tasks)


def test_gene_subset_is_the_task_universe(tmp_path, tsv):
    subset = tmp_path / "subset.txt"
    subset.write_text("G05\nindex:3\nG39\nG05\n")
    plan = make_plan(options(tsv, tmp_path / "run", "--gene-subset", subset, "--genes-per-task", "2"),
                     Slurm(dry_run=True))
    assert plan.universe == [3, 5, 39]
    assert plan.task_genes == {1: [3, 5], 2: [39]}
    assert plan.stages["02a"].tasks == [1, 2] and plan.stages["02a"].n_tasks == 2
    argv = plan.stages["02a"].argv
    assert argv[argv.index("--gene-list") + 1] == str(tmp_path / "run" / ".dcoex" / "gene_list.txt")
    prepare_out_dir(plan)  # the file the stages read names the genes by index (index:N)
    listed = (tmp_path / "run" / ".dcoex" / "gene_list.txt").read_text().split()
    assert listed == ["index:3", "index:5", "index:39"]
    assert read_gene_list(tmp_path / "run" / ".dcoex" / "gene_list.txt", plan.shape.gene_names) == [3, 5, 39]


def test_gene_subset_names_win_over_indices(tmp_path):
    """Genes named 1000..1399: "1005" is the gene named 1005 (index 5), not index 1005; "100"
    is no gene's name and is refused; index:100 is the gene with index 100."""
    lines = ["gene\t" + "\t".join(f"S{j}" for j in range(30))]
    lines += [f"{1000 + g}\t" + "\t".join(str((g * 7 + j * 3) % 11 + 0.5) for j in range(30)) for g in range(400)]
    tsv = tmp_path / "numeric.tsv"
    tsv.write_text("\n".join(lines) + "\n")
    subset = tmp_path / "subset.txt"
    subset.write_text("1005\nindex:100\n")
    plan = make_plan(options(tsv, tmp_path / "run", "--gene-subset", subset, "--genes-per-task", "2"),
                     Slurm(dry_run=True))
    assert plan.universe == [5, 100]
    subset.write_text("1005\n100\n")
    with pytest.raises(InputError, match=r"1 unknown gene\(s\): 100 \(not gene names"):
        make_plan(options(tsv, tmp_path / "run", "--gene-subset", subset), Slurm(dry_run=True))


def test_test_knob_scales_only_the_first_request(tmp_path, tsv, monkeypatch):
    monkeypatch.setenv("DCOEX_TEST_MEM_SCALE_02B", "0.25")
    plan = make_plan(options(tsv, tmp_path, "--slots", "2"), Slurm(dry_run=True))
    p = plan.stages["02b"]
    assert p.test_scale == 0.25
    assert first_request(p) == math.ceil(p.requested_bytes * 0.25 / (2 * MiB)) * 2 * MiB
    assert first_request(plan.stages["02a"]) == plan.stages["02a"].requested_bytes


def test_compress_tasks():
    assert compress_tasks([7, 1, 2, 3, 9, 10]) == "1-3,7,9-10"
    assert compress_tasks([4]) == "4"
