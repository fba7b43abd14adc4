"""Stage 02b against a naive per-edge loop over the replicates of bootstrap_indices.h5
(scipy spearmanr per replicate; numpy mean / sd / percentile)."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
from scipy import stats
from util_stage02 import SCRIPT_02A, SCRIPT_02B, planted_matrix, read_edges, run_inproc, run_script, write_inputs

from dcoex.genes import gene_file_path
from dcoex.stages.s02b_bootstrap_edges.science import EdgeLayout, boot_stats, positions_in_group, replicate_deltas

B = 60
CI_ALPHA = 0.1


def naive_deltas(x: np.ndarray, low_boot: np.ndarray, high_boot: np.ndarray, gi, gj) -> np.ndarray:
    out = np.empty((len(gi), low_boot.shape[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for e, (i, j) in enumerate(zip(gi, gj)):
            for b in range(low_boot.shape[0]):
                r_low = stats.spearmanr(x[i, low_boot[b]], x[j, low_boot[b]]).statistic
                r_high = stats.spearmanr(x[i, high_boot[b]], x[j, high_boot[b]]).statistic
                out[e, b] = r_high - r_low
    return out


def naive_stats(deltas: np.ndarray, base: np.ndarray, ci_alpha: float) -> dict:
    rows = {k: [] for k in ("delta_mean", "delta_std", "ci_low", "ci_high", "bias", "bootstrap_pval")}
    for d, d0 in zip(deltas, base):
        d = d[np.isfinite(d)]
        n = d.size
        if n < 2:
            for values in rows.values():
                values.append(np.nan)
            continue
        rows["delta_mean"].append(d.mean())
        rows["delta_std"].append(d.std(ddof=1))
        rows["ci_low"].append(np.percentile(d, 100 * ci_alpha / 2))
        rows["ci_high"].append(np.percentile(d, 100 * (1 - ci_alpha / 2)))
        rows["bias"].append(d.mean() - d0)
        rows["bootstrap_pval"].append(max(2 * min(np.sum(d > 0) / n, np.sum(d < 0) / n), 1 / n))
    return {k: np.array(v) for k, v in rows.items()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    x, data = planted_matrix(n_genes=36, n_samples=100, seed=4, module_size=5)
    folder = tmp_path_factory.mktemp("s02b_ref")
    expr, idx = write_inputs(folder, x, n_bootstrap=B)
    genes = [*data.modulators, 5]
    args = ["--expr-h5", expr, "--indices-h5", idx, "--fdr-alpha", 0.5]
    for g in genes:
        args += ["--gene-index", g]
    done = run_inproc(SCRIPT_02A, *args, "--out-dir", folder / "base")
    assert done.returncode == 0, done.stderr
    outs = {}
    for mode in ("sig_differential", "sig_edges"):
        out = folder / f"boot_{mode}"
        runner = run_script if mode == "sig_edges" else run_inproc  # once as a file, once in process
        done = runner(SCRIPT_02B, *args, "--base-dir", folder / "base", "--out-dir", out, "--edge-selection", mode,
                      "--ci-alpha", CI_ALPHA, "--store-replicates", "--n-bootstrap", B)
        assert done.returncode == 0, done.stderr
        outs[mode] = out
    return x, idx, genes, folder / "base", outs


@pytest.mark.parametrize("mode", ["sig_differential", "sig_edges"])
def test_bootstrap_matches_naive_loop(run, mode):
    x, idx, genes, base_dir, outs = run
    n = x.shape[0]
    total = 0
    for gene in genes:
        _, base = read_edges(gene_file_path(base_dir, gene, f"g{gene}", n))
        meta, d = read_edges(gene_file_path(outs[mode], gene, f"g{gene}", n), gene_file_path(base_dir, gene, f"g{gene}", n))
        keep = np.ones(base["edges/pair_index"].size, bool)
        if mode == "sig_edges":
            keep = base["edges/sig_low"] | base["edges/sig_high"]
        np.testing.assert_array_equal(d["edges/pair_index"], base["edges/pair_index"][keep])
        gi, gj = d["edges/gene_i"], d["edges/gene_j"]
        assert meta["n_sig_edges"] == gi.size and meta["n_bootstrap"] == B
        assert meta["edge_selection_mode"] == mode
        total += gi.size
        with h5py.File(idx, "r") as f:
            low_boot, high_boot = f["indices/low_boot"][gene], f["indices/high_boot"][gene]
        ref = naive_deltas(x.astype(np.float64), low_boot, high_boot, gi, gj)
        np.testing.assert_allclose(d["boot/delta_replicates"], ref, atol=2e-6, equal_nan=True)
        base_delta = base["edges/r_high"][keep].astype(np.float32) - base["edges/r_low"][keep].astype(np.float32)
        np.testing.assert_array_equal(d["base/delta"], base_delta)
        want = naive_stats(ref, base_delta.astype(np.float64), CI_ALPHA)
        for name in ("delta_mean", "delta_std", "ci_low", "ci_high", "bias"):
            np.testing.assert_allclose(d[f"boot/{name}"], want[name], atol=1e-5, err_msg=name)
        np.testing.assert_allclose(d["pval/bootstrap_pval"], want["bootstrap_pval"], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(d["boot/n_finite"], np.isfinite(ref).sum(axis=1))
    assert total > 0


def test_resamples_with_constant_genes_and_ties():
    """A gene constant in some resamples: those replicates are NaN and left out of the stats."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6, 60))
    x[1] = np.round(x[1])  # ties
    x[2] = 0.0
    x[2, [1, 5, 33, 40]] = 1.0  # constant in many resamples
    low, high = np.arange(0, 20), np.arange(30, 50)
    low_boot = low[rng.integers(0, 20, (40, 16))]
    high_boot = high[rng.integers(0, 20, (40, 16))]
    gi, gj = np.array([0, 0, 1, 2]), np.array([1, 2, 3, 4])
    got = replicate_deltas(x[:, low], x[:, high], positions_in_group(low_boot, low),
                           positions_in_group(high_boot, high), gene_i=gi, gene_j=gj)
    ref = naive_deltas(x, low_boot, high_boot, gi, gj)
    assert np.isnan(ref).any() and np.isfinite(ref).any()
    np.testing.assert_allclose(got, ref, atol=2e-6, equal_nan=True)
    base = np.zeros(4)
    st = boot_stats(got.copy(), base, 0.05)
    want = naive_stats(ref, base, 0.05)
    for name in ("delta_mean", "delta_std", "ci_low", "ci_high"):
        np.testing.assert_allclose(getattr(st, name), want[name], atol=1e-5)
    np.testing.assert_allclose(st.bootstrap_pval, want["bootstrap_pval"])
    assert np.all(st.n_finite[[1, 3]] < 40) and np.all(st.n_finite[[1, 3]] >= 2)


def test_dense_core_equals_gathers():
    """A chunk with a dense module (matrix-product path) gives the naive values too."""
    rng = np.random.default_rng(2)
    g, s = 90, 50
    x = rng.standard_normal((g, s))
    low, high = np.arange(0, 20), np.arange(25, 45)
    factor = rng.standard_normal(20)
    x[:70, high] += 2 * factor  # module of 70 genes in HIGH
    low_boot = low[rng.integers(0, 20, (7, 16))]
    high_boot = high[rng.integers(0, 20, (7, 16))]
    iu, ju = np.triu_indices(70, 1)
    gi = np.concatenate([iu, [70, 71, 5]])
    gj = np.concatenate([ju, [88, 89, 80]])
    genes = np.unique(np.concatenate([gi, gj]))
    assert EdgeLayout(np.searchsorted(genes, gi), np.searchsorted(genes, gj), genes.size).core_edges.size > 2000
    got = replicate_deltas(x[:, low], x[:, high], positions_in_group(low_boot, low),
                           positions_in_group(high_boot, high), gene_i=gi, gene_j=gj)
    ref = np.empty(got.shape)
    for b in range(low_boot.shape[0]):  # scipy's average ranks, numpy's Pearson
        r_low = np.corrcoef(stats.rankdata(x[:, low_boot[b]], axis=1))
        r_high = np.corrcoef(stats.rankdata(x[:, high_boot[b]], axis=1))
        ref[:, b] = r_high[gi, gj] - r_low[gi, gj]
    np.testing.assert_allclose(got, ref, atol=2e-6)


def test_large_resamples_use_exact_float64_sums():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 700))
    low, high = np.arange(0, 320), np.arange(350, 670)
    low_boot = low[rng.integers(0, 320, (3, 290))]
    high_boot = high[rng.integers(0, 320, (3, 290))]
    gi, gj = np.array([0, 1, 2]), np.array([1, 3, 4])
    got = replicate_deltas(x[:, low], x[:, high], positions_in_group(low_boot, low),
                           positions_in_group(high_boot, high), gene_i=gi, gene_j=gj)
    np.testing.assert_allclose(got, naive_deltas(x, low_boot, high_boot, gi, gj), atol=2e-6)
