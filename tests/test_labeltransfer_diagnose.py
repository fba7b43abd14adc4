"""`diagnose` reads headers only and its numbers match a hand computation."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from util_labeltransfer import counts_adata, dense_of, gene_names, invoke, write

from memfit.allocation import Allocation
from memfit.units import GiB, MiB


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("lt_diag")
    ref_genes = gene_names(300) + gene_names(20, "r")
    query_genes = gene_names(300)[::-1] + gene_names(12, "q")
    ref = counts_adata(150, ref_genes, seed=5, rare={"rareA": 3, "rareB": 7})
    qry = counts_adata(90, query_genes, seed=6)
    return ref, qry, write(ref, d / "ref.h5ad"), write(qry, d / "query.h5ad")


def test_diagnose_numbers_match_hand_computation(pair, monkeypatch):
    import labeltransfer.io as lio
    from labeltransfer.diagnose import diagnose

    ref, qry, ref_path, q_path = pair
    monkeypatch.setattr(lio, "load_csr", lambda *a, **k: pytest.fail("diagnose loaded a matrix"))
    alloc = Allocation(8 * GiB, "test", 0.7, True)
    report = json.loads(diagnose(str(ref_path), str(q_path), label_key="cell_type", n_hvg=100, as_json=True,
                                 allocation=alloc))
    x_ref, x_q = dense_of(ref), dense_of(qry)
    nnz_ref, nnz_q = int(np.count_nonzero(x_ref)), int(np.count_nonzero(x_q))
    assert report["reference"]["n_obs"] == 150 and report["reference"]["n_vars"] == 320
    assert report["reference"]["nnz"] == nnz_ref and report["query"]["nnz"] == nnz_q
    assert report["reference"]["density"] == pytest.approx(nnz_ref / (150 * 320), abs=1e-6)
    assert report["reference"]["dtype"] == "float32" and report["reference"]["encoding"] == "csr_matrix"
    assert report["gene_overlap"] == {"n_reference_genes": 320, "n_query_genes": 312, "n_common": 300,
                                      "n_reference_only": 20, "n_query_only": 12}
    counts = Counter(ref.obs["cell_type"].astype(str))
    assert report["low_count_types"] == {k: v for k, v in counts.items() if v < 10} == {"rareA": 3, "rareB": 7}
    assert report["raw_counts"] == [True, True]
    # hand computation of the sparse components (float32 value + int32 index = 8 bytes per nnz, 8 per row)
    kept = 150 - 10
    nnz_ref_common = nnz_ref * kept / 150 * 300 / 320
    nnz_q_common = nnz_q * 300 / 312
    comps = report["steps"]["concatenate"]["components"]
    assert comps["reference_csr"] == pytest.approx(nnz_ref_common * 8 + (kept + 1) * 8, abs=16)  # nnz rounded to cells
    assert comps["query_csr"] == pytest.approx(nnz_q_common * 8 + 91 * 8, abs=16)
    assert comps["joint_csr"] == pytest.approx((nnz_ref_common + nnz_q_common) * 8 + (kept + 90 + 1) * 8, abs=16)
    # ... and they are close to the real CSR of the kept rows on the common genes
    common = [g for g in ref.var_names if g in set(qry.var_names)]
    keep = ~ref.obs["cell_type"].isin(["rareA", "rareB"]).to_numpy()
    real = np.count_nonzero(ref.to_df()[common].to_numpy()[keep])
    assert comps["reference_csr"] == pytest.approx(real * 8 + (kept + 1) * 8, rel=0.1)
    for step in report["steps"].values():
        assert step["total_bytes"] == sum(step["components"].values())
        assert step["components"]["libraries"] > 100 * MiB
    assert report["peak_bytes"] == max(s["total_bytes"] for s in report["steps"].values())
    assert report["allocation"]["usable_bytes"] == int(8 * GiB * 0.7)


def test_diagnose_text_and_recommendations(pair, capsys, monkeypatch):
    _, _, ref_path, q_path = pair
    monkeypatch.setenv("MEMFIT_MEM_LIMIT", "500M")
    code, out = invoke(["diagnose", "--reference", str(ref_path), "--query", str(q_path), "--n-hvg", "0",
                        "--device", "cpu"], capsys)
    assert code == 0, out
    for fragment in ("150 × 320", "nnz", "300 common, 20 reference-only, 12 query-only",
                     "2 below 10 cells: rareA (3), rareB (7)", "scvi", "<- peak", "override:MEMFIT_MEM_LIMIT",
                     "DOES NOT FIT", "request at least", "--n-hvg 3000"):
        assert fragment in out, fragment


def test_diagnose_flags_non_counts(tmp_path, capsys):
    data = counts_adata(40, gene_names(250), seed=1)
    data.X = data.X.astype(np.float32)
    data.X.data[:] = np.log1p(data.X.data) + 0.1
    path = write(data, tmp_path / "log.h5ad")
    code, out = invoke(["diagnose", "--reference", str(path), "--query", str(path), "--device", "cpu"], capsys)
    assert code == 0
    assert "NO: sampled values are not non-negative integers" in out
    assert "--counts-layer" in out
