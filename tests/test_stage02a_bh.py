"""BH from candidates only (dcoex.bh) against statsmodels' fdr_bh on the whole family."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from dcoex.bh import BLOCK, BHFamily
from dcoex.stats import r_critical, t_pvalue


def _family(n_null: int, n_signal: int, seed: int, ties: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = np.concatenate([rng.standard_normal(n_null), rng.normal(4.5, 1.0, n_signal)])
    s = np.abs(z)
    if ties:
        s = np.round(s, 2)
    return s


@pytest.mark.parametrize("alpha", [0.05, 0.3, 0.7])
@pytest.mark.parametrize("ties", [False, True])
def test_candidates_give_statsmodels_q(alpha, ties):
    s = _family(30_000, 900, seed=int(alpha * 100) + ties, ties=ties)
    p_of = lambda v: 2 * stats.norm.sf(v)  # noqa: E731
    p = p_of(s)
    reject, q_ref = multipletests(p, alpha=alpha, method="fdr_bh")[:2]
    cut = stats.norm.isf(alpha / 2) * (1 - 1e-6)
    cand = s[s >= cut]
    fam = BHFamily(cand.copy(), s.size, p_of, alpha)
    assert fam.n < s.size
    assert fam.n_sig == np.sum(q_ref < alpha) > 0
    np.testing.assert_array_equal(fam.is_significant(s), q_ref < alpha)
    q = fam.q_values(s)
    below = q_ref < alpha
    np.testing.assert_allclose(q[below], q_ref[below], rtol=1e-9)
    assert np.all(np.isnan(q[~below]))
    # complete family: every q exact (capped at 1)
    full = BHFamily(s.copy(), s.size, p_of, alpha, complete=True)
    np.testing.assert_allclose(full.q_values(s), q_ref, rtol=1e-9)


def test_family_without_discoveries_and_empty():
    rng = np.random.default_rng(1)
    s = np.abs(rng.standard_normal(5 * BLOCK))
    p_of = lambda v: 2 * stats.norm.sf(v)  # noqa: E731
    q_ref = multipletests(p_of(s), method="fdr_bh")[1]
    fam = BHFamily(s[s > 1.9].copy(), s.size, p_of, 0.05)
    assert fam.n_sig == np.sum(q_ref < 0.05)
    empty = BHFamily(np.empty(0), 0, p_of, 0.05)
    assert empty.n_sig == 0 and empty.q_values(np.array([1.0])).tolist() != [0.0]


def test_t_test_cut_keeps_every_p_below_alpha():
    df = 185
    for alpha in (0.01, 0.05, 0.7):
        r = r_critical(alpha, df)
        assert t_pvalue(np.array([r * (1 - 1e-5)]), df)[0] > alpha - 1e-9
        assert t_pvalue(np.array([r * (1 + 1e-5)]), df)[0] <= alpha


def test_critical_values_equal_scipy_stats():
    """r_critical / z_critical use scipy.special inverses (no scipy.stats import on the hot
    path); they equal scipy.stats' inverse survival functions."""
    from dcoex.stats import z_critical

    for alpha in (1e-8, 0.001, 0.05, 0.3, 0.7, 0.999):
        assert z_critical(alpha) == pytest.approx(stats.norm.isf(alpha / 2), rel=1e-12)
        for df in (2, 9, 23, 185, 5000):
            t = stats.t.isf(alpha / 2, df)
            # both invert numerically (to ~1e-10); the stage lowers the cut by 1e-5 anyway
            assert r_critical(alpha, df) == pytest.approx(t / np.sqrt(df + t * t), rel=1e-8)
    assert r_critical(1.0, 10) == 0.0 and z_critical(1.0) == 0.0


def test_stage_imports_no_scipy_stats():
    """The 02a command's imports leave scipy.stats unloaded (1-3 s per process)."""
    import subprocess
    import sys

    code = ("import sys; import dcoex.stages.s02a_base_correlations.cli, dcoex.edge_files; "
            "print('scipy.stats' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
