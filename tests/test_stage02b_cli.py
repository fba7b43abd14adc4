"""Stage 02b as a command: determinism over task splits, skipping, records, bad input."""

from __future__ import annotations

import json
import os

import h5py
import pytest
from util_stage02 import (
    SCRIPT_02A,
    SCRIPT_02B,
    assert_same_tree,
    h5_tree,
    no_temporaries,
    planted_matrix,
    run_inproc,
    write_inputs,
)

B = 30


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    x, data = planted_matrix(n_genes=30, n_samples=80, seed=6, module_size=5)
    folder = tmp_path_factory.mktemp("s02b_cli")
    expr, idx = write_inputs(folder, x, n_bootstrap=B)
    base = folder / "base"
    done = run_inproc(SCRIPT_02A, "--expr-h5", expr, "--indices-h5", idx, "--out-dir", base,
                      "--fdr-alpha", 0.5, "--gene-range", "0:8")
    assert done.returncode == 0, done.stderr
    return folder, expr, idx, base, x


def _run(inputs, out, *extra):
    folder, expr, idx, base, _ = inputs
    return run_inproc(SCRIPT_02B, "--expr-h5", expr, "--indices-h5", idx, "--base-dir", base, "--out-dir", out, *extra)


def test_same_output_for_any_task_split(inputs):
    folder = inputs[0]
    outs = {}
    for label, runs in {
        "alone": [("--gene-index", g) for g in range(8)],
        "chunk4": [("--genes-per-task", 4, "--task-id", t) for t in (1, 2)],
        "range": [("--gene-range", "0:8")],
    }.items():
        out = folder / f"split_{label}"
        for args in runs:
            done = _run(inputs, out, *args)
            assert done.returncode == 0, done.stderr
        outs[label] = out
    names = sorted(p.name for p in outs["alone"].glob("*.h5"))
    assert len(names) == 8
    edges = 0
    for label in ("chunk4", "range"):
        for name in names:
            assert_same_tree(h5_tree(outs["alone"] / name), h5_tree(outs[label] / name))
    for name in names:
        edges += h5py.File(outs["alone"] / name, "r")["meta"].attrs["n_sig_edges"]
    assert edges > 0


def test_records_skip_and_force(inputs):
    out = inputs[0] / "records"
    assert _run(inputs, out, "--gene-range", "1:3").returncode == 0
    record = json.loads((out / "memory" / "02b.genes_0001-0002.memory.json").read_text())
    assert record["stage"] == "02b" and record["peak_rss_bytes"] > 0 and record["estimate_bytes"] > 0
    path = out / "0001_g1.h5"
    with h5py.File(path, "r") as f:
        assert f["memfit"].attrs["peak_rss_bytes"] > 0
        meta = f["meta"].attrs
        for name in ("n_genes", "n_sig_edges", "n_bootstrap", "edge_selection_mode", "ci_alpha", "fdr_alpha",
                     "gene_index_used", "gene_name", "k_low", "k_high", "expr_content_sha256"):
            assert name in meta
        for name in ("boot/delta_mean", "boot/delta_std", "boot/ci_low", "boot/ci_high", "boot/n_finite",
                     "boot/n_minority", "gene_names"):
            assert name in f
        for name in ("edges/pair_index", "edges/gene_i", "base/delta", "base/r_low", "boot/bias", "pval/bootstrap_pval"):
            assert name not in f, name  # format 3: from the 02a file or computed on read (iter_boot_edges)
    before = os.stat(path).st_mtime_ns
    assert _run(inputs, out, "--gene-range", "1:3").returncode == 0
    assert os.stat(path).st_mtime_ns == before
    assert _run(inputs, out, "--gene-range", "1:3", "--ci-alpha", 0.2).returncode == 0
    assert os.stat(path).st_mtime_ns != before  # other parameters: recomputed


def test_n_bootstrap_mismatch(inputs, tmp_path):
    done = _run(inputs, tmp_path / "out", "--gene-index", 0, "--n-bootstrap", B + 1)
    assert done.returncode == 2 and f"B = {B}" in done.stderr and "Traceback" not in done.stderr


def test_base_from_another_alpha(inputs, tmp_path):
    done = _run(inputs, tmp_path / "out", "--gene-range", "0:2", "--fdr-alpha", 0.05)
    assert done.returncode == 1
    assert "--fdr-alpha 0.5, not the 0.05 asked" in done.stderr
    assert "gene(s) failed: 0 (" in done.stderr and ", 1 (" in done.stderr
    assert not list((tmp_path / "out").glob("*.h5"))


def test_missing_and_truncated_base_files(inputs, tmp_path):
    folder, expr, idx, base, _ = inputs
    partial = tmp_path / "base"
    partial.mkdir()
    for gene in (0, 2):
        (partial / f"000{gene}_g{gene}.h5").write_bytes((base / f"000{gene}_g{gene}.h5").read_bytes())
    data = (base / "0003_g3.h5").read_bytes()
    (partial / "0003_g3.h5").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    done = run_inproc(SCRIPT_02B, "--expr-h5", expr, "--indices-h5", idx, "--base-dir", partial, "--out-dir", out,
                      "--gene-range", "0:4")
    assert done.returncode == 1, done.stderr
    assert "2 gene(s) failed: 1 (" in done.stderr and "missing" in done.stderr and "3 (" in done.stderr
    assert sorted(p.name for p in out.glob("*.h5")) == ["0000_g0.h5", "0002_g2.h5"]
    assert no_temporaries(out) and "Traceback" not in done.stderr


def test_indices_from_another_expression_file(inputs, tmp_path):
    folder, expr, idx, base, x = inputs
    other_expr, _ = write_inputs(tmp_path / "other", x * 2.0, n_bootstrap=B)
    done = run_inproc(SCRIPT_02B, "--expr-h5", other_expr, "--indices-h5", idx, "--base-dir", base,
                      "--out-dir", tmp_path / "out", "--gene-index", 0)
    assert done.returncode == 2 and "different expression file" in done.stderr


def test_base_from_other_groups(inputs, tmp_path):
    folder, expr, idx, base, x = inputs
    _, other_idx = write_inputs(tmp_path / "other", x, n_bootstrap=B, low_frac=0.25)
    done = run_inproc(SCRIPT_02B, "--expr-h5", expr, "--indices-h5", other_idx, "--base-dir", base,
                      "--out-dir", tmp_path / "out", "--gene-index", 0)
    assert done.returncode == 1 and "different LOW/HIGH groups" in done.stderr


def test_bad_flags(inputs, tmp_path):
    assert _run(inputs, tmp_path / "o", "--gene-index", 99).returncode == 2
    assert _run(inputs, tmp_path / "o", "--gene-index", 0, "--edge-selection", "all").returncode == 2
    assert _run(inputs, tmp_path / "o", "--gene-index", 0, "--ci-alpha", 1.5).returncode == 2
    done = _run(inputs, tmp_path / "o", "--gene-index", 0, "--base-dir", tmp_path / "nowhere")
    assert done.returncode == 2
