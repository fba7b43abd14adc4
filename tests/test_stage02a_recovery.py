"""Planted rewiring (dcoex.synthetic) is recovered by 02a at alpha 0.05, and 02b's CIs
exclude 0 for the recovered planted pairs."""

from __future__ import annotations

import numpy as np
from util_stage02 import SCRIPT_02A, SCRIPT_02B, run_inproc, write_inputs

from dcoex.edge_files import iter_boot_edges, read_base_edges
from dcoex.genes import gene_file_path
from dcoex.synthetic import make_synthetic


def test_planted_pairs_recovered(tmp_path):
    data = make_synthetic(n_genes=200, n_samples=400, seed=1, n_modulators=3, module_size=20)
    expr, idx = write_inputs(tmp_path, data.matrix, n_bootstrap=100)
    args = ["--expr-h5", expr, "--indices-h5", idx]
    for m in data.modulators:
        args += ["--gene-index", m]
    done = run_inproc(SCRIPT_02A, *args, "--out-dir", tmp_path / "base", "--fdr-alpha", 0.05)
    assert done.returncode == 0, done.stderr
    done = run_inproc(SCRIPT_02B, *args, "--base-dir", tmp_path / "base", "--out-dir", tmp_path / "boot")
    assert done.returncode == 0, done.stderr
    n = data.matrix.shape[0]
    for m in data.modulators:
        planted = {(p["gene_i"], p["gene_j"]) for p in data.pairs if p["modulator"] == m}
        base = read_base_edges(gene_file_path(tmp_path / "base", m, f"g{m}", n))[1]
        found = set(zip(base["gene_i"].tolist(), base["gene_j"].tolist()))
        hits = planted & found
        assert len(hits) / len(planted) >= 0.9, (m, len(hits), len(planted))
        assert len(hits) / len(found) >= 0.9, (m, len(hits), len(found))
        boot = [c for c in iter_boot_edges(gene_file_path(tmp_path / "base", m, f"g{m}", n),
                                           gene_file_path(tmp_path / "boot", m, f"g{m}", n), chunk_edges=1 << 20)]
        pairs = [p for c in boot for p in zip(c["gene_i"].tolist(), c["gene_j"].tolist())]
        excludes_zero = [ok for c in boot for ok in ((c["ci_low"] > 0) | (c["ci_high"] < 0)).tolist()]
        confirmed = {p for p, ok in zip(pairs, excludes_zero) if ok}
        assert len(planted & confirmed) / len(planted) >= 0.9
        assert np.all([p in found for p in pairs])
