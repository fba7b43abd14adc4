"""Requests and disk from what 02a found (issue 11, items 3 and 4), without a scheduler.

* 02b and 03 requests sized at planning from current 02a files (a resume): a reference gene with a
  planted strongly rewired module (many edges) gets a larger request and time limit than a noise
  gene (few); the time model's floor, safety factor and upper bound;
* each stage's ``output_bytes`` against the files a real run wrote;
* the plan table's disk per stage and in total; the refusal as a function of given free bytes;
  the refusal end to end on a real 3 MiB file system, and ``--ignore-disk-check``.
"""

from __future__ import annotations

import subprocess
import sys

import h5py
import pytest
from cluster_util import run_driver, write_dataset
from test_driver_faults import small_disk  # noqa: F401 (fixture)
from util_stage02 import stored_edge_count

from dcoex.genes import gene_file_path
from dcoex.pipeline.disk import disk_refusal, expected_edge_fraction
from dcoex.pipeline.estimates import PLAN_EDGES
from dcoex.pipeline.options import parse_args
from dcoex.pipeline.plan import make_plan
from dcoex.pipeline.shapes import DataShape
from dcoex.pipeline.sizing import TIME_FLOOR_SECONDS, TIME_SAFETY, time_for, time_scale_knob, worth_retiming
from dcoex.stages.s02b_bootstrap_edges import estimator as e02b
from dcoex.stages.s03_network import estimator as e03
from dcoex.synthetic import make_synthetic, write_tsv
from hpc.schedulers import Sge, Slurm, time_limit_seconds
from memfit.units import MiB

#: Scales the modelled run times so that tasks of tiny data are sized above the floor.
TIME_SCALE = {"DCOEX_TEST_TIME_SCALE_02B": "1000", "DCOEX_TEST_TIME_SCALE_03": "1000"}


def _model_limit(seconds: float, bound: str = "24:00:00") -> int:
    """The limit (seconds) the driver should ask for a modelled run time: × safety, whole
    minutes, floor, bound (written out here, independent of sizing.time_for)."""
    minutes = -(-seconds * TIME_SAFETY // 60)
    return int(min(max(TIME_FLOOR_SECONDS, 60 * minutes), time_limit_seconds(bound)))

ARGS = ["--n-bootstrap", "20", "--seed", "5", "--genes-per-task", "1", "--fdr-alpha", "0.1"]
DIRS = {"02a": "base_correlations", "02b": "bootstrap_significant", "03": "networks"}


@pytest.fixture(scope="module")
def rewired(tmp_path_factory):
    """240 genes × 60 samples with one modulator whose module of 150 genes is co-expressed only in
    its HIGH group (11,175 planted pairs); reference genes: the modulator and a noise gene.
    Stages 00, 01, 02a have run locally (so 02b and 03 are planned from real 02a counts)."""
    base = tmp_path_factory.mktemp("rewired")
    data = make_synthetic(240, 60, seed=3, n_modulators=1, module_size=150, strength=4.0)
    tsv = write_tsv(base / "expr.tsv", data)
    big = data.modulators[0]
    small = next(g for g in range(240) if g != big and g not in data.modules[big])
    subset = base / "subset.txt"
    subset.write_text(f"index:{big}\nindex:{small}\n")
    out = base / "run"
    done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", out, *ARGS, "--gene-subset", subset,
                                "--local", "--stages", "00,01,02a"], timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    names = data.gene_names
    edges = {}
    for g in (big, small):  # independent of the attribute the driver reads: the stored edge table
        with h5py.File(gene_file_path(out / DIRS["02a"], g, names[g], 240), "r") as f:
            edges[g] = stored_edge_count(f)
    return {"tsv": tsv, "out": out, "subset": subset, "big": big, "small": small, "edges": edges, "names": names}


def _options(r, *extra, scheduler="slurm"):
    return parse_args(["--expr-tsv", str(r["tsv"]), "--out-dir", str(r["out"]), *ARGS, "--gene-subset",
                       str(r["subset"]), *map(str, extra)], scheduler)


def test_time_model_floor_safety_and_upper_bound(monkeypatch):
    """02b: fixed parts + per edge·replicate the statistics and min(1/density, 24) product
    pairs of k_r,L + k_r,H samples + per replicate the genes its tiles rank; 03: fixed parts +
    edges; the task's genes add up (they run one after another); × safety, floor, bound."""
    n, b = 12_625, 1000
    shape = DataShape(n, 128, ())
    params = {"n_bootstrap": b, "low_frac": 0.2, "high_frac": 0.2, "bootstrap_frac": 0.8}  # k = 25, k_r = 20
    tile = e02b.max_chunk(b)
    band = 8 * tile  # B = 1,000: bands of 8 tiles
    big, pairs = 30 * tile + 10, n * (n - 1) // 2
    big_genes = 31 * min(n, -(-band * n // big) - (-n // 8))  # 31 tiles: the band's rows + an eighth of the columns
    seconds = (e02b.TASK_FIXED_SECONDS + 2 * e02b.GENE_FIXED_SECONDS
               + b * big * (e02b.SECONDS_PER_EDGE_REPLICATE + e02b.SECONDS_PER_PAIR_SAMPLE_REPLICATE * 40 * pairs / big)
               + b * 100 * (e02b.SECONDS_PER_EDGE_REPLICATE + e02b.SECONDS_PER_PAIR_SAMPLE_REPLICATE * 40 * 24)
               + e02b.SECONDS_PER_TILE_GENE_SAMPLE_REPLICATE * 40 * b * (big_genes + 200))
    t = time_for("02b", params, [big, 100], shape=shape, bound="99:00:00")
    assert t.seconds == pytest.approx(seconds)
    assert time_limit_seconds(t.time_limit) == _model_limit(seconds, "99:00:00") > TIME_FLOOR_SECONDS
    # larger resamples cost more: k = 187 (938 samples)
    wide = time_for("02b", params, [big, 100], shape=DataShape(n, 938, ()), bound="99:00:00")
    assert wide.seconds > 3 * t.seconds
    t03 = time_for("03", {}, [7_000_000, 10], shape=shape, bound="24:00:00")
    assert t03.seconds == pytest.approx(e03.TASK_FIXED_SECONDS + 2 * e03.GENE_FIXED_SECONDS
                                        + e03.SECONDS_PER_EDGE * 7_000_010)
    assert time_limit_seconds(t03.time_limit) == _model_limit(t03.seconds)
    # a tiny gene gets the floor; the user's limit (the bound) caps everything
    assert time_limit_seconds(time_for("03", {}, [5], shape=shape, bound="24:00:00").time_limit) == TIME_FLOOR_SECONDS
    assert time_for("02b", params, [big], shape=shape, bound="00:20:00").time_limit == "00:20:00"
    assert time_for("03", {}, [5], shape=shape, bound="00:05:00").time_limit == "00:05:00"
    # more edges never ask for less
    limits = [time_limit_seconds(time_for("02b", params, [e], shape=shape, bound="999:00:00").time_limit)
              for e in (10**2, 10**4, 10**6, 10**7, 3 * 10**7)]
    assert limits == sorted(limits) and limits[-1] > limits[0]
    assert time_for("03", {}, [5], shape=shape, bound="24:00:00", scale=10).seconds == pytest.approx(
        10 * (e03.TASK_FIXED_SECONDS + e03.GENE_FIXED_SECONDS + 5 * e03.SECONDS_PER_EDGE))
    monkeypatch.setenv("DCOEX_TEST_TIME_SCALE_03", "10")
    assert time_scale_knob("03") == 10 and time_scale_knob("02b") is None
    # SLURM changes any difference in place; SGE moves a task for a longer limit only
    assert worth_retiming("01:00:00", "00:59:00", in_place=True)
    assert not worth_retiming("01:00:00", "01:00:00", in_place=True)
    assert not worth_retiming("01:00:00", "00:10:00", in_place=False)
    assert worth_retiming("01:00:00", "01:01:00", in_place=False)


def test_02b_and_03_are_sized_from_the_02a_counts_of_their_genes(rewired, monkeypatch):
    monkeypatch.setenv("DCOEX_MIN_REQUEST", "0")  # the sizes themselves, not SLURM's floor
    for name, value in TIME_SCALE.items():
        monkeypatch.setenv(name, value)
    big, small = rewired["big"], rewired["small"]
    assert rewired["edges"][big] >= 11_175 > 50 * max(rewired["edges"][small], 1)
    plan = make_plan(_options(rewired, "--stages", "02b,03,03b"), Slurm(dry_run=True))
    task_of = {genes[0]: t for t, genes in plan.task_genes.items()}
    assert plan.selected_edges == {big: rewired["edges"][big], small: rewired["edges"][small]}
    for stage in ("02b", "03"):
        p = plan.stages[stage]
        assert p.sizing == "02a edge counts"
        assert p.requested_bytes == max(p.task_requests.values())  # the array asks for its largest task
        assert f"{stage}: memory from 02a edge counts" in plan.table()
    # 03 holds the network's edges: the gene with more edges asks for more
    requests = plan.stages["03"].task_requests
    assert requests[task_of[big]] > requests[task_of[small]]
    # 02b holds one tile of edges (× B replicates): more edges ask for more only up to the tile
    boot = plan.stages["02b"]
    assert boot.task_requests[task_of[big]] >= boot.task_requests[task_of[small]]
    tile = boot.raw_estimate.params["edge_chunk"]
    assert tile <= rewired["edges"][big] and boot.raw_estimate.params["n_edges"] == rewired["edges"][big]
    # time limits: each task's from its gene's count, the array asks for the longest
    edges = rewired["edges"]
    for stage, p in plan.stages.items():
        if stage not in ("02b", "03"):
            assert not p.task_time_limits and p.time_limit == "24:00:00"
            continue
        model = {g: 1000 * (e02b.runtime_seconds(n_genes=240, gene_edges=[edges[g]], n_bootstrap=20, kr_low=9,
                                                 kr_high=9) if stage == "02b"
                            else e03.runtime_seconds(gene_edges=[edges[g]])) for g in (big, small)}
        limits = {g: time_limit_seconds(p.task_time_limits[task_of[g]]) for g in (big, small)}
        assert limits == {g: _model_limit(model[g]) for g in (big, small)}, stage
        assert limits[big] > limits[small] >= TIME_FLOOR_SECONDS, (stage, limits)
        assert time_limit_seconds(p.time_limit) == limits[big] and p.time_limit_bound == "24:00:00"
    # planned before 02a: the bound, marked as such
    fresh = make_plan(_options(rewired, "--force"), Slurm(dry_run=True))
    assert fresh.stages["02b"].sizing.startswith("bound") and not fresh.stages["02b"].task_requests
    # pending 02a, SLURM asks for the bound (it lowers each task later; a user cannot raise a
    # limit), SGE for the modelled time of the planning bound of edges (a task moves for more)
    fresh_sge = make_plan(_options(rewired, "--force", scheduler="sge"), Sge(dry_run=True))
    for stage in ("02b", "03"):
        assert fresh.stages[stage].time_limit == "24:00:00" and not fresh.stages[stage].task_time_limits
        bound_edges = min(240 * 239 // 2, PLAN_EDGES)
        model = 1000 * (e02b.runtime_seconds(n_genes=240, gene_edges=[bound_edges], n_bootstrap=20, kr_low=9,
                                             kr_high=9) if stage == "02b"
                        else e03.runtime_seconds(gene_edges=[bound_edges]))
        assert time_limit_seconds(fresh_sge.stages[stage].time_limit) == _model_limit(model) < 24 * 3600, stage
        assert fresh_sge.stages[stage].time_limit_bound == "24:00:00"
    assert "* upper bound for tasks whose 02a edge counts are not known yet (pending 02a)" in fresh.table()
    # --force rewrites every output there is: their space comes back as the run goes
    out = rewired["out"]
    existing = [p for p in out.rglob("*") if p.suffix in (".h5", ".tsv") and ".dcoex" not in p.parts]
    assert len(existing) >= 4 and fresh.replaced_bytes == sum(p.stat().st_size for p in existing)


def test_submission_gives_each_sized_task_its_own_request(rewired, monkeypatch):
    """SLURM: the array asks for its largest task; the smaller task is lowered before it can
    start (scontrol update ... MinMemoryNode, printed by the dry run)."""
    monkeypatch.setenv("DCOEX_MIN_REQUEST", "0")
    done = run_driver("slurm", ["--expr-tsv", rewired["tsv"], "--out-dir", rewired["out"], *ARGS, "--gene-subset",
                                rewired["subset"], "--stages", "02b,03,03b", "--dry-run"],
                      env={"DCOEX_MIN_REQUEST": "0", **TIME_SCALE})
    assert done.returncode == 0, done.stderr
    for name, value in TIME_SCALE.items():
        monkeypatch.setenv(name, value)
    plan = make_plan(_options(rewired, "--stages", "02b,03,03b"), Slurm(dry_run=True))
    small_task = next(t for t, genes in plan.task_genes.items() if genes == [rewired["small"]])
    big_task = next(t for t, genes in plan.task_genes.items() if genes == [rewired["big"]])
    for stage, job in (("02b", "DRYRUN1"), ("03", "DRYRUN3")):
        p = plan.stages[stage]
        mib = -(-p.task_requests[small_task] // MiB)
        assert f"scontrol update JobId={job}_{small_task} MinMemoryNode={mib}" in done.stdout, done.stdout
        # the array asks for the longest task's time; the shorter one is lowered before it starts
        assert f"--time={p.task_time_limits[big_task]}" in done.stdout
        assert f"scontrol update JobId={job}_{small_task} TimeLimit={p.task_time_limits[small_task]}" in done.stdout
        assert f"JobId={job}_{big_task} TimeLimit" not in done.stdout


def test_disk_is_checked_again_from_the_real_counts_after_02a(rewired):
    """What the 02a finaliser checks: the 02b, 03 and 03b bytes of the genes still to be written,
    from 02a's real counts, against the free space (given here)."""
    from dcoex.pipeline.disk import check_after_02a
    from dcoex.stages.s02b_bootstrap_edges.estimator import output_bytes as out02b
    from dcoex.stages.s03_network.estimator import output_bytes as out03
    from dcoex.stages.s03b_collect.estimator import output_bytes as out03b
    from hpc.manifest import read_manifest

    out = rewired["out"]
    manifest = read_manifest(out)
    expected = sum(out02b(n_genes=240, n_edges=e, n_boot=20) + out03(n_genes=240, n_edges=e)
                   for e in rewired["edges"].values()) + out03b(240, 2)
    record, refusal = check_after_02a(out, manifest, stages=["02b", "03", "03b"], free=10**12)
    assert refusal is None and record["ok"] and record["genes_counted"] == 2
    assert record["needed_bytes"] == expected
    record, refusal = check_after_02a(out, manifest, stages=["02b", "03", "03b"], free=expected - 1)
    assert refusal.startswith("not enough disk after 02a: the outputs need ") and not record["ok"]
    assert not record["ignored"]
    manifest["parameters"]["ignore_disk_check"] = True
    assert check_after_02a(out, manifest, stages=["03b"], free=1)[0]["ignored"]
    assert check_after_02a(out, manifest, stages=[]) == (None, None)


def test_output_bytes_predict_the_files_a_run_writes(rewired):
    """Each stage's prediction from its edge count against the file the stage wrote: within
    -20 % .. +100 % (upper estimates), for the gene with many edges and the one with few."""
    from dcoex.stages.s00_convert.estimator import output_bytes as out00
    from dcoex.stages.s02a_base_correlations.estimator import output_bytes as out02a
    from dcoex.stages.s02b_bootstrap_edges.estimator import output_bytes as out02b
    from dcoex.stages.s03_network.estimator import output_bytes as out03

    out = rewired["out"]
    done = run_driver("slurm", ["--expr-tsv", rewired["tsv"], "--out-dir", out, *ARGS, "--gene-subset",
                                rewired["subset"], "--local"], timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    size = (out / "expression.h5").stat().st_size
    assert 0.8 * size <= out00(240, 60) <= 2 * size
    g = rewired["big"]
    e = rewired["edges"][g]
    with h5py.File(gene_file_path(out / DIRS["02a"], g, rewired["names"][g], 240), "r") as f:
        k = int(f["meta"].attrs["k_low"]), int(f["meta"].attrs["k_high"])
    for stage, predicted in (("02a", out02a(240, e, k_low=k[0], k_high=k[1])),
                             ("02b", out02b(n_genes=240, n_edges=e, n_boot=20)),
                             ("03", out03(n_genes=240, n_edges=e))):
        size = gene_file_path(out / DIRS[stage], g, rewired["names"][g], 240).stat().st_size
        assert 0.8 * size <= predicted <= 2 * size, (stage, predicted, size)


def test_plan_table_shows_disk_per_stage_and_in_total(tmp_path, monkeypatch):
    tsv = write_dataset(tmp_path / "expr.tsv", n_genes=40, n_samples=60)
    plan = make_plan(parse_args(["--expr-tsv", str(tsv), "--out-dir", str(tmp_path / "run"), "--fdr-alpha", "0.3"],
                                "slurm"), Slurm(dry_run=True))
    table = plan.table()
    assert table.splitlines()[0].split()[-1] == "disk"
    assert set(plan.disk) == {"00", "01", "02a", "02b", "03", "03b", "04", "05"}
    # 00 writes at least the float32 matrix; per-gene stages before 02a: expected below the bound
    assert plan.disk["00"].expected_bytes >= 40 * 60 * 4
    for stage in ("02a", "02b", "03"):
        d = plan.disk[stage]
        assert d.basis == "assumed density" and d.expected_bytes < d.bound_bytes
    total = [line for line in table.splitlines() if line.startswith("total")]
    assert len(total) == 1
    from memfit.units import format_bytes

    assert format_bytes(sum(d.expected_bytes for d in plan.disk.values())) in total[0]
    assert "expected at" in table and "alpha 0.3" in table and "disk free on" in table


def test_expected_density_is_the_measured_real_median():
    """docs/realistic_data.md: the real set's median density, 19 % of pairs at alpha 0.7 and
    0.066 % at 0.05; never above every pair."""
    assert expected_edge_fraction(0.7) == pytest.approx(0.19)
    assert expected_edge_fraction(0.05) == pytest.approx(0.00066, rel=0.15)
    assert expected_edge_fraction(1.0) <= 1.0 and expected_edge_fraction(0.01) < expected_edge_fraction(0.05)


def test_disk_refusal_with_given_free_bytes():
    assert disk_refusal(10 * MiB, 10 * MiB, path="/data/run") is None
    line = disk_refusal(10 * MiB + 1, 10 * MiB, path="/data/run", bound_bytes=50 * MiB)
    assert line is not None and "\n" not in line
    assert "need 10.00 MiB (expected; upper bound 50.00 MiB)" in line
    assert "/data/run has 10.00 MiB free" in line and "--ignore-disk-check" in line
    # outputs the run rewrites give their space back
    assert disk_refusal(10 * MiB + 1, 10 * MiB, path="/data/run", replaced_bytes=1) is None
    assert "(+ 1.00 MiB of outputs it replaces)" in disk_refusal(12 * MiB, 10 * MiB, path="/d", replaced_bytes=MiB)


def test_refusal_on_a_small_file_system_and_the_override(tmp_path, small_disk):  # noqa: F811
    """A 3 MiB tmpfs cannot hold a 400-gene run: one line, exit 2, nothing written; with
    --ignore-disk-check the plan goes on (a dry run here)."""
    tsv = write_dataset(tmp_path / "expr.tsv", n_genes=400, n_samples=60)
    out = small_disk / "run"
    args = [sys.executable, "-m", "dcoex.pipeline", "--scheduler", "slurm", "--expr-tsv", str(tsv),
            "--out-dir", str(out), "--local", "--fdr-alpha", "0.3"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run_bootstrap_pipeline: error: not enough disk: the outputs "
                                                   "need "), done.stderr
    assert f"but {out} has " in lines[0] and "MiB free" in lines[0]
    assert not out.exists()
    done = subprocess.run([*args, "--ignore-disk-check", "--dry-run"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "check skipped: --ignore-disk-check" in done.stdout
