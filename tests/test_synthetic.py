"""The example-data generator: determinism, planted truth, and detectability."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from dcoex.expression_tsv import TsvExpressionReader
from dcoex.synthetic import main, make_synthetic


def test_deterministic_and_seed_dependent():
    a, b = make_synthetic(60, 50, seed=4, n_modulators=2, module_size=5), make_synthetic(60, 50, seed=4, n_modulators=2, module_size=5)
    np.testing.assert_array_equal(a.matrix, b.matrix)
    assert a.pairs == b.pairs and a.modulators == b.modulators
    c = make_synthetic(60, 50, seed=5, n_modulators=2, module_size=5)
    assert not np.array_equal(a.matrix, c.matrix)


def test_truth_is_consistent():
    data = make_synthetic(200, 200, seed=1)
    assert data.matrix.shape == (200, 200) and data.matrix.dtype == np.float32
    assert len(data.modulators) == 3 and len(data.pairs) == 3 * 30 * 29 // 2
    modules = [set(module) for module in data.modules.values()]
    assert all(len(module) == 30 for module in modules)
    assert not modules[0] & modules[1] and not modules[1] & modules[2] and not modules[0] & modules[2]
    genes = {g for p in data.pairs for g in (p["gene_i"], p["gene_j"])}
    assert not genes & set(data.modulators)
    for p in data.pairs:
        assert {p["gene_i"], p["gene_j"]} <= set(data.modules[p["modulator"]])
    assert all(p["gene_i"] < p["gene_j"] and p["sign"] in (1, -1) for p in data.pairs)


def test_planted_pairs_correlate_in_high_only():
    data = make_synthetic(200, 200, seed=1)
    k = 40
    for pair in data.pairs:
        order = np.argsort(data.matrix[pair["modulator"]], kind="stable")
        low, high = order[:k], order[-k:]
        x, y = data.matrix[pair["gene_i"]], data.matrix[pair["gene_j"]]
        r_high = stats.spearmanr(x[high], y[high])[0]
        r_low = stats.spearmanr(x[low], y[low])[0]
        assert r_high * pair["sign"] > 0.6, pair
        assert abs(r_low) < 0.6, pair


def _differential_edges(matrix: np.ndarray, modulator: int, k: int, alpha: float) -> set[tuple[int, int]]:
    """Reference differential test (docs/design.md §4.2–§4.5) written with scipy/statsmodels."""
    order = np.argsort(matrix[modulator], kind="stable")
    r_low = stats.spearmanr(matrix[:, order[:k]], axis=1)[0]
    r_high = stats.spearmanr(matrix[:, order[-k:]], axis=1)[0]
    i, j = np.triu_indices(matrix.shape[0], 1)
    zl = np.arctanh(np.clip(r_low[i, j], -0.9999, 0.9999))
    zh = np.arctanh(np.clip(r_high[i, j], -0.9999, 0.9999))
    z = (zh - zl) / np.sqrt(2 / (k - 3))
    p = 2 * stats.norm.sf(np.abs(z))
    reject = multipletests(p, alpha=alpha, method="fdr_bh")[0]
    return {(int(a), int(b)) for a, b in zip(i[reject], j[reject])}


def test_planted_rewiring_is_recoverable_at_alpha_005():
    data = make_synthetic(200, 200, seed=1)
    for m in data.modulators:
        truth = {(p["gene_i"], p["gene_j"]) for p in data.pairs if p["modulator"] == m}
        found = _differential_edges(data.matrix, m, 40, 0.05)
        recall = len(found & truth) / len(truth)
        precision = len(found & truth) / max(len(found), 1)
        assert recall >= 0.9 and precision >= 0.9, (m, recall, precision)


def test_cli_writes_data_and_truth(tmp_path):
    with pytest.raises(SystemExit) as exited:
        main(["--n-genes", "40", "--n-samples", "30", "--seed", "2", "--n-modulators", "1",
              "--module-size", "3", "--out-dir", str(tmp_path), "--gzip"], standalone_mode=True)
    assert exited.value.code == 0
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert len(truth["pairs"]) == 3 and len(truth["modulators"]) == 1
    assert len((tmp_path / "truth.tsv").read_text().strip().splitlines()) == 4
    with TsvExpressionReader(tmp_path / "expression.tsv.gz") as reader:
        genes, matrix = reader.read_all()
    data = make_synthetic(40, 30, seed=2, n_modulators=1, module_size=3)
    assert genes == data.gene_names
    np.testing.assert_allclose(matrix, data.matrix, atol=1e-5)
