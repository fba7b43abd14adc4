"""Stages 04 (focus-gene topology) and 05 (export, GraphML, figures) on a small run made by the
local driver: degrees against a naive count of the network files' edges, GraphML and TSV read
back, figures written (PNG/PDF headers), bad input in one line, reruns identical, estimates
against measured peaks."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import networkx as nx
import numpy as np
import pytest
from cluster_util import run_driver, write_dataset
from util_stage03 import network_edges

from dcoex.genes import gene_file_path
from dcoex.h5io import decode_strings
from dcoex.stages.s04_focus_topology.cli import run_focus_topology
from dcoex.stages.s04_focus_topology.science import METRICS
from dcoex.stages.s05_export.cli import run_export

ROOT = Path(__file__).resolve().parents[1]
PEAK_RSS = ROOT / "bench" / "peak_rss.py"
N_GENES = 24
ARGS = ["--n-bootstrap", "20", "--genes-per-task", "12", "--seed", "3", "--fdr-alpha", "0.7", "--no-ci-filter",
        "--n-hubs", "4"]
PNG, PDF = b"\x89PNG\r\n\x1a\n", b"%PDF-"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished run, 00 -> 05, by the local driver (dense networks: alpha 0.7, no CI filter)."""
    base = tmp_path_factory.mktemp("s0405")
    tsv = write_dataset(base / "expr.tsv", n_genes=N_GENES, n_samples=60)
    out = base / "run"
    done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", out, *ARGS, "--local"], timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def _names(run: Path) -> list[str]:
    with h5py.File(run / "differential_network_summary.h5", "r") as f:
        return decode_strings(f["gene_names"][()])


def _edges(path: Path) -> dict[str, np.ndarray]:
    return network_edges(path)


def _network(run: Path, g: int) -> Path:
    return gene_file_path(run / "networks", g, _names(run)[g], N_GENES)


def _stage(module: str, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_local_driver_runs_04_and_05_and_draws_every_figure(run):
    manifest = json.loads((run / "run_manifest.json").read_text())
    assert manifest["status"] == "complete" and list(manifest["stages"])[-2:] == ["04", "05"]
    figures = sorted((run / "export" / "figures").iterdir())
    stems = {p.stem for p in figures}
    assert {"hub_ranking", "focus_degree_heatmap"} <= stems
    assert any(s.startswith("ego_") for s in stems) and any(s.startswith("delta_distribution_") for s in stems)
    for p in figures:
        head = p.read_bytes()[:8]
        assert p.stat().st_size > 1000 and head.startswith(PNG if p.suffix == ".png" else PDF), p
    assert len({p.stem for p in figures if p.suffix == ".png"}) == len({p.stem for p in figures if p.suffix == ".pdf"})
    with h5py.File(run / "export" / "export_index.h5", "r") as f:
        listed = set(decode_strings(f["files"][()]))
        notes = decode_strings(f["notes"][()])
        assert f["provenance"].attrs["stage"] == "05"
    assert {p.relative_to(run / "export").as_posix() for p in figures} <= listed
    assert any("permutation_pvalues.h5" in n for n in notes)  # the null figure is skipped with a note


def test_focus_degrees_equal_a_naive_count_of_the_network_edges(run, tmp_path):
    names = _names(run)
    focus = [names[g] for g in (0, 2, 5, 11, 23)]
    out = tmp_path / "f.h5"
    run_focus_topology(run / "networks", run / "differential_network_summary.h5", out, out_tsv=tmp_path / "f.tsv",
                       focus_genes=",".join(focus))
    with h5py.File(out, "r") as f:
        values, refs = f["values"][()], f["ref_genes"][()]
        assert decode_strings(f["metrics"][()]) == list(METRICS)
        assert decode_strings(f["focus_gene_ids"][()]) == focus
        for k, name in enumerate(("degree_low", "degree_high", "degree_diff")):
            np.testing.assert_array_equal(f[name][()], values[:, :, k].T.astype(np.int32))
    assert list(refs) == list(range(N_GENES))
    total = 0
    for row, g in enumerate(refs):
        e = _edges(_network(run, int(g)))
        for k, name in enumerate(focus):
            f_idx = names.index(name)
            expect = dict.fromkeys(METRICS, 0.0)
            for i, j, low, high, code, delta in zip(e["gene_i"], e["gene_j"], e["present_low"], e["present_high"],
                                                    e["qual_score"], e["delta_base"]):
                if f_idx not in (i, j):
                    continue
                expect["degree_diff"] += 1
                expect["degree_low"] += bool(low)
                expect["degree_high"] += bool(high)
                label = {1: "n_disappear", 2: "n_new", 3: "n_sign_change", 4: "n_strengthen", 5: "n_weaken"}.get(int(code))
                if label:
                    expect[label] += 1
                expect["n_rewire"] += int(code) in (1, 2, 3)
                expect["sum_abs_delta"] += abs(float(delta))
            got = dict(zip(METRICS, values[row, k]))
            for m in METRICS:
                assert got[m] == pytest.approx(expect[m], abs=1e-6), (g, name, m)
            total += expect["degree_diff"]
    assert total > 20, "the test data must have focus-gene edges"
    rows = list(csv.DictReader(open(tmp_path / "f.tsv"), delimiter="\t"))
    assert len(rows) == N_GENES * len(focus)
    assert [int(r["degree_diff"]) for r in rows] == [int(v) for v in values[:, :, 2].ravel()]


def test_default_focus_genes_are_the_top_hubs(run):
    with h5py.File(run / "focus_gene_topology.h5", "r") as f:
        focus = decode_strings(f["focus_gene_ids"][()])
    hubs = [line.split("\t")[1] for line in (run / "rewiring_hubs.tsv").read_text().splitlines()[1:5]]
    assert focus == hubs


def test_graphml_and_tsv_read_back_equal_the_network_file(run):
    names = _names(run)
    folders = sorted((run / "export" / "genes").iterdir())
    assert len(folders) == 4
    checked_edges = 0
    for folder in folders:
        g = int(folder.name.split("_")[0])
        path = _network(run, g)
        e = _edges(path)
        with h5py.File(path, "r") as f:
            partners = f["focus_gene/direct_partners"][()].tolist()
        graph = nx.read_graphml(folder / "ego.graphml")
        members = {g, *partners}
        assert set(graph.nodes) == {names[v] for v in members}
        assert graph.nodes[names[g]]["is_ego"] is True and graph.nodes[names[g]]["gene_idx"] == g
        inside = [k for k in range(e["gene_i"].size) if e["gene_i"][k] in members and e["gene_j"][k] in members]
        assert graph.number_of_edges() == len(inside)
        for k in inside:
            data = graph.edges[names[e["gene_i"][k]], names[e["gene_j"][k]]]
            assert data["delta"] == float(e["delta_base"][k]) and data["r_low"] == float(e["r_low"][k])
            assert data["qual_label"] == e["qual_label"][k] and data["qual_score"] == int(e["qual_score"][k])
            assert data["present_low"] is bool(e["present_low"][k])
            checked_edges += 1
        text = (folder / "ego.graphml").read_text()
        assert ">True<" not in text and ">False<" not in text  # XML Schema booleans
        diff = list(csv.DictReader(open(folder / "edges_diff.tsv"), delimiter="\t"))
        assert [(r["from"], r["to"]) for r in diff] == [(names[i], names[j]) for i, j in zip(e["gene_i"], e["gene_j"])]
        assert [float(r["delta"]) for r in diff] == pytest.approx(e["delta_base"].astype(float), abs=6e-5)
        low = list(csv.DictReader(open(folder / "edges_low.tsv"), delimiter="\t"))
        high = list(csv.DictReader(open(folder / "edges_high.tsv"), delimiter="\t"))
        assert len(low) == int(e["present_low"].sum()) and len(high) == int(e["present_high"].sum())
        nodes = {r["gene_id"]: r for r in csv.DictReader(open(folder / "nodes.tsv"), delimiter="\t")}
        degree = np.bincount(np.concatenate([e["gene_i"], e["gene_j"]]), minlength=N_GENES)
        assert set(nodes) == {names[v] for v in np.flatnonzero(degree)}
        assert all(int(nodes[names[v]]["degree_diff"]) == degree[v] for v in np.flatnonzero(degree))
    assert checked_edges > 0


def test_unknown_focus_genes_are_one_line_exit_2(run, tmp_path):
    for module, args in (("dcoex.stages.s04_focus_topology",
                          ["--networks-dir", run / "networks", "--summary-h5", run / "differential_network_summary.h5",
                           "--out-h5", tmp_path / "f.h5"]),
                         ("dcoex.stages.s05_export", ["--out-dir", run])):
        done = _stage(module, *args, "--focus-genes", "G01,NOPE,ALSO_NOT")
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and "NOPE, ALSO_NOT" in done.stderr and "G01" not in done.stderr
    assert not (tmp_path / "f.h5").exists()


def test_a_network_folder_of_another_run_is_refused(run, tmp_path):
    networks = tmp_path / "networks"
    shutil.copytree(run / "networks", networks)
    done = _stage("dcoex.stages.s03_network", "--base-dir", run / "base_correlations", "--boot-dir",
                  run / "bootstrap_significant", "--out-dir", networks, "--gene-index", "2", "--min-effect", "0.3",
                  "--no-ci-filter", "--quiet")
    assert done.returncode == 0, done.stderr
    done = _stage("dcoex.stages.s04_focus_topology", "--networks-dir", networks, "--summary-h5",
                  run / "differential_network_summary.h5", "--out-h5", tmp_path / "f.h5")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "not those collected in" in done.stderr and not (tmp_path / "f.h5").exists()


def _add_permutation_results(run: Path, names: list[str]) -> None:
    """Stage 08's outputs in their documented layout (docs/stage08.md): the hub table with
    obs_/pval_/qval_ columns of the tested metrics, and permutation_pvalues.h5 with the null."""
    lines = (run / "rewiring_hubs.tsv").read_text().splitlines()
    out = [lines[0] + "\tobs_L1_rewire\tpval_L1_rewire\tqval_L1_rewire"]
    for k, line in enumerate(lines[1:]):
        out.append(f"{line}\t{k}\t{0.001 * (k + 1):g}\t{0.01 * (k + 1):g}")
    (run / "rewiring_hubs_with_pvals.tsv").write_text("\n".join(out) + "\n")
    rng = np.random.default_rng(0)
    with h5py.File(run / "permutation_pvalues.h5", "w") as f:
        f["gene_names"] = np.asarray(names, dtype=object)
        f["metrics"] = np.asarray(["n_sig_edges_diff", "L1_rewire"], dtype=object)
        for m in ("n_sig_edges_diff", "L1_rewire"):
            f.create_dataset(f"null/{m}", data=rng.gamma(2.0, 0.5, size=(50, len(names))))


def test_permutation_results_are_drawn_and_make_05_stale(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    tsv = next(run.parent.glob("expr.tsv"))
    _add_permutation_results(copy, _names(copy))
    dry = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", copy, *ARGS, "--dry-run"])
    assert dry.returncode == 0, dry.stderr
    assert "05: runs (input optional changed)" in dry.stdout and "04: skipped (current" in dry.stdout
    fewer = [a if a != "4" else "3" for a in ARGS]  # --n-hubs 3
    dry = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", copy, *fewer, "--dry-run"])
    assert "04: runs (n_hubs 4 → 3)" in dry.stdout and "05: runs (n_hubs 4 → 3" in dry.stdout, dry.stdout
    assert "03b: skipped (current" in dry.stdout
    result = run_export(copy, n_hubs=4, hub_metric="L1_rewire")
    assert not any("null" in n for n in result["notes"]) and not any("significance" in n for n in result["notes"])
    null_png = copy / "export" / "figures" / "null_distributions.png"
    assert null_png.read_bytes().startswith(PNG) and null_png.with_suffix(".pdf").read_bytes().startswith(PDF)
    before = (run / "export" / "figures" / "hub_ranking.png").read_bytes()
    assert (copy / "export" / "figures" / "hub_ranking.png").read_bytes() != before  # significance marked


def test_reruns_write_identical_files_and_current_outputs_are_kept(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert run_focus_topology(copy / "networks", copy / "differential_network_summary.h5",
                              copy / "focus_gene_topology.h5", out_tsv=copy / "focus_gene_topology.tsv",
                              n_hubs=4)["skipped"]
    assert run_export(copy, n_hubs=4)["skipped"]
    run_focus_topology(copy / "networks", copy / "differential_network_summary.h5", copy / "focus_gene_topology.h5",
                       out_tsv=copy / "focus_gene_topology.tsv", n_hubs=4, force=True)
    leftover = copy / ".export.tmp-4194305"  # of a killed 05 (above any pid_max)
    (leftover / "genes").mkdir(parents=True)
    run_export(copy, n_hubs=4, force=True)
    assert not leftover.exists()
    assert (copy / "focus_gene_topology.tsv").read_bytes() == (run / "focus_gene_topology.tsv").read_bytes()
    with h5py.File(copy / "focus_gene_topology.h5", "r") as a, h5py.File(run / "focus_gene_topology.h5", "r") as b:
        np.testing.assert_array_equal(a["values"][()], b["values"][()])
        assert dict(a["provenance"].attrs) == dict(b["provenance"].attrs)
    files = sorted(p.relative_to(run / "export") for p in (run / "export").rglob("*")
                   if p.is_file() and p.suffix not in (".h5", ".json"))
    assert len(files) > 20
    for rel in files:
        assert (copy / "export" / rel).read_bytes() == (run / "export" / rel).read_bytes(), rel
    (copy / "export" / "figures" / "hub_ranking.pdf").unlink()
    assert not run_export(copy, n_hubs=4)["skipped"]  # a missing figure makes the export stale
    assert (copy / "export" / "figures" / "hub_ranking.pdf").is_file()


@pytest.mark.parametrize("stage", ["04", "05"])
def test_estimate_matches_the_measured_peak(run, tmp_path, stage):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    record = tmp_path / "peak.json"
    if stage == "04":
        args = ["dcoex.stages.s04_focus_topology", "--networks-dir", copy / "networks", "--summary-h5",
                copy / "differential_network_summary.h5", "--out-h5", copy / "focus_gene_topology.h5",
                "--n-hubs", "4", "--force", "--quiet"]
        sidecar = copy / "focus_gene_topology.h5.memory.json"
    else:
        args = ["dcoex.stages.s05_export", "--out-dir", copy, "--n-hubs", "4", "--force", "--quiet"]
        sidecar = copy / "export" / "export_index.h5.memory.json"
    done = subprocess.run([sys.executable, str(PEAK_RSS), str(record), *map(str, args)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    peak = json.loads(record.read_text())["peak_rss_bytes"]
    estimate = json.loads(sidecar.read_text())["estimate_bytes"]
    assert 0.95 <= estimate / peak <= 1.4, (stage, estimate, peak)


def test_driver_refuses_unknown_focus_genes_before_anything_runs(tmp_path):
    tsv = write_dataset(tmp_path / "expr.tsv", n_genes=12, n_samples=30)
    done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", tmp_path / "run", "--focus-genes", "G01,NOPE",
                                "--local"])
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "unknown gene name(s): NOPE" in done.stderr and not (tmp_path / "run").exists()
