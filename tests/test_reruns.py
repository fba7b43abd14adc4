"""Reruns are exact: a changed parameter or input recomputes exactly the outputs computed from
it, they equal a fresh run with the new setting, and a setting that does not change content
recomputes nothing. Which stages each change touches is written out here from the science
(what each stage reads), not taken from the code."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import pytest
from cluster_util import assert_same_outputs, run_driver, write_dataset

BASE = ["--n-bootstrap", "20", "--genes-per-task", "8", "--seed", "3", "--fdr-alpha", "0.05"]
N_GENES = 16
#: Outputs per stage: a whole file, or a folder of one file per reference gene.
OUTPUTS = {"00": "expression.h5", "01": "bootstrap_indices.h5", "02a": "base_correlations",
           "02b": "bootstrap_significant", "03": "networks", "03b": "differential_network_summary.h5"}
#: What each stage reads (the dependency graph of the science).
READS = {"00": set(), "01": {"00"}, "02a": {"00", "01:groups"}, "02b": {"00", "01:boot", "02a"},
         "03": {"02a", "02b"}, "03b": {"03"}}


def _downstream(changed: set[str]) -> set[str]:
    """Stages whose outputs change when the ``changed`` stage outputs (or 01 parts) change."""
    touched = set(changed)
    grew = True
    while grew:
        grew = False
        for stage, reads in READS.items():
            if stage not in touched and reads & touched:
                touched.add(stage)
                grew = True
    return {s for s in touched if s in OUTPUTS}


def _files(out: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """(inode, mtime) of every output file, per stage: an atomic rewrite gives a new inode."""
    found: dict[str, dict[str, tuple[int, int]]] = {}
    for stage, rel in OUTPUTS.items():
        path = out / rel
        paths = sorted(path.glob("*.h5")) if path.is_dir() else [path]
        found[stage] = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths if p.exists()}
    return found


def _rewritten(before: dict, after: dict) -> dict[str, int]:
    """Per stage, how many output files were written again (or newly)."""
    return {s: sum(1 for name, key in after[s].items() if before[s].get(name) != key) for s in after}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    base = tmp_path_factory.mktemp("reruns")
    tsv = write_dataset(base / "expr.tsv", n_genes=N_GENES, n_samples=40)
    out = base / "run"
    done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", out, *BASE, "--local"], timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return tsv, out


def _rerun(baseline, tmp_path, args: list[str], tsv: Path | None = None):
    """Copy the baseline, rerun with ``args`` replacing the base flags; return (out, dry-run
    text, files rewritten per stage)."""
    src_tsv, src = baseline
    out = tmp_path / "rerun"
    shutil.copytree(src, out, copy_function=shutil.copy2)
    flags = dict(zip(BASE[0::2], BASE[1::2]))
    extra: list[str] = []
    i = 0
    while i < len(args):
        if i + 1 < len(args) and not args[i + 1].startswith("--"):
            flags[args[i]] = args[i + 1]
            i += 2
        else:
            extra.append(args[i])
            i += 1
    argv = ["--expr-tsv", tsv or src_tsv, "--out-dir", out, *[x for kv in flags.items() for x in kv], *extra]
    dry = run_driver("slurm", [*argv, "--local", "--dry-run"])
    assert dry.returncode == 0, dry.stdout + dry.stderr
    before = _files(out)
    done = run_driver("slurm", [*argv, "--local"], timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return out, argv, dry.stdout, _rewritten(before, _files(out))


def _fresh(tmp_path, argv: list[str]) -> Path:
    out = tmp_path / "fresh"
    fresh_argv = [str(a) for a in argv]
    fresh_argv[fresh_argv.index("--out-dir") + 1] = str(out)
    done = run_driver("slurm", [*fresh_argv, "--local"], timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def _expected_counts(stages: set[str]) -> dict[str, int]:
    per_gene = {"02a", "02b", "03"}
    return {s: (N_GENES if s in per_gene else 1) if s in stages else 0 for s in OUTPUTS}


@pytest.mark.slow
@pytest.mark.parametrize(("args", "changed", "why"), [
    (["--fdr-alpha", "0.3"], {"02a"}, "fdr_alpha 0.05 → 0.3"),
    (["--edge-selection", "sig_edges"], {"02b"}, "edge_selection sig_differential → sig_edges"),
    (["--ci-alpha", "0.2"], {"02b"}, "ci_alpha 0.05 → 0.2"),
    (["--boot-precision", "compact"], {"02b"}, "boot_precision (unset) → compact"),
    (["--corr-threshold", "0.3"], {"03"}, "corr_threshold 0.0001 → 0.3"),
    (["--min-effect", "0.2"], {"03"}, "min_effect 0 → 0.2"),
    (["--n-bootstrap", "30"], {"01:boot"}, "n_bootstrap 20 → 30"),
    (["--low-frac", "0.3"], {"01:groups", "01:boot"}, "low_frac 0.2 → 0.3"),
])
def test_parameter_change_recomputes_exactly_its_downstream(baseline, tmp_path, args, changed, why):
    out, argv, plan, rewritten = _rerun(baseline, tmp_path, args)
    stages = _downstream(changed) | ({"01"} if any(c.startswith("01") for c in changed) else set())
    assert rewritten == _expected_counts(stages), plan
    first = min(stages, key=list(OUTPUTS).index)
    assert f"{first}: runs ({why}" in plan, plan
    for s in set(OUTPUTS) - stages - {"00"}:
        assert f"{s}: skipped (current" in plan, plan
    assert_same_outputs(_fresh(tmp_path, argv), out)


def test_downstream_helper_follows_the_reads():
    """The expectation helper itself: 01's bootstrap draws do not reach 02a; its groups do."""
    assert _downstream({"01:boot"}) == {"02b", "03", "03b"}
    assert _downstream({"01:groups"}) == {"02a", "02b", "03", "03b"}
    assert _downstream({"03"}) == {"03", "03b"}


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--batch-size", "3"], ["--slots", "2"], ["--genes-per-task", "5"],
                                  ["--mem-safety", "0.5"]])
def test_non_content_change_recomputes_nothing(baseline, tmp_path, args):
    out, _, plan, rewritten = _rerun(baseline, tmp_path, args)
    assert "nothing to do" in plan, plan
    assert rewritten == _expected_counts(set()), plan


@pytest.mark.slow
def test_input_edit_reruns_everything_and_equals_a_fresh_run(baseline, tmp_path):
    src_tsv, _ = baseline
    edited = tmp_path / "edited.tsv"
    lines = src_tsv.read_text().splitlines()
    cells = lines[5].split("\t")
    cells[3] = str(float(cells[3]) + 2.5)
    lines[5] = "\t".join(cells)
    edited.write_text("\n".join(lines) + "\n")
    out, argv, plan, rewritten = _rerun(baseline, tmp_path, [], tsv=edited)
    assert rewritten == _expected_counts(set(OUTPUTS)), plan
    assert "00: runs (input tsv changed" in plan, plan
    assert_same_outputs(_fresh(tmp_path, argv), out)


def _stage(module: str, *args) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", module, *map(str, args), "--quiet"], capture_output=True, text=True,
                          env=dict(os.environ))
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_upstream_file_recomputed_for_one_gene_is_noticed(baseline, tmp_path):
    """A user reruns 02a and 02b by hand for gene 3 with another alpha: the driver puts back
    exactly gene 3's 02a and 02b (its network and the summary were made from the run's)."""
    src_tsv, src = baseline
    out = tmp_path / "rerun"
    shutil.copytree(src, out, copy_function=shutil.copy2)
    common = ["--expr-h5", out / "expression.h5", "--indices-h5", out / "bootstrap_indices.h5"]
    _stage("dcoex.stages.s02a_base_correlations", *common, "--out-dir", out / OUTPUTS["02a"],
           "--gene-index", 3, "--fdr-alpha", 0.3)
    _stage("dcoex.stages.s02b_bootstrap_edges", *common, "--base-dir", out / OUTPUTS["02a"],
           "--out-dir", out / OUTPUTS["02b"], "--gene-index", 3)
    argv = ["--expr-tsv", src_tsv, "--out-dir", out, *BASE]
    dry = run_driver("slurm", [*argv, "--local", "--dry-run"])
    assert "02a: runs (fdr_alpha 0.3 → 0.05 (1 of 16 genes))" in dry.stdout, dry.stdout
    assert "02b: runs (input base_correlations changed (1 of 16 genes))" in dry.stdout, dry.stdout
    assert "03: skipped (current" in dry.stdout, dry.stdout
    before = _files(out)
    done = run_driver("slurm", [*argv, "--local"], timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _rewritten(before, _files(out)) == {"00": 0, "01": 0, "02a": 1, "02b": 1, "03": 0, "03b": 0}
    assert_same_outputs(src, out)


@pytest.mark.slow
def test_interrupted_rerun_leaves_no_mixed_out_dir(baseline, tmp_path):
    """A rerun with a new alpha killed after part of 02a: the next rerun finishes exactly the
    genes still made with the old alpha (and everything after them) and equals a fresh run."""
    src_tsv, src = baseline
    out = tmp_path / "rerun"
    shutil.copytree(src, out, copy_function=shutil.copy2)
    common = ["--expr-h5", out / "expression.h5", "--indices-h5", out / "bootstrap_indices.h5"]
    _stage("dcoex.stages.s02a_base_correlations", *common, "--out-dir", out / OUTPUTS["02a"],
           "--gene-range", "0:6", "--fdr-alpha", 0.3, "--force")  # what the killed rerun got done
    argv = ["--expr-tsv", src_tsv, "--out-dir", out, *BASE[:-2], "--fdr-alpha", "0.3"]
    dry = run_driver("slurm", [*argv, "--local", "--dry-run"])
    assert "02a: runs (fdr_alpha 0.05 → 0.3 (10 of 16 genes))" in dry.stdout, dry.stdout
    before = _files(out)
    done = run_driver("slurm", [*argv, "--local"], timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    rewritten = _rewritten(before, _files(out))
    assert rewritten["02a"] == 10 and rewritten["02b"] == N_GENES and rewritten["03b"] == 1
    for path in (out / OUTPUTS["02a"]).glob("*.h5"):
        with h5py.File(path, "r") as f:
            assert float(f["provenance"].attrs["param:fdr_alpha"]) == 0.3
    assert_same_outputs(_fresh(tmp_path, argv), out)


@pytest.mark.parametrize("stage", ["00", "01", "03b"])
def test_whole_stage_run_by_hand_keeps_a_current_output(baseline, tmp_path, stage):
    """The stage itself applies the same rule as the planner: a current output is kept (same
    file), a changed parameter or --force rewrites it."""
    src_tsv, src = baseline
    out = tmp_path / "copy"
    shutil.copytree(src, out, copy_function=shutil.copy2)
    target = out / OUTPUTS[stage]
    args = {
        "00": ["dcoex.stages.s00_convert", "--expr-tsv", src_tsv, "--out-h5", target],
        "01": ["dcoex.stages.s01_bootstrap_indices", "--in-h5", out / OUTPUTS["00"], "--out-h5", target,
               "--n-bootstrap", 20, "--seed", 3],
        "03b": ["dcoex.stages.s03b_collect", "--networks-dir", out / OUTPUTS["03"], "--out-h5", target,
                "--out-focus-tsv", out / "rewiring_hubs.tsv"],
    }[stage]
    inode = target.stat().st_ino
    _stage(*args)
    assert target.stat().st_ino == inode, "a current output was rewritten"
    _stage(*args, "--force")
    assert target.stat().st_ino != inode
    if stage == "01":
        inode = target.stat().st_ino
        _stage(*args[:-1], 4)  # another seed
        assert target.stat().st_ino != inode
        with h5py.File(target, "r") as f:
            assert int(f["provenance"].attrs["param:seed"]) == 4
    if stage == "03b":
        (out / "rewiring_hubs.tsv").write_text("edited\n")
        inode = target.stat().st_ino
        _stage(*args)
        assert target.stat().st_ino != inode and (out / "rewiring_hubs.tsv").read_text() != "edited\n"
