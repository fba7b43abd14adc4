"""dcoex outputs carry the established pipeline's dataset and attribute names (so its
downstream scripts read them), and no attribute anywhere is an HDF5 enum/boolean.

The pipeline (stages 00 → 03b) runs as the stage scripts on a small planted dataset; every
output type is opened with plain h5py. Established names that are hard links must hold the
same data as the dcoex dataset; duplicated attributes are recomputed here from the edge
tables (an independent reference, not the stage's own code).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from util_stage03 import network_edges

from dcoex.synthetic import make_synthetic

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {
    "00": "src/scripts/00preprocess/00convert_expr_to_hdf5.py",
    "01": "src/scripts/01subset/01get_extreme_pop_bootstrap.py",
    "02a": "src/scripts/02corr/02a_calc_base_correlations.py",
    "02b": "src/scripts/02corr/02b_bootstrap_significant_edges.py",
    "03": "src/scripts/03collect/03_reconstruct_diff_network.py",
    "03b": "src/scripts/03collect/03b_collect_networks.py",
}
N_GENES, N_SAMPLES, N_BOOT = 24, 80, 30


def _run(stage: str, *args: object) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib"), "MEMFIT_MEM_LIMIT": "4G", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO / SCRIPTS[stage]), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, f"stage {stage}: {done.stderr}"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """Stages 00 → 03b on a planted dataset (two modulators with modules of 6 genes), every
    gene a reference gene, α = 0.5 and no CI filter so that networks have edges."""
    out = tmp_path_factory.mktemp("established")
    data = make_synthetic(N_GENES, N_SAMPLES, seed=5, n_modulators=2, module_size=6, strength=3.0)
    lines = ["gene_id\t" + "\t".join(f"S{s}" for s in range(N_SAMPLES))]
    lines += [f"G{g}\t" + "\t".join(f"{v:.6f}" for v in row) for g, row in enumerate(data.matrix)]
    (out / "expr.tsv").write_text("\n".join(lines) + "\n")
    genes = ["--gene-range", f"0:{N_GENES}", "--quiet"]
    _run("00", "--expr-tsv", out / "expr.tsv", "--out-h5", out / "expression.h5", "--quiet")
    _run("01", "--in-h5", out / "expression.h5", "--out-h5", out / "bootstrap_indices.h5",
         "--n-bootstrap", N_BOOT, "--seed", 3, "--quiet")
    _run("02a", "--expr-h5", out / "expression.h5", "--indices-h5", out / "bootstrap_indices.h5",
         "--out-dir", out / "base_correlations", "--fdr-alpha", 0.5, *genes)
    _run("02b", "--expr-h5", out / "expression.h5", "--indices-h5", out / "bootstrap_indices.h5",
         "--base-dir", out / "base_correlations", "--out-dir", out / "bootstrap_significant", *genes)
    _run("03", "--base-dir", out / "base_correlations", "--boot-dir", out / "bootstrap_significant",
         "--out-dir", out / "networks", "--expr-h5", out / "expression.h5", "--no-ci-filter", *genes)
    _run("03b", "--networks-dir", out / "networks", "--out-h5", out / "differential_network_summary.h5",
         "--out-focus-tsv", out / "rewiring_hubs.tsv", "--quiet")
    return out


def _per_gene_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.h5") if not p.name.startswith("."))


def _richest(folder: Path, count) -> Path:
    """The per-gene file with the largest ``count(file)`` (a gene with edges to check)."""
    files = _per_gene_files(folder)
    assert len(files) == N_GENES
    best = max(files, key=lambda p: count(p))
    assert count(best) > 0, f"no file in {folder} has edges"
    return best


def _all_outputs(run: Path) -> list[Path]:
    files = [run / "expression.h5", run / "bootstrap_indices.h5", run / "differential_network_summary.h5"]
    for folder in ("base_correlations", "bootstrap_significant", "networks"):
        files += _per_gene_files(run / folder)
    return files


def _attribute_owners(f: h5py.File) -> list[tuple[str, h5py.HLObject]]:
    """The root and every object under every link name (hard links included)."""
    names: list[str] = []
    f.visit_links(names.append)
    return [("/", f)] + [(name, f[name]) for name in names]


# --------------------------------------------------------------------------- no enums


def test_no_attribute_is_an_enum_or_boolean(run):
    checked = 0
    for path in _all_outputs(run):
        with h5py.File(path, "r") as f:
            for name, obj in _attribute_owners(f):
                for key in obj.attrs:
                    cls = obj.attrs.get_id(key).get_type().get_class()
                    assert cls != h5py.h5t.ENUM, f"{path.name}:{name}@{key} is an HDF5 enum (bool)"
                    assert cls in (h5py.h5t.INTEGER, h5py.h5t.FLOAT, h5py.h5t.STRING), f"{path.name}:{name}@{key}"
                    checked += 1
    assert checked > 1000


def test_flags_are_integers_0_or_1(run):
    net = _per_gene_files(run / "networks")[0]
    with h5py.File(net, "r") as f:
        for key in ("require_ci_exclude_zero", "zero_undefined"):
            value = f["meta"].attrs[key]
            assert value.dtype.kind == "i" and value in (0, 1)
        assert f["meta"].attrs["require_ci_exclude_zero"] == 0  # --no-ci-filter
        assert f["topology/global_diff"].attrs["is_scale_free"] in (0, 1)
    with h5py.File(run / "differential_network_summary.h5", "r") as f:
        assert f["meta"].attrs["require_ci_exclude_zero"] == 0
    with h5py.File(_per_gene_files(run / "base_correlations")[0], "r") as f:
        assert f["meta"].attrs["q_exact"] == 0 and f["meta"].attrs["q_exact"].dtype.kind == "i"


# --------------------------------------------------------------------------- per file type


def test_expression_store(run):
    with h5py.File(run / "expression.h5", "r") as f:
        expr = f["expr"]
        assert expr.dtype == np.float32 and expr.shape == (N_GENES, N_SAMPLES)
        assert expr.attrs["n_genes"] == N_GENES and expr.attrs["n_samples"] == N_SAMPLES
        assert f["gene_names"].shape == (N_GENES,) and f["sample_names"].shape == (N_SAMPLES,)
        assert h5py.check_string_dtype(f["gene_names"].dtype).encoding == "utf-8"
        assert [s.decode() for s in f["gene_names"][:3]] == ["G0", "G1", "G2"]


def test_bootstrap_indices(run):
    k = int(N_SAMPLES * 0.2)
    kr = int(k * 0.8)
    with h5py.File(run / "bootstrap_indices.h5", "r") as f:
        meta = f["meta"].attrs
        for key in ("low_frac", "high_frac", "n_bootstrap", "bootstrap_frac", "seed", "processing_mode"):
            assert key in meta, key
        assert meta["n_bootstrap"] == N_BOOT and meta["seed"] == 3
        expected = {"indices/low": (N_GENES, k), "indices/high": (N_GENES, k),
                    "indices/low_boot": (N_GENES, N_BOOT, kr), "indices/high_boot": (N_GENES, N_BOOT, kr)}
        for name, shape in expected.items():
            assert f[name].dtype == np.int32 and f[name].shape == shape, name


def _n_edges(path: Path) -> int:
    with h5py.File(path, "r") as f:
        return int(f["meta"].attrs["n_sig_differential"])


def _spearman(run: Path, gene: int) -> dict[str, np.ndarray]:
    """scipy's Spearman r of every gene pair (upper triangle, row-major) in the reference gene's
    LOW and HIGH samples: the reference for the stored r's."""
    from scipy.stats import spearmanr

    from dcoex.expression_store import open_expression

    with open_expression(str(run / "expression.h5")) as store:
        x = store.read_all()
    with h5py.File(run / "bootstrap_indices.h5", "r") as f:
        groups = {"low": f["indices/low"][gene], "high": f["indices/high"][gene]}
    upper = np.triu_indices(N_GENES, 1)
    return {g: spearmanr(x[:, cols].T).statistic[upper] for g, cols in groups.items()}


def test_base_correlations_02a(run):
    """Every 02a file: the established names its edge form allows are hard links to the
    dcoex datasets; the pair set (int64 indices or the packed bitmap, decoded here) and the
    derived columns read_base_edges gives agree with the stored ones. In the bitmap form the
    r's come from integer rank products (stored, or from the stored ranks) and per-gene scales:
    r = (d·scale_i)·scale_j, as scipy's Spearman r, and read_base_edges gives those bits."""
    from dcoex.edge_files import read_base_edges

    forms, r_forms = set(), set()
    upper = np.triu_indices(N_GENES, 1)
    for path in _per_gene_files(run / "base_correlations"):
        with h5py.File(path, "r") as f:
            meta = f["meta"].attrs
            for key in ("n_genes", "n_tests", "k_low", "k_high", "fdr_alpha", "gene_index_used", "storage_mode",
                        "edge_form", "cut_low", "cut_high"):
                assert key in meta, key
            assert meta["n_tests"] == N_GENES * (N_GENES - 1) // 2
            form = meta["edge_form"]
            forms.add(form)
            n = int(meta["n_sig_differential"])
            if form == "sparse":
                pairs = f["edges/pair_index"][()]
                assert f["significant/indices"].id == f["edges/pair_index"].id
            else:
                assert "significant/indices" not in f and "edges/pair_index" not in f
                bits = np.unpackbits(f["edges/pair_bitmap"][()], bitorder="little")[: meta["n_tests"]]
                pairs = np.flatnonzero(bits)
            assert pairs.size == n == meta["n_sig_differential"]
            r_forms.add(meta["r_form"])
            if meta["r_form"] in ("product", "ranks"):  # no float r per edge: no established name to link
                assert form == "bitmap" and "low/corr_sig" not in f and "edges/r_low" not in f
                gi, gj = upper[0][pairs], upper[1][pairs]
                r = {}
                for g in ("low", "high"):
                    scale, k = f[f"scales/{g}"][()], int(meta[f"k_{g}"])
                    if meta["r_form"] == "product":
                        d = f[f"edges/d_{g}"][()]
                        assert d.dtype == (np.int16 if (k**3 - k) // 3 < 2**15 else np.int32)
                    else:  # the groups' ranks u = 2·rank − k − 1: d = u_i·u_j, summed here in int64
                        u = f[f"ranks/{g}"][()]
                        assert u.dtype == (np.int8 if k <= 128 else np.int16) and u.shape == (N_GENES, k)
                        d = np.einsum("ij,ij->i", u[gi].astype(np.int64), u[gj].astype(np.int64))
                    assert scale.dtype == np.float32
                    r[g] = (d.astype(np.float32) * scale[gi]) * scale[gj]
                r_low, r_high = r["low"], r["high"]
                reference = _spearman(run, int(meta["gene_index_used"]))
                np.testing.assert_allclose(r_low, reference["low"][pairs], rtol=0, atol=2e-6)
                np.testing.assert_allclose(r_high, reference["high"][pairs], rtol=0, atol=2e-6)
                links = []
            else:
                r_low, r_high = f["edges/r_low"][()], f["edges/r_high"][()]
                links = [("low/corr_sig", "edges/r_low"), ("high/corr_sig", "edges/r_high")]
            if meta["q_diff_form"] == "column":
                links.append(("diff/qval_sig", "edges/q_diff"))
                assert np.all(f["diff/qval_sig"][()] < meta["fdr_alpha"])
            else:  # q_diff from its table: no per-edge dataset to link
                assert "diff/qval_sig" not in f and "edges/q_diff" not in f and "q_tables/diff_q" in f
            for established, dcoex in links:
                ds = f[established]
                assert ds.id == f[dcoex].id and ds.dtype.kind == "f" and ds.shape == (n,), established
            sig = dict(f["significant"].attrs)
            alpha = meta["fdr_alpha"]
        _, edges = read_base_edges(path)
        q_low, q_high = edges["q_low"], edges["q_high"]
        assert np.all(edges["q_diff"] < alpha)
        np.testing.assert_array_equal(edges["pair_index"], pairs)
        gi, gj = edges["gene_i"].astype(np.int64), edges["gene_j"].astype(np.int64)
        np.testing.assert_array_equal(pairs, gi * (2 * N_GENES - gi - 1) // 2 + (gj - gi - 1))
        np.testing.assert_array_equal(edges["r_low"], r_low)
        np.testing.assert_array_equal(edges["r_high"], r_high)
        np.testing.assert_array_equal(edges["delta"], r_high - r_low)
        # sig from the stored cut equals sig from the stored q (BH: q < alpha)
        np.testing.assert_array_equal(edges["sig_low"], q_low < alpha)
        np.testing.assert_array_equal(edges["sig_high"], q_high < alpha)
        assert sig["n_sig_differential"] == n
        assert sig["n_sig_edges"] == int((edges["sig_low"] | edges["sig_high"]).sum())
        assert sig["n_sig_low"] >= int(edges["sig_low"].sum())
    assert "bitmap" in forms and "float" in r_forms and r_forms & {"product", "ranks"}


def test_bootstrap_significant_02b(run):
    """The 02b file (format 3) stores its bootstrap values under the established names; the
    pairs, genes and base r's (established edges/indices, gene_i, gene_j, base/*) come from
    the 02a file through iter_boot_edges, which also computes bias and bootstrap_pval."""
    from dcoex.edge_files import iter_boot_edges

    path = _richest(run / "bootstrap_significant", lambda p: int(h5py.File(p, "r")["meta"].attrs["n_sig_edges"]))
    with h5py.File(path, "r") as f:
        meta = f["meta"].attrs
        for key in ("n_genes", "n_sig_edges", "n_bootstrap", "edge_selection_mode", "ci_alpha", "gene_index_used"):
            assert key in meta, key
        n = int(meta["n_sig_edges"])
        assert n > 0 and "edges/indices" not in f and "edges/pair_index" not in f
        for name in ("boot/delta_mean", "boot/delta_std", "boot/ci_low", "boot/ci_high"):
            assert f[name].dtype.kind == "f" and f[name].shape == (n,), name
        minority, n_finite = f["boot/n_minority"][()], f["boot/n_finite"][()]
        assert f["gene_names"].shape == (N_GENES,)
    chunks = list(iter_boot_edges(run / "base_correlations" / path.name, path, chunk_edges=7))
    pairs = np.concatenate([c["pair_index"] for c in chunks])
    gi = np.concatenate([c["gene_i"] for c in chunks]).astype(np.int64)
    gj = np.concatenate([c["gene_j"] for c in chunks]).astype(np.int64)
    assert pairs.size == n and np.all(np.diff(pairs) > 0)
    np.testing.assert_array_equal(pairs, gi * (2 * N_GENES - gi - 1) // 2 + (gj - gi - 1))
    pval = np.concatenate([c["bootstrap_pval"] for c in chunks])
    np.testing.assert_array_equal(pval, np.maximum(2 * minority / n_finite, 1 / n_finite))


def _l1_size(path: Path) -> int:
    with h5py.File(path, "r") as f:
        return int(f["focus_gene"].attrs["n_direct_partners"])


def _stats_reference(e: dict[str, np.ndarray], tau: float, edge_mask: np.ndarray) -> dict[str, float]:
    """The established edge-set statistics recomputed from the edge table (the reader's columns)."""
    labels = np.asarray(e["qual_label"].tolist())[edge_mask]
    delta = e["delta_base"][edge_mask].astype(np.float64)
    r_low, r_high = e["r_low"][edge_mask].astype(np.float64), e["r_high"][edge_mask].astype(np.float64)
    present_low = e["sig_low"][edge_mask] & (np.abs(r_low) >= tau)
    present_high = e["sig_high"][edge_mask] & (np.abs(r_high) >= tau)
    n = int(edge_mask.sum())
    return {
        "n_edges": n,
        "n_disappear": int((labels == "disappear").sum()),
        "n_new": int((labels == "new").sum()),
        "n_sign_change": int((labels == "sign_change").sum()),
        "n_strengthen": int((labels == "strengthen").sum()),
        "n_weaken": int((labels == "weaken").sum()),
        "n_edges_low": int(present_low.sum()),
        "n_edges_high": int(present_high.sum()),
        "mean_delta": float(delta.mean()) if n else float("nan"),
        "mean_abs_delta": float(np.abs(delta).mean()) if n else float("nan"),
        "sum_abs_delta": float(np.abs(delta).sum()),
        "conn_sum_low": float(np.abs(r_low[present_low]).sum()),
        "conn_sum_high": float(np.abs(r_high[present_high]).sum()),
        "conn_mean_low": float(np.abs(r_low[present_low]).mean()) if present_low.any() else float("nan"),
        "conn_mean_high": float(np.abs(r_high[present_high]).mean()) if present_high.any() else float("nan"),
    }


def test_network_03(run):
    path = _richest(run / "networks", _l1_size)
    with h5py.File(path, "r") as f:
        meta = f["meta"].attrs
        for key in ("n_genes", "n_tests", "n_significant", "edge_selection", "min_effect", "ci_alpha", "fdr_alpha",
                    "k_low", "k_high", "corr_threshold", "require_ci_exclude_zero", "gene_index_used"):
            assert key in meta, key
        n = int(meta["n_significant"])
        stored = f["edges"]
        assert stored["qual_score"].dtype == np.int8 and stored["qual_score"].shape == (n,)
        assert stored["selected"].dtype == np.bool_ and int(stored["selected"][()].sum()) == n
        assert list(stored.attrs["qual_labels"]) == ["unchanged", "disappear", "new", "sign_change", "strengthen",
                                                     "weaken"]
        e = network_edges(path)
        for name in ("gene_i", "gene_j"):
            assert e[name].dtype == np.int32 and e[name].shape == (n,)
        for name in ("delta_base", "delta_boot_mean", "delta_boot_std", "ci_low", "ci_high", "bias", "r_low",
                     "r_high", "pval_diff", "qval_diff", "pval_boot"):
            assert e[name].dtype.kind == "f" and e[name].shape == (n,), name
        assert e["qual_score"].dtype == np.int8 and e["qual_label"].shape == (n,)
        labels = e["qual_label"].tolist()
        for label in ("unchanged", "disappear", "new", "sign_change", "strengthen", "weaken"):
            assert stored["qual_summary"].attrs[f"n_{label}"] == labels.count(label)
        topo_keys = ("n_nodes_total", "n_nodes_active", "fraction_active", "n_edges", "density", "avg_degree",
                     "max_degree", "min_degree", "median_degree", "std_degree", "degree_p25", "degree_p50",
                     "degree_p75", "degree_p90", "degree_p95", "degree_p99", "power_law_exponent",
                     "power_law_r_squared", "is_scale_free", "global_clustering", "n_components",
                     "largest_component_size", "largest_component_fraction", "assortativity")
        for net in ("low", "high", "diff"):
            group = f[f"topology/global_{net}"]
            assert all(k in group.attrs for k in topo_keys), net
            assert group["degrees"].dtype == np.int32 and group["degrees"].shape == (N_GENES,)
        focus = f["focus_gene"]
        g = int(focus.attrs["gene_index"])
        assert g == meta["gene_index_used"]
        gi, gj = e["gene_i"], e["gene_j"]
        direct = (gi == g) | (gj == g)
        l1 = np.setdiff1d(np.union1d(gi[direct], gj[direct]), [g])
        np.testing.assert_array_equal(focus["direct_partners"][()], l1)
        assert focus.attrs["n_direct_partners"] == l1.size > 0
        metrics = focus["metrics"].attrs
        assert metrics["L1_n_sign_chg"] == focus["direct_stats"].attrs["n_sign_change"]
        assert metrics["focus_deg_low"] == focus["direct_stats"].attrs["n_edges_low"]
        assert f["gene_names"].shape == (N_GENES,)


def test_network_03_edge_set_stats(run):
    """Every gene's direct_stats / two_layer_stats carry the established statistics."""
    seen = {"n_sign_change": 0, "n_disappear": 0, "conn_sum_low": 0.0}
    for path in _per_gene_files(run / "networks"):
        edges = network_edges(path)
        with h5py.File(path, "r") as f:
            g = int(f["focus_gene"].attrs["gene_index"])
            tau = float(f["meta"].attrs["corr_threshold"])
            gi, gj = edges["gene_i"], edges["gene_j"]
            direct = (gi == g) | (gj == g)
            l1 = np.setdiff1d(np.union1d(gi[direct], gj[direct]), [g])
            in_l1_i, in_l1_j = np.isin(gi, l1), np.isin(gj, l1)
            outer = (in_l1_i & in_l1_j) | (in_l1_i & ~in_l1_j & (gj != g)) | (in_l1_j & ~in_l1_i & (gi != g))
            for group, mask in (("direct_stats", direct), ("two_layer_stats", outer)):
                attrs = f["focus_gene"][group].attrs
                reference = _stats_reference(edges, tau, mask)
                for key, value in reference.items():
                    np.testing.assert_allclose(attrs[key], value, rtol=1e-6, atol=1e-6, equal_nan=True,
                                               err_msg=f"{path.name} {group}@{key}")
                for key in seen:
                    seen[key] += reference[key]
    assert all(value > 0 for value in seen.values()), seen  # the data exercise the statistics


def test_summary_03b(run):
    with h5py.File(run / "differential_network_summary.h5", "r") as f:
        meta = f["meta"].attrs
        for key in ("n_genes", "n_ref_genes", "edge_selection", "min_effect", "corr_threshold",
                    "require_ci_exclude_zero"):
            assert key in meta, key
        assert meta["n_genes"] == N_GENES and meta["n_ref_genes"] == N_GENES
        per_gene = f["per_gene"]
        assert per_gene["gene_index"].dtype == np.int32
        np.testing.assert_array_equal(per_gene["gene_index"][()], np.arange(N_GENES))
        names = ["n_sig_edges_diff", "n_disappear", "n_new", "n_sign_change", "n_strengthen", "n_weaken",
                 "mean_abs_delta", "max_abs_delta", "focus_deg_low", "L1_n_nodes", "L2L1_deg", "HL_conn_L2"]
        for name in names:
            assert per_gene[name].shape == (N_GENES,), name
        for path in _per_gene_files(run / "networks"):
            with h5py.File(path, "r") as net:
                row = int(net["meta"].attrs["gene_index_used"])
                assert per_gene["n_sig_edges_diff"][row] == net["meta"].attrs["n_significant"]
                assert per_gene["L1_n_nodes"][row] == net["focus_gene/metrics"].attrs["L1_n_nodes"]
        assert [s.decode() for s in per_gene["gene_name"][:2]] == ["G0", "G1"]
