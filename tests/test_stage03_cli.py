"""Stage 03 as a command: task splits, skipping, bad input, memory records."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from util_stage03 import (
    STAGE03,
    flat_index,
    gene_names,
    h5_differences,
    make_edges,
    network_edges,
    random_edges,
    run_cli,
    write_inputs,
)

from dcoex.genes import gene_file_path
from dcoex.stages.s03_network.build import NetworkOptions
from dcoex.stages.s03_network.cli import run_network
from dcoex.stages.s03_network.focus import METRIC_NAMES
from hpc.errors import GenesFailedError, InputError

N = 120
NAMES = gene_names(N)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("in03")
    for g in range(6):
        write_inputs(root / "base", root / "boot", g, NAMES, random_edges(N, 400 + 50 * g, seed=g))
    return root


def test_same_output_whatever_the_task_split(inputs, tmp_path):
    run_network(inputs / "base", inputs / "boot", tmp_path / "a", genes=range(6))
    for task in (1, 2, 3):
        run_network(inputs / "base", inputs / "boot", tmp_path / "b",
                    gene_selection={"genes_per_task": 2, "task_id": task})
    for g in range(6):
        a = gene_file_path(tmp_path / "a", g, NAMES[g], N)
        b = gene_file_path(tmp_path / "b", g, NAMES[g], N)
        assert h5_differences(a, b) == []
    sidecars = sorted(p.name for p in (tmp_path / "b" / "memory").iterdir())
    assert sidecars == ["03.genes_0000-0001.memory.json", "03.genes_0002-0003.memory.json",
                        "03.genes_0004-0005.memory.json"]
    record = json.loads((tmp_path / "b" / "memory" / sidecars[0]).read_text())
    assert record["peak_rss_bytes"] > 0 and record["estimate_bytes"] > 0 and record["written"] == [0, 1]
    with h5py.File(gene_file_path(tmp_path / "a", 0, NAMES[0], N), "r") as f:
        assert f["memfit"].attrs["peak_rss_bytes"] > 0
        assert set(f["focus_gene/metrics"].attrs) == set(METRIC_NAMES)


def test_skip_valid_outputs_unless_forced_or_options_change(inputs, tmp_path):
    out = tmp_path / "net"
    assert run_network(inputs / "base", inputs / "boot", out, genes=[0, 1])["written"] == [0, 1]
    assert run_network(inputs / "base", inputs / "boot", out, genes=[0, 1])["skipped"] == [0, 1]
    assert run_network(inputs / "base", inputs / "boot", out, genes=[0], force=True)["written"] == [0]
    result = run_network(inputs / "base", inputs / "boot", out, genes=[0, 1], options=NetworkOptions(min_effect=0.3))
    assert result["written"] == [0, 1]
    with h5py.File(gene_file_path(out, 1, NAMES[1], N), "r") as f:
        assert f["meta"].attrs["min_effect"] == 0.3
    assert np.all(np.abs(network_edges(gene_file_path(out, 1, NAMES[1], N))["delta_base"]) >= 0.3)
    # new upstream inputs (another expression checksum): recomputed
    with h5py.File(gene_file_path(inputs / "base", 1, NAMES[1], N), "r+") as f:
        f["meta"].attrs["expr_content_sha256"] = "1" * 64
    try:
        with h5py.File(gene_file_path(inputs / "boot", 1, NAMES[1], N), "r+") as f:
            f["meta"].attrs["expr_content_sha256"] = "1" * 64
        result = run_network(inputs / "base", inputs / "boot", out, genes=[0, 1], options=NetworkOptions(min_effect=0.3))
        assert result["written"] == [1] and result["skipped"] == [0]
    finally:
        for folder in ("base", "boot"):
            with h5py.File(gene_file_path(inputs / folder, 1, NAMES[1], N), "r+") as f:
                f["meta"].attrs["expr_content_sha256"] = "0" * 64
    # a truncated output is not valid: recomputed
    path = gene_file_path(out, 1, NAMES[1], N)
    path.write_bytes(b"not hdf5")
    result = run_network(inputs / "base", inputs / "boot", out, genes=[1], options=NetworkOptions(min_effect=0.3))
    assert result["written"] == [1]


def test_failing_gene_does_not_stop_others(tmp_path):
    e = random_edges(N, 200, seed=3)
    write_inputs(tmp_path / "base", tmp_path / "boot", 0, NAMES, e)
    pairs = np.sort(flat_index(e["gene_i"], e["gene_j"], N))
    shifted = pairs.copy()
    shifted[5] += 1 if shifted[5] + 1 != shifted[6] else -1
    write_inputs(tmp_path / "base", tmp_path / "boot", 1, NAMES, e, boot_pair_index=shifted)
    write_inputs(tmp_path / "base", tmp_path / "boot", 2, NAMES, e, boot_pair_index=pairs[:-3])
    write_inputs(tmp_path / "base", tmp_path / "boot", 3, NAMES, e, boot_meta={"gene_index_used": 4})
    write_inputs(tmp_path / "base", None, 4, NAMES, e)
    write_inputs(tmp_path / "base", None, 5, NAMES, make_edges([], [], [], []))
    with pytest.raises(GenesFailedError) as info:
        run_network(tmp_path / "base", tmp_path / "boot", tmp_path / "net", genes=range(7))
    failures = info.value.failures
    assert sorted(failures) == [1, 2, 3, 4, 6]
    assert "edge sets differ at 1 of 200 positions" in failures[1] and "G1" in failures[1]
    assert "200 sig_differential edges" in failures[2] and "197" in failures[2]
    assert "gene index 4, not 3" in failures[3]
    assert "bootstrap (02b) file" in failures[4] and "missing" in failures[4] and "200 edges" in failures[4]
    assert "base (02a) file" in failures[6] and "missing" in failures[6]
    written = sorted(p.name for p in (tmp_path / "net").glob("*.h5"))
    assert written == ["0000_G0.h5", "0005_G5.h5"]  # gene 5: no edges and no 02b file is fine
    assert not [p for p in (tmp_path / "net").iterdir() if ".tmp-" in p.name]
    with h5py.File(tmp_path / "net" / "0005_G5.h5", "r") as f:
        assert f["meta"].attrs["n_significant"] == 0 and f["edges/qual_score"].shape == (0,)
    assert network_edges(tmp_path / "net" / "0005_G5.h5")["gene_i"].shape == (0,)


def test_command_line_bad_input_is_one_line(inputs, tmp_path):
    res = run_cli(STAGE03, "--base-dir", tmp_path / "nothing", "--boot-dir", inputs / "boot",
                  "--out-dir", tmp_path / "net", "--gene-index", "0")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "does not exist" in res.stderr
    res = run_cli(STAGE03, "--base-dir", inputs / "base", "--boot-dir", inputs / "base",
                  "--out-dir", tmp_path / "net", "--gene-index", "0", "--gene-index", "1", "--quiet")
    # the 02a files given as 02b files: they lack boot/ datasets
    assert res.returncode == 1 and "2 gene(s) failed" in res.stderr and "Traceback" not in res.stderr
    assert not list((tmp_path / "net").glob("*.h5"))
    res = run_cli(STAGE03, "--base-dir", inputs / "base", "--boot-dir", inputs / "boot",
                  "--out-dir", tmp_path / "net", "--gene-range", "3:999")
    assert res.returncode == 2 and "--gene-range 3:999" in res.stderr


def test_gene_universe_from_expression_h5(inputs, tmp_path):
    expr = tmp_path / "expression.h5"
    with h5py.File(expr, "w") as f:
        f["expr"] = np.zeros((N, 8), np.float32)
        f.create_dataset("gene_names", data=np.asarray(NAMES, dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("sample_names", data=np.asarray([f"S{k}" for k in range(8)], dtype=object),
                         dtype=h5py.string_dtype())
        f.attrs["content_sha256"] = "f" * 64
    with pytest.raises(GenesFailedError) as info:
        run_network(inputs / "base", inputs / "boot", tmp_path / "net", genes=[2], expr_h5=str(expr))
    assert "another expression matrix" in info.value.failures[2]
    with pytest.raises(InputError):
        run_network(tmp_path / "empty", inputs / "boot", tmp_path / "net", genes=[2])


def test_estimate_over_the_limit_fails_fast(inputs, tmp_path):
    res = run_cli(STAGE03, "--base-dir", inputs / "base", "--boot-dir", inputs / "boot", "--out-dir",
                  tmp_path / "net", "--gene-index", "0", env={"MEMFIT_MEM_LIMIT": "40M"})
    assert res.returncode == 3, res.stderr
    assert "memory estimate for stage 03" in res.stderr and "out of memory (planned)" in res.stderr
    assert not list((tmp_path / "net").glob("*.h5"))


def test_estimators_grow_with_their_inputs():
    from dcoex.stages import get_estimator

    est03 = get_estimator("03")
    small, big = est03(n_genes=8763, n_edges=100), est03(n_genes=8763, n_edges=200_000)
    assert small.total_bytes < big.total_bytes < 1024**3
    assert big.components["edges"] == 2000 * small.components["edges"]
    assert est03(n_genes=8763).params["n_edges"] > 0
    est03b = get_estimator("03b")
    assert est03b(n_genes=100).total_bytes < est03b(n_genes=8763).total_bytes


def test_sig_edges_selection_uses_the_matching_base_subset(tmp_path):
    e = random_edges(N, 300, seed=8)
    pairs = flat_index(e["gene_i"], e["gene_j"], N)
    chosen = np.sort(pairs[e["sig_low"] | e["sig_high"]])
    assert 0 < chosen.size < 300
    write_inputs(tmp_path / "base", tmp_path / "boot", 0, NAMES, e, boot_pair_index=chosen,
                 boot_meta={"edge_selection_mode": "sig_edges"})
    run_network(tmp_path / "base", tmp_path / "boot", tmp_path / "net", genes=[0],
                options=NetworkOptions(ci_filter=False))
    with h5py.File(gene_file_path(tmp_path / "net", 0, NAMES[0], N), "r") as f:
        assert f["meta"].attrs["edge_selection"] == "sig_edges"
        assert f["meta"].attrs["n_candidate_edges"] == chosen.size
    assert network_edges(gene_file_path(tmp_path / "net", 0, NAMES[0], N))["pair_index"].tolist() == chosen.tolist()
    write_inputs(tmp_path / "base", tmp_path / "boot", 1, NAMES, e, boot_meta={"edge_selection_mode": "sig_edges"})
    with pytest.raises(GenesFailedError) as info:
        run_network(tmp_path / "base", tmp_path / "boot", tmp_path / "net", genes=[1])
    assert f"base (02a) file has {chosen.size} sig_edges edges, bootstrap (02b) file has 300" in info.value.failures[1]


def test_reader_columns_do_not_depend_on_the_expected_count(inputs):
    """The kept edges are read into columns allocated for the expected count: a wrong guess
    (too small: grown; too large: trimmed) gives the same edges as reading without one, and
    the same as a naive filter of the whole files."""
    from dcoex.stages.s03_network.classify import select_edges
    from dcoex.stages.s03_network.io import read_gene_inputs

    def keep(e):
        return select_edges(e["delta"], e["ci_low"], e["ci_high"], 0.1, True)

    paths = (gene_file_path(inputs / "base", 5, NAMES[5], N), gene_file_path(inputs / "boot", 5, NAMES[5], N))
    with h5py.File(paths[1], "r") as f:
        delta, lo, hi = f["base/delta"][()], f["boot/ci_low"][()], f["boot/ci_high"][()]
        pairs = f["edges/pair_index"][()]
    naive = [p for p, d, a, b in zip(pairs, delta, lo, hi, strict=True) if abs(float(d)) >= 0.1 and (a > 0 or b < 0)]
    results = [read_gene_inputs(*paths, 5, NAMES[5], N, keep=keep, chunk_edges=64, expected_kept=guess)
               for guess in (None, 1, len(naive), 10 * len(naive))]
    for r in results:
        assert r.edges["pair_index"].tolist() == naive and r.n_candidates == pairs.size
        for name, column in results[0].edges.items():
            assert np.array_equal(r.edges[name], column, equal_nan=True), name


def test_peak_is_within_the_estimate(tmp_path):
    """Issue 11: the stage's own estimate within +25 % / −5 % of its measured peak (the task
    sidecar's, sampled resident set and VmHWM) for a gene of 6·10^5 edges over 3,000 genes."""
    n = 3000
    names = gene_names(n)
    write_inputs(tmp_path / "base", tmp_path / "boot", 7, names, random_edges(n, 600_000, seed=11))
    res = run_cli(STAGE03, "--base-dir", tmp_path / "base", "--boot-dir", tmp_path / "boot", "--out-dir",
                  tmp_path / "net", "--gene-index", 7, "--quiet")
    assert res.returncode == 0, res.stderr
    record = json.loads(next((tmp_path / "net" / "memory").glob("*.memory.json")).read_text())
    assert record["per_gene"]["7"]["n_edges"] > 300_000
    assert record["peak_rss_bytes"] <= 1.05 * record["estimate_bytes"], record
    assert record["estimate_bytes"] <= 1.25 * record["peak_rss_bytes"], record
