"""The realistic generator: determinism, chunking, the TSV it writes, and dense differential co-expression."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from test_synthetic import _differential_edges  # the scipy/statsmodels reference test (design.md §4)

from dcoex.expression_tsv import TsvExpressionReader
from dcoex.realistic import BLOCK_GENES, RealisticGenerator, RealisticParams, main, make_realistic


def test_deterministic_shape_and_seed_dependent():
    a, b = make_realistic(300, 40, seed=3), make_realistic(300, 40, seed=3)
    assert a.shape == (300, 40) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, make_realistic(300, 40, seed=4))
    assert not np.array_equal(a, make_realistic(300, 40, seed=3, modulation=0.5))


def test_chunks_equal_one_shot():
    generator = RealisticGenerator(RealisticParams(2 * BLOCK_GENES + 77, 30, seed=5))
    whole = generator.matrix()
    for chunk in (1, 70, BLOCK_GENES, 1000):
        parts = list(generator.chunks(chunk))
        assert [start for start, _ in parts] == list(range(0, whole.shape[0], chunk))
        np.testing.assert_array_equal(np.concatenate([rows for _, rows in parts]), whole)
    for start, stop in ((37, 291), (BLOCK_GENES - 1, BLOCK_GENES + 1), (400, 400), (0, 1)):
        np.testing.assert_array_equal(RealisticGenerator(generator.params).rows(start, stop), whole[start:stop])


def test_strong_module_structure():
    """Real microarrays have strong shared structure (median |Spearman r| ~0.3 on the bench's real matrix)."""
    x = make_realistic(400, 57, seed=1)
    ranks = np.argsort(np.argsort(x, axis=1), axis=1).astype(float)
    r = np.corrcoef(ranks)[np.triu_indices(400, 1)]
    assert np.median(np.abs(r)) > 0.15
    assert np.quantile(np.abs(r), 0.99) > 0.6


def test_differential_density_far_above_noise():
    """BH (alpha 0.05) differential pairs for 12 reference genes at 400 genes x 120 samples (k = 24),
    computed with scipy/statsmodels: the generator must stay far from pure noise."""
    n_genes, n_samples, k = 400, 120, 24
    n_pairs = n_genes * (n_genes - 1) // 2
    x = make_realistic(n_genes, n_samples, seed=2)
    noise = np.random.default_rng(0).standard_normal((n_genes, n_samples))
    dens = [len(_differential_edges(x, g, k, 0.05)) / n_pairs for g in range(12)]
    dens_noise = [len(_differential_edges(noise, g, k, 0.05)) / n_pairs for g in range(12)]
    assert max(dens_noise) <= 0.001
    assert np.mean(dens) >= 0.005 and max(dens) >= 0.01, dens


def test_cli_writes_stage00_tsv(tmp_path):
    out = tmp_path / "sub" / "expr.tsv.gz"
    done = CliRunner().invoke(main, ["--n-genes", "30", "--n-samples", "12", "--seed", "7", "--out", str(out)])
    assert done.exit_code == 0, done.output
    with TsvExpressionReader(out) as reader:
        genes, matrix = reader.read_all()
    generator = RealisticGenerator(RealisticParams(30, 12, seed=7))
    assert genes == generator.gene_names
    np.testing.assert_allclose(matrix, generator.matrix(), atol=1e-5)
    assert not list(tmp_path.glob("sub/*tmp*"))


@pytest.mark.parametrize("args", [["--loading-df", "0"], ["--n-drivers", "0"], ["--driver-decay", "1.5"], ["--seed", "-1"]])
def test_cli_bad_parameter_exit_2(tmp_path, args):
    done = CliRunner().invoke(main, ["--n-genes", "30", "--n-samples", "12", "--out", str(tmp_path / "x.tsv"), *args])
    assert done.exit_code == 2 and "must be" in done.output
    assert not (tmp_path / "x.tsv").exists()
