"""Stage 03 and 03b on a small hand-built network whose answers are worked out by hand.

N = 11 genes G0..G10. Candidate edges (r_low, r_high, sig_low, sig_high); CI = delta ± 0.05
unless noted; tau = 1e-4:
  e1  (0,1)  0.8 /  0.1   T/F  disappear        e7  (1,5)  0.6 / -0.2  T/T  sign_change
  e2  (0,2)  0.1 /  0.7   F/T  new              e8  (4,6)  0.2 /  0.8  F/T  new
  e3  (0,3)  0.5 / -0.6   T/T  sign_change      e9  (2,6) -0.7 / -0.1  T/F  disappear
  e4  (0,4)  0.3 /  0.9   T/T  strengthen       e10 (5,6)  0.5 /  0.5  T/T  unchanged (CI [0.01,0.02])
  e5  (1,2) -0.4 / -0.9   T/T  strengthen       e11 (7,8)  0.6 /  0.1  F/F  unchanged
  e6  (3,4)  0.9 /  0.2   T/T  weaken           e12 (0,9)  0.2 /  0.4  T/T  CI [-0.1,0.5]: not in E
  e13 (8,9)  0.00005 / 0.5  T/T  new (|r_low| < tau)
Gene 10 has no edge.
"""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
from util_stage03 import STAGE03, STAGE03B, gene_names, make_edges, network_edges, run_cli, write_inputs

from dcoex.genes import gene_file_path

EDGES = [
    # i, j, r_low, r_high, sig_low, sig_high
    (0, 1, 0.8, 0.1, True, False),
    (0, 2, 0.1, 0.7, False, True),
    (0, 3, 0.5, -0.6, True, True),
    (0, 4, 0.3, 0.9, True, True),
    (1, 2, -0.4, -0.9, True, True),
    (3, 4, 0.9, 0.2, True, True),
    (1, 5, 0.6, -0.2, True, True),
    (4, 6, 0.2, 0.8, False, True),
    (2, 6, -0.7, -0.1, True, False),
    (5, 6, 0.5, 0.5, True, True),
    (7, 8, 0.6, 0.1, False, False),
    (0, 9, 0.2, 0.4, True, True),
    (8, 9, 0.00005, 0.5, True, True),
]
N = 11
NAMES = gene_names(N)

# gene 0, written out by hand (see the module docstring)
EXPECTED_G0 = {
    "focus_deg_low": 3, "focus_deg_high": 3, "L1_n_nodes": 4,
    "L1_n_disappear": 1, "L1_n_new": 1, "L1_n_sign_chg": 1, "L1_n_strengthen": 1, "L1_n_weaken": 0,
    "L1_rewire": 3, "L1_frac_disappear": 0.25, "L1_frac_new": 0.25, "L1_frac_rewire": 0.75,
    "L1_conn_low": 1.6, "L1_conn_high": 2.2, "L1_conn_diff": 3.0,
    "L1_conn_mean_low": 1.6 / 3, "L1_conn_mean_high": 2.2 / 3,
    "L1_mean_abs_dr": 0.75, "L1_mean_delta": -0.15, "L1_clique_density": 2 / 6,
    "L1_n_edges_low": 3, "L1_n_edges_high": 3,
    "L2_n_nodes": 2, "L2_n_edges": 5,
    "L2_n_disappear": 1, "L2_n_new": 1, "L2_n_sign_chg": 1, "L2_n_strengthen": 1, "L2_n_weaken": 1,
    "L2_rewire": 3, "L2_conn_low": 2.6, "L2_conn_high": 2.1, "L2_conn_diff": 3.2,
    "L2_conn_mean_low": 0.65, "L2_conn_mean_high": 0.525, "L2_mean_abs_dr": 0.64, "L2_mean_delta": -0.16,
    "L2_n_edges_low": 4, "L2_n_edges_high": 4,
    "full_n_edges": 9, "full_rewire": 6, "full_conn_low": 4.2, "full_conn_high": 4.3, "full_conn_diff": 6.2,
    "full_mean_abs_dr": 6.2 / 9, "full_mean_delta": -1.4 / 9,
    "n_l1_to_l1_edges": 2, "n_l1_to_l2_edges": 3,
    "L2L1_deg": 0.5, "L2L1_rewire": 1.0, "L2L1_conn": 3.2 / 3.0, "HL_conn_L1": 2.2 / 1.6, "HL_conn_L2": 2.1 / 2.6,
}
EXPECTED_CODES = [1, 2, 3, 4, 4, 3, 1, 5, 2, 0, 0, 2]  # by flat index: (0,1) (0,2) (0,3) (0,4) (1,2) (1,5) (2,6) (3,4) (4,6) (5,6) (7,8) (8,9)

TSV_HEADER = (
    "gene_idx gene_id n_sig_edges_diff focus_deg_low focus_deg_high L1_n_nodes L1_n_disappear L1_n_new "
    "L1_n_sign_chg L1_n_strengthen L1_n_weaken L1_rewire L1_frac_disappear L1_frac_new L1_frac_rewire "
    "L1_conn_low L1_conn_high L1_conn_diff L1_conn_mean_low L1_conn_mean_high L1_mean_abs_dr L1_mean_delta "
    "L1_clique_density L1_n_edges_low L1_n_edges_high L2_n_nodes L2_n_edges L2_n_disappear L2_n_new "
    "L2_n_sign_chg L2_n_strengthen L2_n_weaken L2_rewire L2_conn_low L2_conn_high L2_conn_diff "
    "L2_conn_mean_low L2_conn_mean_high L2_mean_abs_dr L2_mean_delta L2_n_edges_low L2_n_edges_high "
    "full_n_edges full_rewire full_conn_low full_conn_high full_conn_diff full_mean_abs_dr full_mean_delta "
    "n_l1_to_l1_edges n_l1_to_l2_edges L2L1_deg L2L1_rewire L2L1_conn HL_conn_L1 HL_conn_L2"
).split()

TSV_ROW_G0 = (
    "0 G0 12 3 3 4 1 1 1 1 0 3 0.2500 0.2500 0.7500 1.6000 2.2000 3.0000 0.5333 0.7333 0.7500 -0.1500 "
    "0.3333 3 3 2 5 1 1 1 1 1 3 2.6000 2.1000 3.2000 0.6500 0.5250 0.6400 -0.1600 4 4 "
    "9 6 4.2000 4.3000 6.2000 0.6889 -0.1556 2 3 0.5000 1.0000 1.0667 1.3750 0.8077"
).split()


def hand_edges() -> dict[str, np.ndarray]:
    cols = list(zip(*EDGES))
    e = make_edges(cols[0], cols[1], cols[2], cols[3], sig_low=cols[4], sig_high=cols[5])
    e["ci_low"][9], e["ci_high"][9] = 0.01, 0.02  # e10: delta 0 but CI excludes 0
    e["ci_low"][11], e["ci_high"][11] = -0.1, 0.5  # e12: CI contains 0
    return e


@pytest.fixture(scope="module")
def hand_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hand")
    for g in (0, 5, 6, 7, 10):
        write_inputs(root / "base", root / "boot", g, NAMES, hand_edges())
    empty = make_edges([], [], [], [])
    write_inputs(root / "base", root / "boot", 9, NAMES, empty)
    res = run_cli(STAGE03, "--base-dir", root / "base", "--boot-dir", root / "boot", "--out-dir", root / "net",
                  "--gene-index", 0, "--gene-index", 5, "--gene-index", 6, "--gene-index", 7,
                  "--gene-index", 9, "--gene-index", 10, "--quiet")
    assert res.returncode == 0, res.stderr
    res = run_cli(STAGE03B, "--networks-dir", root / "net", "--out-h5", root / "summary.h5",
                  "--out-focus-tsv", root / "hubs.tsv", "--quiet")
    assert res.returncode == 0, res.stderr
    return root


def test_classes_and_edge_set(hand_run):
    edges = network_edges(gene_file_path(hand_run / "net", 0, "G0", N))
    pairs = list(zip(edges["gene_i"].tolist(), edges["gene_j"].tolist()))
    assert (0, 9) not in pairs and len(pairs) == 12
    assert edges["qual_score"].tolist() == EXPECTED_CODES
    assert edges["qual_label"].tolist()[:3] == ["disappear", "new", "sign_change"]
    with h5py.File(gene_file_path(hand_run / "net", 0, "G0", N), "r") as f:
        assert f["edges/qual_score"][()].tolist() == EXPECTED_CODES  # the stored int8 codes
        assert list(f["edges"].attrs["qual_labels"])[:3] == ["unchanged", "disappear", "new"]
        summary = dict(f["edges/qual_summary"].attrs)
        assert {k: int(v) for k, v in summary.items()} == {
            "n_unchanged": 2, "n_disappear": 2, "n_new": 3, "n_sign_change": 2, "n_strengthen": 2, "n_weaken": 1}
        assert f["meta"].attrs["n_significant"] == 12 and f["meta"].attrs["n_candidate_edges"] == 13
        assert f["focus_gene/direct_partners"][()].tolist() == [1, 2, 3, 4]
        assert f["focus_gene/indirect_partners"][()].tolist() == [5, 6]
        # low network = present_L edges: e1 e3 e4 e5 e6 e7 e9 e10 -> degree of gene 0 is 3
        assert f["topology/global_low/degrees"][()].tolist() == [3, 3, 2, 2, 2, 2, 2, 0, 0, 0, 0]
        assert f["topology/global_low"].attrs["n_edges"] == 8
        assert f["topology/global_diff"].attrs["n_edges"] == 12


def test_focus_metrics_gene0(hand_run):
    with h5py.File(gene_file_path(hand_run / "net", 0, "G0", N), "r") as f:
        metrics = dict(f["focus_gene/metrics"].attrs)
    assert set(metrics) == set(EXPECTED_G0)
    for name, value in EXPECTED_G0.items():
        assert metrics[name] == pytest.approx(value, rel=1e-6, abs=1e-6), name


def test_undefined_ratios_are_nan_for_isolated_reference(hand_run):
    with h5py.File(gene_file_path(hand_run / "net", 10, "G10", N), "r") as f:
        m = dict(f["focus_gene/metrics"].attrs)
    assert m["L1_n_nodes"] == 0 and m["L2_n_nodes"] == 0 and m["full_n_edges"] == 0
    for name in ("L1_frac_new", "L1_conn_mean_low", "L1_mean_delta", "L1_clique_density", "L2L1_deg",
                 "L2L1_rewire", "L2L1_conn", "HL_conn_L1", "HL_conn_L2"):
        assert math.isnan(m[name]), name
    assert m["L1_conn_low"] == 0.0


def test_zero_undefined_option(hand_run, tmp_path):
    res = run_cli(STAGE03, "--base-dir", hand_run / "base", "--boot-dir", hand_run / "boot",
                  "--out-dir", tmp_path, "--gene-index", 10, "--zero-undefined", "--quiet")
    assert res.returncode == 0, res.stderr
    with h5py.File(gene_file_path(tmp_path, 10, "G10", N), "r") as f:
        m = dict(f["focus_gene/metrics"].attrs)
        assert f["meta"].attrs["zero_undefined"]
    assert m["L2L1_deg"] == 0.0 and m["HL_conn_L1"] == 0.0 and m["L1_conn_mean_low"] == 0.0


def test_no_ci_filter_keeps_straddling_edge(hand_run, tmp_path):
    res = run_cli(STAGE03, "--base-dir", hand_run / "base", "--boot-dir", hand_run / "boot",
                  "--out-dir", tmp_path, "--gene-index", 0, "--no-ci-filter", "--min-effect", "0.55", "--quiet")
    assert res.returncode == 0, res.stderr
    edges = network_edges(gene_file_path(tmp_path, 0, "G0", N))
    pairs = set(zip(edges["gene_i"].tolist(), edges["gene_j"].tolist()))
    # |delta| >= 0.55: e1 e2 e3 e4 e6 e7 e8 e9 ; e12 (|0.2|) is dropped by the effect filter
    assert pairs == {(0, 1), (0, 2), (0, 3), (0, 4), (3, 4), (1, 5), (4, 6), (2, 6)}


def test_tsv_columns_row_and_order(hand_run):
    lines = (hand_run / "hubs.tsv").read_text().splitlines()
    assert lines[0].split("\t") == TSV_HEADER and len(TSV_HEADER) == 56
    rows = [line.split("\t") for line in lines[1:]]
    assert all(len(r) == 56 for r in rows)
    # L2L1_deg: gene 5 -> 3/2, genes 6 and 7 -> 1 (tie: by index), gene 0 -> 1/2, gene 10 -> NaN last;
    # gene 9 has no edge: no row
    assert [r[0] for r in rows] == ["5", "6", "7", "0", "10"]
    assert [r[TSV_HEADER.index("L2L1_deg")] for r in rows] == ["1.5000", "1.0000", "1.0000", "0.5000", "nan"]
    assert rows[3] == TSV_ROW_G0


def test_summary_status_and_parameters(hand_run):
    with h5py.File(hand_run / "summary.h5", "r") as f:
        status = [s.decode() for s in f["per_gene/status"][()]]
        index = f["per_gene/gene_index"][()].tolist()
        meta = dict(f["meta"].attrs)
        assert index == list(range(N))
        assert status == ["ok", "missing", "missing", "missing", "missing", "ok", "ok", "ok", "missing",
                          "no-edges", "ok"]
        assert f["per_gene/n_sig_edges_diff"][()].tolist()[:2] == [12, -1]
        assert f["per_gene/full_n_edges"][0] == 9 and f["per_gene/n_l1_to_l2_edges"][0] == 3
        assert f["per_gene/n_new"][0] == 3 and math.isnan(f["per_gene/L2L1_deg"][1])
        assert "memfit" in f
    assert meta["min_effect"] == 0.0 and meta["corr_threshold"] == 1e-4
    assert bool(meta["require_ci_exclude_zero"]) and not bool(meta["zero_undefined"])
    assert meta["n_ok"] == 5 and meta["n_no_edges"] == 1 and meta["n_missing"] == 5
    assert meta["n_bootstrap"] == 100 and meta["fdr_alpha"] == 0.05 and meta["n_genes"] == N
