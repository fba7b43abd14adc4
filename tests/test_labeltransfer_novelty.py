"""The distance rule of ``unknown`` (labeltransfer.novelty) against scipy and planted Gaussians."""

from __future__ import annotations

import numpy as np
import pytest

DIMS = 6


def clusters(n_per_type: int, seed: int, types: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``types`` Gaussian types in DIMS dims with different (fixed) covariances and centres 8 apart."""
    fixed = np.random.default_rng(99)
    mixing = [fixed.normal(size=(DIMS, DIMS)) * 0.5 + np.eye(DIMS) for _ in range(types)]
    rng = np.random.default_rng(seed)
    x = np.vstack([rng.normal(size=(n_per_type, DIMS)) @ mixing[k] + 8.0 * k for k in range(types)])
    return x, np.repeat([f"t{k}" for k in range(types)], n_per_type)


def test_squared_distances_match_scipy_mahalanobis():
    from scipy.spatial.distance import mahalanobis
    from sklearn.covariance import LedoitWolf

    from labeltransfer.novelty import fit_type_distance

    x, y = clusters(200, 0)
    fit = fit_type_distance(x, y, 0.99)
    query = np.random.default_rng(3).normal(size=(9, DIMS)) * 5
    got = fit.squared(query)
    for k, name in enumerate(sorted(set(y))):
        cells = x[y == name]
        precision = np.linalg.inv(LedoitWolf().fit(cells).covariance_)
        for i, q in enumerate(query):  # a naive loop with scipy
            assert got[i, k] == pytest.approx(mahalanobis(q, cells.mean(axis=0), precision) ** 2, rel=1e-6)
    np.testing.assert_allclose(fit.novelty(query), (got / fit.cutoffs).min(axis=1))


def test_cutoffs_flag_about_one_percent_of_new_known_cells_and_every_planted_novel_cell():
    """Fresh cells of the reference types: about 1 - quantile of them are called unknown (held-out
    cut-offs are honest); a planted type far from every reference type: all of them."""
    from labeltransfer.novelty import fit_type_distance, unknown_mask

    x, y = clusters(400, 1)
    fit = fit_type_distance(x, y, 0.99)
    fresh, _ = clusters(4000, 2)
    flagged = fit.novelty(fresh) > 1
    assert 0.002 < flagged.mean() < 0.03
    novel = np.random.default_rng(4).normal(size=(300, DIMS)) + 40.0
    assert (fit.novelty(novel) > 1).all()
    prob = np.full(300, 0.99)
    assert unknown_mask("distance", max_prob=prob, novelty=fit.novelty(novel), threshold=0.5).all()
    assert not unknown_mask("probability", max_prob=prob, novelty=fit.novelty(novel), threshold=0.5).any()
    assert not unknown_mask("none", max_prob=prob, novelty=fit.novelty(novel), threshold=0.5).any()


def test_rules_combine_as_documented():
    from labeltransfer.novelty import unknown_mask

    prob = np.array([0.9, 0.3, 0.9, 0.3])
    novelty = np.array([0.5, 0.5, 2.0, 2.0])
    assert unknown_mask("distance", max_prob=prob, novelty=novelty, threshold=0.5).tolist() == [0, 0, 1, 1]
    assert unknown_mask("probability", max_prob=prob, novelty=novelty, threshold=0.5).tolist() == [0, 1, 0, 1]
    assert unknown_mask("both", max_prob=prob, novelty=novelty, threshold=0.5).tolist() == [0, 1, 1, 1]
    assert unknown_mask("knn", max_prob=prob, novelty=novelty, threshold=0.5).tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError):
        unknown_mask("maybe", max_prob=prob, novelty=novelty, threshold=0.5)


def test_default_epochs_follow_scvi_tools():
    """The default epoch budget is scvi-tools' own heuristic (checked against its function)."""
    from scvi.model._utils import get_max_epochs_heuristic

    from labeltransfer.latent import default_max_epochs, scanvi_epochs

    for n in (10, 700, 20_000, 20_001, 33_333, 110_000, 10_000_000):
        assert default_max_epochs(n) == get_max_epochs_heuristic(n)
    assert default_max_epochs(110_000) == 73
    assert [scanvi_epochs(e) for e in (1, 6, 9, 30, 73, 400)] == [2, 2, 3, 10, 10, 10]


def test_knn_novelty_matches_a_naive_loop():
    """The knn rule against scipy's cdist: leave-one-out cut-offs per type, then each query cell's
    mean distance to its k nearest reference cells over the cut-off of its nearest cell's type."""
    from scipy.spatial.distance import cdist

    from labeltransfer.novelty import fit_reference_neighbours

    x, y = clusters(60, 5)
    k, q = 4, 0.9
    fit = fit_reference_neighbours(x, y, q, k)
    d = cdist(x, x)
    held = np.array([np.sort(np.delete(d[i], i))[:k].mean() for i in range(len(x))])
    names = sorted(set(y))
    cut = {n: np.quantile(held[y == n], q) for n in names}
    np.testing.assert_allclose(fit.cutoffs, [cut[n] for n in names], rtol=1e-5)
    query = np.random.default_rng(6).normal(size=(25, DIMS)) * 6
    dq = cdist(query, x)
    want = [np.sort(row)[:k].mean() / cut[y[np.argmin(row)]] for row in dq]
    np.testing.assert_allclose(fit.novelty(query), want, rtol=1e-5)


def test_knn_flags_about_one_percent_of_new_known_cells_and_every_planted_novel_cell():
    from labeltransfer.novelty import fit_reference_neighbours, novelty_scores, unknown_mask

    x, y = clusters(400, 1)
    fit = fit_reference_neighbours(x, y, 0.99, 15)
    fresh, _ = clusters(4000, 2)
    assert 0.002 < (fit.novelty(fresh) > 1).mean() < 0.03
    novel = np.random.default_rng(4).normal(size=(300, DIMS)) + 40.0
    got = novelty_scores("knn", x, y, novel, quantile=0.99, k=15)
    assert (got > 1).all()
    np.testing.assert_allclose(got, fit.novelty(novel))
    prob = np.full(300, 0.99)
    assert unknown_mask("knn", max_prob=prob, novelty=got, threshold=0.5).all()
    assert unknown_mask("both", max_prob=prob, novelty=got, threshold=0.5).all()
