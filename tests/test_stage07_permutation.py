"""Stages 07/08: the permutation null and its p-values against a naive implementation (scipy,
statsmodels, loops), calibration on noise, planted modulators, task-split invariance, resume,
bad input, and the memory estimates against measured peaks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from util_stage07 import build_run, null_values, pvalues

from dcoex.stages.s07_permutation_null.science import METRICS, SIDES
from dcoex.synthetic import make_synthetic

TAU = 1e-4


# ----------------------------------------------------------------------------- naive reference


def naive_edges(x_low: np.ndarray, x_high: np.ndarray, alpha: float) -> list[tuple]:
    """(i, j, r_low, r_high, sig_low, sig_high) of every pair with BH q_diff < alpha: scipy
    Spearman, t-test, Fisher z, statsmodels fdr_bh over all N(N-1)/2 pairs per family."""
    n, k_low = x_low.shape
    k_high = x_high.shape[1]
    r_low = stats.spearmanr(x_low.T).statistic
    r_high = stats.spearmanr(x_high.T).statistic
    iu = np.triu_indices(n, 1)
    rl, rh = r_low[iu], r_high[iu]

    def t_p(r, k):
        t = r * np.sqrt((k - 2) / (1 - r * r))
        return 2 * stats.t.sf(np.abs(t), k - 2)

    z = (np.arctanh(np.clip(rh, -0.9999, 0.9999)) - np.arctanh(np.clip(rl, -0.9999, 0.9999))) / np.sqrt(
        1 / (k_low - 3) + 1 / (k_high - 3))
    q_low = multipletests(t_p(rl, k_low), alpha=alpha, method="fdr_bh")[1]
    q_high = multipletests(t_p(rh, k_high), alpha=alpha, method="fdr_bh")[1]
    q_diff = multipletests(2 * stats.norm.sf(np.abs(z)), alpha=alpha, method="fdr_bh")[1]
    return [(int(iu[0][e]), int(iu[1][e]), rl[e], rh[e], q_low[e] < alpha, q_high[e] < alpha)
            for e in range(rl.size) if q_diff[e] < alpha]


def naive_metrics(edges: list[tuple], g: int) -> dict[str, float]:
    """Stage 03's L1 metrics of focus g and |E| (docs/design.md §4.7, §4.9), by loops."""
    count = {c: 0 for c in ("disappear", "new", "sign_change", "strengthen", "weaken", "unchanged")}
    deg = n_low = n_high = 0
    conn_low = conn_high = conn_diff = sum_delta = 0.0
    for i, j, rl, rh, sl, sh in edges:
        if g not in (i, j):
            continue
        deg += 1
        pl, ph = sl and abs(rl) >= TAU, sh and abs(rh) >= TAU
        if pl and not ph:
            cls = "disappear"
        elif ph and not pl:
            cls = "new"
        elif pl and ph and np.sign(rl) != np.sign(rh):
            cls = "sign_change"
        elif pl and ph and abs(rh) > abs(rl):
            cls = "strengthen"
        elif pl and ph and abs(rh) < abs(rl):
            cls = "weaken"
        else:
            cls = "unchanged"
        count[cls] += 1
        n_low += pl
        n_high += ph
        conn_low += abs(rl) if pl else 0.0
        conn_high += abs(rh) if ph else 0.0
        conn_diff += abs(rh - rl)
        sum_delta += rh - rl

    def ratio(a, b):
        return a / b if b else np.nan

    rewire = count["disappear"] + count["new"] + count["sign_change"]
    return {
        "n_sig_edges_diff": len(edges), "focus_deg_low": n_low, "focus_deg_high": n_high, "L1_n_nodes": deg,
        "L1_n_disappear": count["disappear"], "L1_n_new": count["new"], "L1_n_sign_chg": count["sign_change"],
        "L1_n_strengthen": count["strengthen"], "L1_n_weaken": count["weaken"], "L1_rewire": rewire,
        "L1_frac_disappear": ratio(count["disappear"], deg), "L1_frac_new": ratio(count["new"], deg),
        "L1_frac_rewire": ratio(rewire, deg), "L1_conn_low": conn_low, "L1_conn_high": conn_high,
        "L1_conn_diff": conn_diff, "L1_conn_mean_low": ratio(conn_low, n_low),
        "L1_conn_mean_high": ratio(conn_high, n_high), "L1_mean_abs_dr": ratio(conn_diff, deg),
        "L1_mean_delta": ratio(sum_delta, deg), "L1_n_edges_low": n_low, "L1_n_edges_high": n_high,
        "HL_conn_L1": ratio(conn_high, conn_low),
    }


def naive_split(n_samples: int, k_low: int, k_high: int, seed: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """The documented rule: PCG64(SeedSequence(seed, spawn_key=(7, b))).choice without replacement."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(7, b))))
    draw = rng.choice(n_samples, size=k_low + k_high, replace=False)
    return draw[:k_low], draw[k_low:]


def statistic(x, side):
    if side == "upper":
        return x
    if side == "abs":
        return abs(x)
    with np.errstate(divide="ignore"):
        return abs(np.log(x)) if x == x else np.nan


def read_pvalues(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f["per_gene"][k][...] for k in f["per_gene"]}


# ----------------------------------------------------------------------------- tests


def test_pvalues_and_qvalues_equal_a_naive_implementation(tmp_path):
    data = make_synthetic(12, 50, seed=3, n_modulators=1, module_size=5)
    alpha, seed, n_perm = 0.5, 5, 40
    out = build_run(tmp_path / "run", data.matrix, fdr_alpha=alpha, seed=seed)
    null_values(out, n_permutations=n_perm, perms_per_task=7, fdr_alpha=alpha, seed=seed)
    pvalues(out, n_permutations=n_perm, perms_per_task=7)
    got = read_pvalues(out / "permutation_pvalues.h5")

    x = data.matrix.astype(np.float64)
    n, s = x.shape
    with h5py.File(out / "bootstrap_indices.h5", "r") as f:
        low, high = f["indices/low"][...], f["indices/high"][...]
    k_low, k_high = low.shape[1], high.shape[1]
    observed = [naive_metrics(naive_edges(x[:, low[g]], x[:, high[g]], alpha), g) for g in range(n)]
    null = []
    for b in range(n_perm):
        a, bb = naive_split(s, k_low, k_high, seed, b)
        edges = naive_edges(x[:, a], x[:, bb], alpha)
        null.append([naive_metrics(edges, g) for g in range(n)])
    assert list(got["gene_index"]) == list(range(n))
    for m in METRICS:
        obs = np.array([o[m] for o in observed], dtype=float)
        np.testing.assert_allclose(got[f"obs_{m}"], obs, rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=m)
        p = np.full(n, np.nan)
        for g in range(n):
            t = statistic(obs[g], SIDES[m])
            if t != t:
                continue
            values = [statistic(null[b][g][m], SIDES[m]) for b in range(n_perm)]
            defined = [v for v in values if v == v]
            p[g] = (1 + sum(v >= t for v in defined)) / (1 + len(defined))
        np.testing.assert_allclose(got[f"pval_{m}"], p, rtol=1e-12, equal_nan=True, err_msg=m)
        q = np.full(n, np.nan)
        finite = ~np.isnan(p)
        if finite.any():
            q[finite] = multipletests(p[finite], method="fdr_bh")[1]
        np.testing.assert_allclose(got[f"qval_{m}"], q, rtol=1e-12, equal_nan=True, err_msg=m)
    assert np.nanmin(got["pval_n_sig_edges_diff"]) == pytest.approx(1 / (n_perm + 1))


def test_observed_values_are_stage03_without_the_ci_filter(tmp_path):
    data = make_synthetic(30, 80, seed=2, n_modulators=1, module_size=8)
    out = build_run(tmp_path / "run", data.matrix, fdr_alpha=0.3, ci_filter=False)
    null_values(out, n_permutations=4, perms_per_task=4, fdr_alpha=0.3)
    pvalues(out, n_permutations=4, perms_per_task=4)
    got = read_pvalues(out / "permutation_pvalues.h5")
    with h5py.File(out / "differential_network_summary.h5", "r") as f:
        for m in METRICS:
            np.testing.assert_allclose(got[f"obs_{m}"], f["per_gene"][m][...].astype(float), rtol=1e-9,
                                       equal_nan=True, err_msg=m)
    assert np.nansum(got["obs_L1_n_nodes"]) > 0


def test_noise_gives_calibrated_pvalues_and_no_discoveries(tmp_path):
    rng = np.random.default_rng(11)
    matrix = rng.normal(8, 1, size=(40, 100))
    out = build_run(tmp_path / "run", matrix, fdr_alpha=0.5, seed=2)
    null_values(out, n_permutations=99, perms_per_task=50, fdr_alpha=0.5, seed=2)
    pvalues(out, n_permutations=99, perms_per_task=50)
    got = read_pvalues(out / "permutation_pvalues.h5")
    for m in ("n_sig_edges_diff", "L1_n_nodes", "focus_deg_low", "L1_conn_diff"):
        p = got[f"pval_{m}"][~np.isnan(got[f"pval_{m}"])]
        assert p.size >= 30, m
        # not anti-conservative: the empirical CDF does not rise above the uniform one
        assert stats.kstest(p, "uniform", alternative="greater").pvalue > 0.01, m
    for m in METRICS:
        assert np.sum(got[f"qval_{m}"] < 0.05) <= 1, m
    spread = got["pval_n_sig_edges_diff"]
    assert 0.05 < np.mean(spread <= 0.5) < 0.95  # the null of |E| is not degenerate here


def test_planted_modulators_reach_q_below_005(tmp_path):
    data = make_synthetic(60, 150, seed=1, n_modulators=2, module_size=12)
    out = build_run(tmp_path / "run", data.matrix, fdr_alpha=0.05, seed=3)
    null_values(out, n_permutations=799, perms_per_task=400, fdr_alpha=0.05, seed=3)
    pvalues(out, n_permutations=799, perms_per_task=400)
    got = read_pvalues(out / "permutation_pvalues.h5")
    q = got["qval_n_sig_edges_diff"]
    assert all(q[m] < 0.05 for m in data.modulators), q[data.modulators]
    assert got["any_sig"][data.modulators].all()
    noise = [g for g in range(60) if g not in data.modulators and all(g not in v for v in data.modules.values())]
    assert np.mean(got["any_sig"][noise]) < 0.1
    lines = (out / "rewiring_hubs_with_pvals.tsv").read_text().splitlines()
    hubs = (out / "rewiring_hubs.tsv").read_text().splitlines()
    assert [line.split("\t")[: len(hubs[0].split("\t"))] for line in lines] == [h.split("\t") for h in hubs]
    assert lines[0].split("\t")[-2:] == ["n_metrics_sig", "any_sig"]
    assert "pval_n_sig_edges_diff" in lines[0] and "qval_L1_rewire" in lines[0]


def test_null_is_identical_for_any_task_split(tmp_path):
    data = make_synthetic(20, 60, seed=4, n_modulators=1, module_size=6)
    out = build_run(tmp_path / "run", data.matrix, fdr_alpha=0.4)
    null_values(out, n_permutations=14, perms_per_task=14, fdr_alpha=0.4, null_dir="one")
    for task in (1, 2, 3):
        null_values(out, n_permutations=14, perms_per_task=5, fdr_alpha=0.4, null_dir="three", task_id=task)
    pvalues(out, n_permutations=14, perms_per_task=14, null_dir="one", tag="_one")
    pvalues(out, n_permutations=14, perms_per_task=5, null_dir="three", tag="_three")
    with h5py.File(out / "permutation_pvalues_one.h5", "r") as a, h5py.File(out / "permutation_pvalues_three.h5", "r") as b:
        for m in METRICS:
            np.testing.assert_array_equal(a["null"][m][...], b["null"][m][...])
            assert a["null"][m].shape == (14, 20) and a["null"][m].compression == "gzip"
        for k in a["per_gene"]:
            np.testing.assert_array_equal(a["per_gene"][k][...], b["per_gene"][k][...])
    assert (out / "rewiring_hubs_with_pvals_one.tsv").read_bytes() == (out / "rewiring_hubs_with_pvals_three.tsv").read_bytes()


def test_rerun_skips_current_outputs(tmp_path):
    data = make_synthetic(16, 50, seed=6, n_modulators=1, module_size=5)
    out = build_run(tmp_path / "run", data.matrix, fdr_alpha=0.4)
    first = null_values(out, n_permutations=9, perms_per_task=4, fdr_alpha=0.4)
    assert first["written"] == [1, 2, 3]
    assert pvalues(out, n_permutations=9, perms_per_task=4)["skipped"] is False
    parts = sorted((out / "permutation_null").glob("perm_*.h5"))
    stamps = {p.name: p.stat().st_mtime_ns for p in parts}
    again = null_values(out, n_permutations=9, perms_per_task=4, fdr_alpha=0.4)
    assert again["written"] == [] and again["skipped"] == [1, 2, 3]
    assert pvalues(out, n_permutations=9, perms_per_task=4)["skipped"] is True
    parts[1].unlink()
    third = null_values(out, n_permutations=9, perms_per_task=4, fdr_alpha=0.4)
    assert third["written"] == [2]
    assert {p.name: p.stat().st_mtime_ns for p in parts if p != parts[1]} == {
        k: v for k, v in stamps.items() if k != parts[1].name}
    assert pvalues(out, n_permutations=9, perms_per_task=4)["skipped"] is True  # same content, same provenance
    changed = null_values(out, n_permutations=9, perms_per_task=4, fdr_alpha=0.4, seed=99)
    assert changed["written"] == [1, 2, 3]
    assert pvalues(out, n_permutations=9, perms_per_task=4)["skipped"] is False


def _stage(module: str, *args: object) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "lib"),
                                                         os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=300)


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    data = make_synthetic(14, 50, seed=7, n_modulators=1, module_size=5)
    out = build_run(tmp_path / "run", data.matrix, fdr_alpha=0.4)
    done = _stage("dcoex.stages.s07_permutation_null", "--expr-h5", out / "expression.h5", "--indices-h5",
                  out / "bootstrap_indices.h5", "--out-dir", out / "permutation_null", "--n-permutations", "0")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "--n-permutations 0" in done.stderr
    assert not (out / "permutation_null").exists()

    other = build_run(tmp_path / "other", data.matrix[::-1].copy(), fdr_alpha=0.4)
    null_values(other, n_permutations=4, perms_per_task=4, fdr_alpha=0.4)
    shutil.copytree(other / "permutation_null", out / "foreign_null")
    args = ["--summary-h5", out / "differential_network_summary.h5", "--hubs-tsv", out / "rewiring_hubs.tsv",
            "--base-dir", out / "base_correlations", "--out-h5", out / "pv.h5", "--out-tsv", out / "pv.tsv",
            "--n-permutations", "4", "--perms-per-task", "4"]
    done = _stage("dcoex.stages.s08_permutation_pvalues", "--null-dir", out / "foreign_null", *args)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "another expression matrix" in done.stderr
    done = _stage("dcoex.stages.s08_permutation_pvalues", "--null-dir", out / "no_null", *args)
    assert done.returncode == 2 and "missing" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    null_values(out, n_permutations=4, perms_per_task=4, fdr_alpha=0.3)  # another BH level than the networks
    done = _stage("dcoex.stages.s08_permutation_pvalues", "--null-dir", out / "permutation_null", *args)
    assert done.returncode == 2 and "fdr_alpha" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (out / "pv.h5").exists() and not (out / "pv.tsv").exists()


@pytest.mark.slow
def test_memory_estimates_cover_measured_peaks(tmp_path):
    rng = np.random.default_rng(3)
    out = build_run(tmp_path / "run", rng.normal(size=(120, 60)), fdr_alpha=0.3)
    big = tmp_path / "big"
    from dcoex.stages.s00_convert.cli import convert
    from dcoex.stages.s01_bootstrap_indices.cli import run_indices
    from dcoex.synthetic import SyntheticData, write_tsv

    big.mkdir()
    matrix = rng.normal(size=(3000, 200)).astype(np.float32)
    write_tsv(big / "e.tsv", SyntheticData(matrix, [f"G{i}" for i in range(3000)], [f"S{j}" for j in range(200)], []))
    convert(big / "e.tsv", big / "expression.h5", compression="gzip", compression_level=None, block_rows=256)
    run_indices(big / "bootstrap_indices.h5", in_h5=str(big / "expression.h5"), low_frac=0.2, high_frac=0.2,
                n_bootstrap=2, bootstrap_frac=0.8, seed=1, batch_size="auto", compression="gzip",
                compression_level=1, deflate_strategy="default")
    done = _stage("dcoex.stages.s07_permutation_null", "--expr-h5", big / "expression.h5", "--indices-h5",
                  big / "bootstrap_indices.h5", "--out-dir", big / "null", "--n-permutations", "3", "--perms-per-task",
                  "3", "--batch-size", "512", "--quiet")
    assert done.returncode == 0, done.stderr
    record = json.loads(next((big / "null" / "memory").glob("07.perms_*.memory.json")).read_text())
    assert 0.95 * record["peak_rss_bytes"] <= record["estimate_bytes"] <= 1.3 * record["peak_rss_bytes"], record
    null_values(out, n_permutations=30, perms_per_task=30, fdr_alpha=0.3)
    done = _stage("dcoex.stages.s08_permutation_pvalues", "--summary-h5", out / "differential_network_summary.h5",
                  "--hubs-tsv", out / "rewiring_hubs.tsv", "--base-dir", out / "base_correlations", "--null-dir",
                  out / "permutation_null", "--out-h5", out / "pv.h5", "--out-tsv", out / "pv.tsv",
                  "--n-permutations", "30", "--perms-per-task", "30", "--quiet")
    assert done.returncode == 0, done.stderr
    record = json.loads((out / "pv.h5.memory.json").read_text())
    assert 0.95 * record["peak_rss_bytes"] <= record["estimate_bytes"] <= 1.3 * record["peak_rss_bytes"], record
