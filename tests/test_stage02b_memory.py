"""02a/02b memory plans: estimators, chunked 02b runs, planned out-of-memory exits."""

from __future__ import annotations

import numpy as np
import pytest
from util_stage02 import SCRIPT_02A, SCRIPT_02B, read_edges, run_inproc, write_inputs

from dcoex.stages import get_estimator
from dcoex.synthetic import make_synthetic

SHAPE = dict(n_genes=8763, n_samples=938, n_bootstrap=1000, k_low=187, k_high=187, kr_low=149, kr_high=149)


def test_estimators_grow_with_the_work():
    est_b = get_estimator("02b")
    small = est_b(**SHAPE, n_edges=100_000, edge_chunk=1_000).total_bytes
    large = est_b(**SHAPE, n_edges=100_000, edge_chunk=100_000).total_bytes
    assert small < large < 2 * 1024**3
    assert est_b(**{**SHAPE, "n_bootstrap": 2000}, n_edges=10_000, edge_chunk=10_000).total_bytes > \
        est_b(**SHAPE, n_edges=10_000, edge_chunk=10_000).total_bytes
    est_a = get_estimator("02a")
    a = dict(n_genes=8763, n_samples=938, k_low=187, k_high=187)
    assert est_a(**a, fdr_alpha=0.05, tile_rows=64).total_bytes < est_a(**a, fdr_alpha=0.05, tile_rows=1024).total_bytes
    # 02a streams its statistics and edges (fixed budgets): alpha and exact_q change the time only
    assert est_a(**a, fdr_alpha=0.05).total_bytes == est_a(**a, fdr_alpha=0.7).total_bytes
    assert est_a(**a, fdr_alpha=0.7).total_bytes == est_a(**a, fdr_alpha=0.7, exact_q=True).total_bytes
    assert est_a(**{**a, "n_genes": 20_000}).total_bytes > est_a(**a).total_bytes


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    data = make_synthetic(n_genes=40, n_samples=100, seed=9, n_modulators=2, module_size=8)
    x = data.matrix
    folder = tmp_path_factory.mktemp("s02_mem")
    expr, idx = write_inputs(folder, x, n_bootstrap=25)
    gene = data.modulators[0]
    done = run_inproc(SCRIPT_02A, "--expr-h5", expr, "--indices-h5", idx, "--out-dir", folder / "base",
                      "--fdr-alpha", 0.3, "--gene-index", gene)
    assert done.returncode == 0, done.stderr
    return folder, expr, idx, gene


def test_edge_chunks_give_the_same_statistics(inputs):
    folder, expr, idx, gene = inputs
    outs = []
    for chunk in ("auto", 3):
        out = folder / f"boot_{chunk}"
        done = run_inproc(SCRIPT_02B, "--expr-h5", expr, "--indices-h5", idx, "--base-dir", folder / "base",
                          "--out-dir", out, "--gene-index", gene, "--batch-size", chunk)
        assert done.returncode == 0, done.stderr
        outs.append(read_edges(next(out.glob("*.h5"))))
    (meta1, one), (meta2, two) = outs
    assert meta2["edge_chunk"] == 3 < meta1["edge_chunk"] == meta1["n_sig_edges"]
    assert sorted(one) == sorted(two)
    for name in one:  # exact integer rank products: bit-identical whatever the chunks
        if one[name].dtype.kind in "biuf":
            np.testing.assert_array_equal(one[name], two[name], err_msg=name)
        else:
            assert list(one[name]) == list(two[name])


def test_planned_out_of_memory_exits_3(inputs):
    folder, expr, idx, gene = inputs
    done = run_inproc(SCRIPT_02A, "--expr-h5", expr, "--indices-h5", idx, "--out-dir", folder / "oom",
                      "--gene-index", gene, mem_limit="64M")
    assert done.returncode == 3 and "memory estimate for stage 02a" in done.stderr
    assert not list((folder / "oom").glob("*.h5"))
    done = run_inproc(SCRIPT_02B, "--expr-h5", expr, "--indices-h5", idx, "--base-dir", folder / "base",
                      "--out-dir", folder / "oom_b", "--gene-index", gene, mem_limit="32M")
    assert done.returncode == 1 or done.returncode == 3
    assert "memory" in done.stderr
