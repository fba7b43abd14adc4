"""Stage 02a as a command: determinism over task splits, skipping, records, bad input."""

from __future__ import annotations

import json
import os
import shutil

import h5py
import numpy as np
import pytest
from util_stage02 import (
    SCRIPT_02A,
    assert_same_tree,
    corrupt_chunk,
    h5_tree,
    no_temporaries,
    planted_matrix,
    run_inproc,
    run_script,
    write_inputs,
)

N_GENES = 30


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    x, _ = planted_matrix(n_genes=N_GENES, n_samples=60, seed=5, module_size=4)
    folder = tmp_path_factory.mktemp("s02a_cli")
    expr, idx = write_inputs(folder, x, n_bootstrap=8, compress=True)
    return folder, expr, idx, x


def _run(expr, idx, out, *extra, alpha=0.3):
    return run_inproc(SCRIPT_02A, "--expr-h5", expr, "--indices-h5", idx, "--out-dir", out,
                      "--fdr-alpha", alpha, *extra)


def test_same_output_for_any_task_split(inputs):
    folder, expr, idx, _ = inputs
    outs = {}
    for label, runs in {
        "alone": [("--gene-index", g) for g in range(6)],
        "chunk4": [("--genes-per-task", 4, "--task-id", t) for t in (1, 2)],
        "range_tile3": [("--gene-range", "0:6", "--batch-size", 3)],
    }.items():
        out = folder / f"split_{label}"
        for args in runs:
            done = _run(expr, idx, out, *args)
            assert done.returncode == 0, done.stderr
        outs[label] = out
    names = sorted(p.name for p in outs["alone"].glob("*.h5"))
    assert len(names) == 6
    for label in ("chunk4", "range_tile3"):
        assert sorted(p.name for p in outs[label].glob("*.h5"))[:6] == names
        for name in names:
            assert_same_tree(h5_tree(outs["alone"] / name), h5_tree(outs[label] / name))
    edges = sum(h5py.File(outs["alone"] / n, "r")["edges/pair_index"].shape[0] for n in names)
    assert edges > 0


def test_records_skip_and_force(inputs):
    folder, expr, idx, _ = inputs
    out = folder / "records"
    done = _run(expr, idx, out, "--gene-range", "2:4")
    assert done.returncode == 0, done.stderr
    sidecar = out / "memory" / "02a.genes_0002-0003.memory.json"
    record = json.loads(sidecar.read_text())
    assert record["stage"] == "02a" and record["peak_rss_bytes"] > 0 and record["estimate_bytes"] > 0
    path = out / "0002_g2.h5"
    with h5py.File(path, "r") as f:
        assert f["memfit"].attrs["peak_rss_bytes"] > 0
        assert f["meta"].attrs["expr_content_sha256"] == h5py.File(expr, "r").attrs["content_sha256"]
        for name in ("n_tests", "n_excluded", "n_sig_low", "n_sig_high", "n_sig_differential", "n_sig_edges",
                     "k_low", "k_high", "fdr_alpha", "gene_index_used", "storage_mode"):
            assert name in f["meta"].attrs
        assert list(f["gene_names"].asstr()[()]) == [f"g{i}" for i in range(N_GENES)]
    before = os.stat(path).st_mtime_ns
    assert _run(expr, idx, out, "--gene-range", "2:4").returncode == 0
    assert os.stat(path).st_mtime_ns == before  # valid output skipped
    assert _run(expr, idx, out, "--gene-range", "2:4", "--force").returncode == 0
    assert os.stat(path).st_mtime_ns != before
    # another alpha does not validate: recomputed
    assert _run(expr, idx, out, "--gene-index", 2, alpha=0.05).returncode == 0
    assert h5py.File(path, "r")["meta"].attrs["fdr_alpha"] == 0.05


def test_indices_from_another_expression_file(inputs, tmp_path):
    folder, expr, idx, x = inputs
    other_expr, _ = write_inputs(tmp_path / "other", x + 1.0, n_bootstrap=8)
    done = _run(other_expr, idx, tmp_path / "out", "--gene-index", 0)
    assert done.returncode == 2
    assert "different expression file" in done.stderr and "Traceback" not in done.stderr
    assert not list((tmp_path / "out").glob("*.h5"))


def test_indices_missing_genes(inputs, tmp_path):
    folder, expr, idx, x = inputs
    _, short_idx = write_inputs(tmp_path / "short", x[:-3], n_bootstrap=8)
    with h5py.File(short_idx, "r+") as f:
        f["meta"].attrs["expr_content_sha256"] = h5py.File(expr, "r").attrs["content_sha256"]
    done = _run(expr, short_idx, tmp_path / "out", "--gene-index", 0)
    assert done.returncode == 2 and f"covers {N_GENES - 3} genes" in done.stderr


def test_gene_index_out_of_range(inputs, tmp_path):
    folder, expr, idx, _ = inputs
    done = _run(expr, idx, tmp_path / "out", "--gene-index", N_GENES)
    assert done.returncode == 2 and "out of range" in done.stderr and "Traceback" not in done.stderr


def test_truncated_indices_file(inputs, tmp_path):
    """Also runs the numbered script as a file (the shim)."""
    folder, expr, idx, _ = inputs
    bad = tmp_path / "truncated.h5"
    data = idx.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    done = run_script(SCRIPT_02A, "--expr-h5", expr, "--indices-h5", bad, "--out-dir", tmp_path / "out",
                      "--gene-index", 0)
    assert done.returncode == 2 and "truncated.h5" in done.stderr and "Traceback" not in done.stderr


def test_corrupt_gene_fails_alone(inputs, tmp_path):
    folder, expr, idx, _ = inputs
    bad = tmp_path / "corrupt.h5"
    shutil.copy(idx, bad)
    corrupt_chunk(bad, "indices/low", 2)
    out = tmp_path / "out"
    done = _run(expr, bad, out, "--gene-range", "0:4")
    assert done.returncode == 1, done.stderr
    assert "gene(s) failed: 2 (" in done.stderr
    assert sorted(p.name for p in out.glob("*.h5")) == ["0000_g0.h5", "0001_g1.h5", "0003_g3.h5"]
    assert no_temporaries(out)


def test_group_where_every_gene_is_constant(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 40)).astype(np.float32)
    x[:, :8] = 0.0  # the 8 lowest samples of gene 0 are zero for every gene
    x[0, 8:] = np.abs(x[0, 8:]) + 1.0
    expr, idx = write_inputs(tmp_path, x, n_bootstrap=4)
    done = _run(expr, idx, tmp_path / "out", "--gene-index", 0)
    assert done.returncode == 0, done.stderr
    assert "no testable pairs" in done.stderr
    with h5py.File(tmp_path / "out" / "0000_g0.h5", "r") as f:
        meta = f["meta"].attrs
        assert meta["n_const_low"] == 12 and meta["n_tests_low"] == 0 and meta["n_tests_diff"] == 0
        assert meta["n_sig_differential"] == 0 and f["edges/pair_index"].shape == (0,)


def test_bad_alpha(inputs, tmp_path):
    folder, expr, idx, _ = inputs
    done = _run(expr, idx, tmp_path / "out", "--gene-index", 0, alpha=1.5)
    assert done.returncode == 2 and "--fdr-alpha" in done.stderr
