"""BH of stage 02a (science._Family: bin counts, bounded collection groups, q table) against
statsmodels' fdr_bh on the whole family."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from dcoex.stages.s02a_base_correlations.science import N_BINS, _Family
from dcoex.stats import r_critical, t_pvalue


def _family(n_null: int, n_signal: int, seed: int, ties: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = np.concatenate([rng.standard_normal(n_null), rng.normal(4.5, 1.0, n_signal)])
    s = np.abs(z)
    if ties:
        s = np.round(s, 2)
    return s


def _p_of(v: np.ndarray) -> np.ndarray:
    return 2 * stats.norm.sf(v)


def _run_family(s: np.ndarray, *, lo: float, alpha: float, budget: int, complete: bool = False,
                spill_dir: str | None = None) -> _Family:
    """The stage's BH on statistics s: the histogram the kernels would count (same binning),
    then the groups of the cut search and q table, each fed its statistics."""
    fam = _Family(s.size, lo, 8.0, _p_of, alpha=alpha, budget=budget, spill_dir=spill_dir)
    kept = s[s >= lo]
    bins = np.minimum(((kept - lo) * fam.inv).astype(np.int64), N_BINS - 1)
    count, smin, smax = fam.hist
    np.add.at(count, bins, 1)
    np.minimum.at(smin, bins, kept)
    np.maximum.at(smax, bins, kept)
    fam.prepare(complete)
    scratch = np.zeros(1, np.int64)
    while (group := fam.next_group()) is not None:
        take = (bins >= group[0]) & (bins < group[1]) & fam.mixed[bins]
        assert take.sum() <= max(budget, count[group[0] : group[1]].max())
        fam.consume(group, kept[take].copy(), scratch)
    fam.finish()
    return fam


@pytest.mark.parametrize("alpha", [0.05, 0.3, 0.7])
@pytest.mark.parametrize("ties", [False, True])
def test_streamed_bh_gives_statsmodels_q(alpha, ties):
    s = _family(30_000, 900, seed=int(alpha * 100) + ties, ties=ties)
    p = _p_of(s)
    q_ref = multipletests(p, alpha=alpha, method="fdr_bh")[1]
    lo = stats.norm.isf(alpha / 2) * (1 - 1e-5)
    fam = _run_family(s, lo=lo, alpha=alpha, budget=500)
    assert fam.n_sig == np.sum(q_ref < alpha) > 0
    np.testing.assert_array_equal(fam.is_significant(s), q_ref < alpha)
    q = fam.q_values(s)
    below = q_ref < alpha
    np.testing.assert_allclose(q[below], q_ref[below], rtol=1e-9)
    assert np.all(np.isnan(q[~below]))
    # complete family (every test binned): every q exact (capped at 1)
    full = _run_family(s, lo=0.0, alpha=alpha, budget=700, complete=True)
    np.testing.assert_allclose(full.q_values(s), q_ref, rtol=1e-9)
    assert full.n_sig == fam.n_sig


def test_family_without_discoveries_and_empty():
    rng = np.random.default_rng(1)
    s = np.abs(rng.standard_normal(20_000))
    q_ref = multipletests(_p_of(s), method="fdr_bh")[1]
    fam = _run_family(s, lo=1.9, alpha=0.05, budget=100)
    assert fam.n_sig == np.sum(q_ref < 0.05) == 0
    assert np.all(np.isnan(fam.q_values(s)))
    empty = _run_family(np.empty(0), lo=1.9, alpha=0.05, budget=100)
    assert empty.n_sig == 0 and np.isnan(empty.q_values(np.array([1.0]))).all()


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


def test_spilled_table_in_slices_gives_the_same_q(tmp_path):
    """The differential family's table written to a scratch file and read back in slices of
    at most 2 × ``budget`` entries (each with the q carried in from below) gives the q's of the
    table held in memory, and the same table."""
    s = _family(30_000, 2_000, seed=5, ties=False)
    lo = stats.norm.isf(0.7 / 2) * (1 - 1e-5)
    held = _run_family(s, lo=lo, alpha=0.7, budget=300)
    spilled = _run_family(s, lo=lo, alpha=0.7, budget=300, spill_dir=str(tmp_path))
    assert len(spilled.slices()) > 3
    assert all(sum(spilled._spilled[i][2] for i in ids) <= 600 for _, _, ids in spilled.slices())
    np.testing.assert_array_equal(spilled.q_values(s), held.q_values(s))
    for a, b in zip(spilled.table(), held.table()):
        np.testing.assert_array_equal(a, b)
    spilled.close()
