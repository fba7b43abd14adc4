"""Stage 02a against independent references: scipy spearmanr, scipy t/normal survival
functions, statsmodels BH and a naive dense implementation of the stored edge set."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import stats
from util_stage02 import SCRIPT_02A, planted_matrix, read_edges, reference_base, run_script, write_inputs

from dcoex.genes import gene_file_path
from dcoex.stats import flat_index, pair_from_flat


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    x, data = planted_matrix(n_genes=48, n_samples=120, seed=3, module_size=5)
    folder = tmp_path_factory.mktemp("s02a_ref")
    expr, idx = write_inputs(folder, x, n_bootstrap=10)
    genes = [5, *data.modulators, 9]
    outputs = {}
    for alpha in (0.05, 0.5):
        out = folder / f"base_{alpha}"
        args = ["--expr-h5", expr, "--indices-h5", idx, "--out-dir", out, "--fdr-alpha", alpha, "--batch-size", 7]
        for g in genes:
            args += ["--gene-index", g]
        done = run_script(SCRIPT_02A, *args)
        assert done.returncode == 0, done.stderr
        outputs[alpha] = out
    return x, idx, genes, outputs


def _groups(idx: Path, gene: int) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(idx, "r") as f:
        return f["indices/low"][gene], f["indices/high"][gene]


@pytest.mark.parametrize("alpha", [0.05, 0.5])
def test_edges_match_dense_reference(planted, alpha):
    x, idx, genes, outputs = planted
    n = x.shape[0]
    found_any = False
    for gene in genes:
        low, high = _groups(idx, gene)
        ref = reference_base(x.astype(np.float64), low, high, alpha)
        meta, d = read_edges(gene_file_path(outputs[alpha], gene, f"g{gene}", n))
        sig = ref["sig_diff"]
        found_any |= sig.size > 0
        # the stored edge set is the naive sig_differential set, in ascending flat order
        np.testing.assert_array_equal(d["edges/pair_index"], sig)
        np.testing.assert_array_equal(d["edges/gene_i"], ref["i"][sig])
        np.testing.assert_array_equal(d["edges/gene_j"], ref["j"][sig])
        # r equals scipy's spearmanr (ties included)
        np.testing.assert_allclose(d["edges/r_low"], ref["r_low"][sig], atol=1e-5, rtol=0)
        np.testing.assert_allclose(d["edges/r_high"], ref["r_high"][sig], atol=1e-5, rtol=0)
        np.testing.assert_allclose(d["edges/delta"], ref["r_high"][sig] - ref["r_low"][sig], atol=2e-5, rtol=0)
        # significance masks and counts equal statsmodels BH over the whole families
        np.testing.assert_array_equal(d["edges/sig_low"], ref["q_low"][sig] < alpha)
        np.testing.assert_array_equal(d["edges/sig_high"], ref["q_high"][sig] < alpha)
        assert meta["n_sig_low"] == np.sum(ref["q_low"] < alpha)
        assert meta["n_sig_high"] == np.sum(ref["q_high"] < alpha)
        assert meta["n_sig_differential"] == sig.size
        assert meta["n_sig_edges"] == np.sum((ref["q_low"][sig] < alpha) | (ref["q_high"][sig] < alpha))
        # q: statsmodels within 1e-6 relative (float32 r moves the most extreme p's by < 1e-4),
        # exact below alpha, NaN (not computed) at or above alpha
        for fam in ("low", "high", "diff"):
            got, want = d[f"edges/q_{fam}"], ref[f"q_{fam}"][sig]
            below = want < alpha
            np.testing.assert_allclose(got[below], want[below], rtol=1e-4)
            assert np.all(np.isnan(got[~below]))
        # p from the survival functions at the stored r (and near scipy's at scipy's r)
        k_low, k_high = low.size, high.size
        for fam, k in (("low", k_low), ("high", k_high)):
            r = d[f"edges/r_{fam}"].astype(np.float64)
            t = r * np.sqrt((k - 2) / np.maximum(1 - r * r, np.finfo(np.float32).eps))
            np.testing.assert_allclose(d[f"edges/p_{fam}"], 2 * stats.t.sf(np.abs(t), k - 2), rtol=1e-9)
            np.testing.assert_allclose(d[f"edges/p_{fam}"], ref[f"p_{fam}"][sig], rtol=1e-3)
        rl, rh = (np.clip(d[f"edges/r_{f}"].astype(np.float64), -0.9999, 0.9999) for f in ("low", "high"))
        z = (np.arctanh(rh) - np.arctanh(rl)) / np.sqrt(1 / (k_low - 3) + 1 / (k_high - 3))
        np.testing.assert_allclose(d["edges/p_diff"], 2 * stats.norm.sf(np.abs(z)), rtol=1e-9)
        assert np.all(d["edges/p_diff"] > 0)
    assert found_any


def test_constant_rows_leave_the_family(planted):
    x, idx, genes, outputs = planted
    n = x.shape[0]
    meta, d = read_edges(gene_file_path(outputs[0.5], 5, "g5", n))
    low, _ = _groups(idx, 5)
    const_low = int(sum(np.all(row == row[0]) for row in x[:, low]))
    assert meta["n_const_low"] == const_low == 2
    assert meta["n_tests_low"] == (n - 2) * (n - 3) // 2
    assert meta["n_excluded"] == n * (n - 1) // 2 - meta["n_tests_diff"] > 0
    bad = {5, 6}
    assert not any(int(i) in bad or int(j) in bad for i, j in zip(d["edges/gene_i"], d["edges/gene_j"]))


def test_flat_index_round_trip_above_int32():
    n = 70_000  # n_tests > 2**31
    i = np.array([0, 1, 12_345, n - 3, n - 2], dtype=np.int64)
    j = np.array([1, n - 1, 50_000, n - 1, n - 1], dtype=np.int64)
    k = flat_index(i, j, n)
    assert k[-1] == n * (n - 1) // 2 - 1 > 2**31
    ii, jj = pair_from_flat(k, n)
    np.testing.assert_array_equal(ii, i)
    np.testing.assert_array_equal(jj, j)
    small = 9
    iu, ju = np.triu_indices(small, 1)
    np.testing.assert_array_equal(flat_index(iu, ju, small), np.arange(iu.size))


def test_second_pass_and_exact_q(planted):
    """Collecting the statistics in many small groups of bins (many passes) gives the same
    table; --exact-q gives every q-value exactly (statsmodels on the whole family)."""
    from dcoex.stages.s02a_base_correlations.science import base_correlations

    x, idx, genes, _ = planted
    gene = genes[1]
    low, high = _groups(idx, gene)
    one = base_correlations(x[:, low], x[:, high], 0.5, tile_rows=5)
    two = base_correlations(x[:, low], x[:, high], 0.5, tile_rows=9, window_items=7)
    assert one.attrs == two.attrs
    for name, col in one.edges.items():
        np.testing.assert_array_equal(col, two.edges[name], err_msg=name)
    exact = base_correlations(x[:, low], x[:, high], 0.5, tile_rows=6, exact_q=True)
    ref = reference_base(x.astype(np.float64), low, high, 0.5)
    sig = ref["sig_diff"]
    np.testing.assert_array_equal(exact.edges["pair_index"], sig)
    for fam in ("low", "high", "diff"):
        np.testing.assert_allclose(exact.edges[f"q_{fam}"], ref[f"q_{fam}"][sig], rtol=1e-4)


def test_tile_size_does_not_change_any_bit():
    """Integer rank products are exact: r is bit-identical for any tile shape."""
    from dcoex.stages.s02a_base_correlations.science import base_correlations
    from dcoex.synthetic import make_synthetic

    data = make_synthetic(n_genes=200, n_samples=200, seed=1, n_modulators=2, module_size=10)
    x = data.matrix
    order = np.argsort(x[data.modulators[0]], kind="stable")
    low, high = np.sort(order[:40]), np.sort(order[-40:])
    results = [base_correlations(x[:, low], x[:, high], 0.3, tile_rows=t) for t in (17, 64, 199)]
    assert results[0].edges["pair_index"].size > 20
    for other in results[1:]:
        for name, col in results[0].edges.items():
            np.testing.assert_array_equal(col, other.edges[name], err_msg=name)


def test_large_groups_use_exact_float64_products():
    """k(k−1)² >= 2**24 (k >= 257): rank products switch to float64 and stay exact."""
    from dcoex.ranks import IntegerRanks
    from dcoex.stages.s02a_base_correlations.science import base_correlations

    rng = np.random.default_rng(5)
    x_low, x_high = rng.standard_normal((12, 300)), rng.standard_normal((12, 280))
    x_high[1] = x_high[0] + 0.3 * rng.standard_normal(280)
    assert IntegerRanks(x_low).dtype == np.float64 and IntegerRanks(x_low[:, :200]).dtype == np.float32
    res = base_correlations(x_low, x_high, 0.5, tile_rows=4, exact_q=True)
    iu, ju = np.triu_indices(12, 1)
    want = stats.spearmanr(x_high, axis=1).statistic[iu, ju][res.edges["pair_index"]]
    assert res.edges["pair_index"].size > 0
    np.testing.assert_allclose(res.edges["r_high"], want, atol=1e-6)


@pytest.mark.parametrize("k", [10, 11, 12])
def test_exact_counts_for_even_and_odd_group_sizes(k):
    """Pairs of tie-free genes are counted by |d| // 4 (|d| mod 4 = (k³ − k)/3 mod 4: 2 for
    k = 10, 0 for k = 11 and 12): cuts, counts and q's equal the dense reference."""
    from util_stage02 import reference_base

    from dcoex.realistic import make_realistic
    from dcoex.stages.s02a_base_correlations.science import base_correlations

    x = make_realistic(60, 3 * k, seed=k).astype(np.float32)
    low, high = np.arange(k), np.arange(2 * k, 3 * k)
    res = base_correlations(x[:, low], x[:, high], 0.5, tile_rows=13, window_items=50)
    ref = reference_base(x.astype(np.float64), low, high, 0.5)
    sig = ref["sig_diff"]
    np.testing.assert_array_equal(res.edges["pair_index"], sig)
    for fam in ("low", "high"):
        assert res.attrs[f"n_sig_{fam}"] == np.sum(ref[f"q_{fam}"] < 0.5) > 0
        want = ref[f"q_{fam}"][sig]
        below = want < 0.5
        np.testing.assert_allclose(res.edges[f"q_{fam}"][below], want[below], rtol=1e-4)
        assert np.all(np.isnan(res.edges[f"q_{fam}"][~below]))
