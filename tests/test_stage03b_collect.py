"""Stage 03b: parameters recorded, expected genes, bad input (nothing half-written)."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from util_stage03 import STAGE03B, gene_names, random_edges, run_cli, write_inputs

from dcoex.stages.s03_network.build import NetworkOptions
from dcoex.stages.s03_network.cli import run_network

N = 60
NAMES = gene_names(N)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("in03b")
    for g in range(4):
        write_inputs(root / "base", root / "boot", g, NAMES, random_edges(N, 150, seed=10 + g),
                     boot_meta={"n_bootstrap": 250, "ci_alpha": 0.1})
    return root


def test_parameters_are_the_runs_and_gene_list_defines_missing(inputs, tmp_path):
    opts = NetworkOptions(min_effect=0.2, corr_threshold=0.05, ci_filter=False, zero_undefined=True)
    run_network(inputs / "base", inputs / "boot", tmp_path / "net", genes=[0, 1, 3], options=opts)
    (tmp_path / "genes.txt").write_text("G0\nG1\nindex:2\nG3\n")
    res = run_cli(STAGE03B, "--networks-dir", tmp_path / "net", "--out-h5", tmp_path / "out" / "summary.h5",
                  "--out-focus-tsv", tmp_path / "out" / "hubs.tsv", "--gene-list", tmp_path / "genes.txt", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "1 expected gene(s) have no network file" in res.stderr
    with h5py.File(tmp_path / "out" / "summary.h5", "r") as f:
        meta = dict(f["meta"].attrs)
        assert [s.decode() for s in f["per_gene/status"][()]] == ["ok", "ok", "missing", "ok"]
        assert f["per_gene/gene_index"][()].tolist() == [0, 1, 2, 3]
        full = f["per_gene/full_n_edges"][()]
        l1l2 = f["per_gene/n_l1_to_l2_edges"][()]
        l2 = f["per_gene/L2_n_edges"][()]
        l1 = f["per_gene/L1_n_nodes"][()]
        l1l1 = f["per_gene/n_l1_to_l1_edges"][()]
    assert meta["min_effect"] == 0.2 and meta["corr_threshold"] == 0.05
    assert not meta["require_ci_exclude_zero"] and meta["zero_undefined"]
    assert meta["n_bootstrap"] == 250 and meta["ci_alpha"] == 0.1 and meta["expected_genes"] == "gene_list"
    ok = [0, 1, 3]
    assert np.all(full[ok] > 0) and np.all(l1l2[ok] > 0)
    assert np.array_equal(l1l1[ok] + l1l2[ok], l2[ok]) and np.array_equal(full[ok], l1[ok] + l2[ok])
    lines = (tmp_path / "out" / "hubs.tsv").read_text().splitlines()
    assert len(lines) == 4 and all(len(line.split("\t")) == 56 for line in lines)
    assert sorted(int(line.split("\t")[0]) for line in lines[1:]) == ok
    assert sorted((tmp_path / "out").iterdir()) == [tmp_path / "out" / "hubs.tsv", tmp_path / "out" / "summary.h5",
                                                    tmp_path / "out" / "summary.h5.memory.json"]


def run_bad(tmp_path, networks):
    out = tmp_path / "out"
    res = run_cli(STAGE03B, "--networks-dir", networks, "--out-h5", out / "summary.h5",
                  "--out-focus-tsv", out / "hubs.tsv")
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
    assert not out.exists() or not list(out.iterdir())
    return res.stderr


def test_gene_list_bare_number_is_refused(inputs, tmp_path):
    """Genes are G0..: "2" is no gene's name, and a bare number is never read as an index."""
    run_network(inputs / "base", inputs / "boot", tmp_path / "net", genes=[0, 1])
    (tmp_path / "genes.txt").write_text("G0\n2\n")
    out = tmp_path / "out"
    res = run_cli(STAGE03B, "--networks-dir", tmp_path / "net", "--out-h5", out / "summary.h5", "--gene-list",
                  tmp_path / "genes.txt", "--quiet")
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0, res.stderr
    assert "1 unknown gene(s): 2 (not gene names; write a 0-based index as index:N)" in res.stderr
    assert not out.exists() or not list(out.iterdir())


def test_empty_networks_folder(tmp_path):
    (tmp_path / "net").mkdir()
    assert "no network files" in run_bad(tmp_path, tmp_path / "net")


def test_mixed_parameter_sets_are_listed(inputs, tmp_path):
    run_network(inputs / "base", inputs / "boot", tmp_path / "net", genes=[0, 1])
    run_network(inputs / "base", inputs / "boot", tmp_path / "other", genes=[2],
                options=NetworkOptions(min_effect=0.3))
    shutil.copy(tmp_path / "other" / "0002_G2.h5", tmp_path / "net")
    message = run_bad(tmp_path, tmp_path / "net")
    assert "mixed parameter sets across 3 network files" in message
    assert "min_effect=0.0] in 2 file(s), e.g. 0000_G0.h5" in message
    assert "min_effect=0.3] in 1 file(s), e.g. 0002_G2.h5" in message


def test_unreadable_network_file(inputs, tmp_path):
    run_network(inputs / "base", inputs / "boot", tmp_path / "net", genes=[0])
    (tmp_path / "net" / "0001_G1.h5").write_bytes(b"truncated")
    assert "0001_G1.h5: not a readable stage 03 network file" in run_bad(tmp_path, tmp_path / "net")


def test_gene_without_inputs_for_bootstrap_does_not_mix_parameters(inputs, tmp_path):
    from util_stage03 import make_edges

    write_inputs(tmp_path / "base", None, 7, NAMES, make_edges([], [], [], []))
    run_network(tmp_path / "base", tmp_path / "boot", tmp_path / "net", genes=[7])
    run_network(inputs / "base", inputs / "boot", tmp_path / "net", genes=[0])
    res = run_cli(STAGE03B, "--networks-dir", tmp_path / "net", "--out-h5", tmp_path / "s.h5", "--quiet")
    assert res.returncode == 0, res.stderr
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert f["meta"].attrs["n_bootstrap"] == 250 and f["meta"].attrs["edge_selection"] == "sig_differential"
        status = [s.decode() for s in f["per_gene/status"][()]]
    assert status[0] == "ok" and status[7] == "no-edges" and status.count("missing") == N - 2


def test_summary_inside_the_networks_folder_is_not_read_as_a_network(inputs, tmp_path):
    run_network(inputs / "base", inputs / "boot", tmp_path / "net", genes=[0])
    for _ in range(2):
        res = run_cli(STAGE03B, "--networks-dir", tmp_path / "net", "--out-h5", tmp_path / "net" / "summary.h5", "--quiet")
        assert res.returncode == 0, res.stderr
