"""Gene intersection, type filtering, loading and concatenation: float32 CSR throughout."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import scipy.sparse as sp
from util_labeltransfer import counts_adata, dense_of, gene_names, write

from hpc.errors import InputError
from labeltransfer.io import load_csr, read_header
from labeltransfer.prepare import concatenate, filter_cell_types, intersect_genes, load_query, load_reference


def _pair(tmp_path, dense_query=False, query_dtype=np.float32):
    common = gene_names(220, "c")
    ref_genes = common[:100] + gene_names(7, "refonly") + common[100:]
    rng = np.random.default_rng(3)
    query_genes = list(rng.permutation(common)) + gene_names(5, "qonly")
    ref = counts_adata(120, ref_genes, seed=1, rare={"tiny": 4})
    qry = counts_adata(60, query_genes, seed=2, dense=dense_query, dtype=query_dtype)
    return ref, qry, write(ref, tmp_path / "ref.h5ad"), write(qry, tmp_path / "q.h5ad"), common


def test_intersection_counts_order_and_columns(tmp_path):
    ref, qry, ref_path, q_path, common = _pair(tmp_path)
    ref_h, q_h = read_header(ref_path, label_key="cell_type"), read_header(q_path)
    overlap = intersect_genes(ref_h.var_names, q_h.var_names)
    assert overlap.names == [g for g in ref.var_names if g in set(qry.var_names)]
    assert set(overlap.names) == set(common)
    assert overlap.to_dict() == {
        "n_reference_genes": 227, "n_query_genes": 225, "n_common": 220,
        "n_reference_only": 7, "n_query_only": 5,
    }
    rows = np.arange(ref.n_obs)
    got_ref = load_reference(ref_h, rows, overlap)
    got_q = load_query(q_h, overlap)
    # independent reference: pandas column selection by gene name
    expect_ref = ref.to_df()[overlap.names].to_numpy()
    expect_q = qry.to_df()[overlap.names].to_numpy()
    np.testing.assert_array_equal(got_ref.toarray(), expect_ref)
    np.testing.assert_array_equal(got_q.toarray(), expect_q)


def test_dtype_and_sparsity_after_each_step_never_dense(tmp_path, monkeypatch):
    ref, qry, ref_path, q_path, _ = _pair(tmp_path, dense_query=True, query_dtype=np.float64)
    ref_h = read_header(ref_path, label_key="cell_type")
    q_h = read_header(q_path)
    assert q_h.encoding == "array" and q_h.dtype == "float64"

    def refuse(*_a, **_k):
        raise AssertionError("a sparse matrix was densified")

    monkeypatch.setattr(sp.csr_matrix, "toarray", refuse)
    monkeypatch.setattr(sp.csr_matrix, "todense", refuse)
    overlap = intersect_genes(ref_h.var_names, q_h.var_names)
    types = filter_cell_types(ref_h.labels, 10, "cell_type")
    steps = {
        "reference": load_reference(ref_h, types.rows, overlap),
        "query": load_query(q_h, overlap),
    }
    steps["joint"], dataset = concatenate(steps["reference"], steps["query"])
    import anndata
    import pandas as pd

    from labeltransfer.hvg import select_hvg

    joint = anndata.AnnData(steps["joint"], obs=pd.DataFrame({"dataset": dataset}, index=[str(i) for i in range(steps["joint"].shape[0])]),
                            var=pd.DataFrame(index=overlap.names))
    mask = select_hvg(joint, 200)
    steps["hvg"] = joint[:, mask].copy().X
    for name, matrix in steps.items():
        assert sp.issparse(matrix) and matrix.format == "csr", name
        assert matrix.dtype == np.float32, name
        assert matrix.nnz < matrix.shape[0] * matrix.shape[1], name
    assert mask.sum() == 200
    assert steps["joint"].shape == (len(types.rows) + qry.n_obs, 220)
    assert list(dataset[: len(types.rows)].unique()) == ["reference"]
    assert list(dataset[len(types.rows):].unique()) == ["query"]


def test_type_filter_drops_small_types_and_says_which(tmp_path):
    ref, _, ref_path, _, _ = _pair(tmp_path)
    header = read_header(ref_path, label_key="cell_type")
    counts = Counter(ref.obs["cell_type"].astype(str))
    result = filter_cell_types(header.labels, 10, "cell_type")
    assert result.dropped == {k: v for k, v in counts.items() if v < 10} == {"tiny": 4}
    assert result.kept == {k: v for k, v in counts.items() if v >= 10}
    expect_rows = np.flatnonzero(ref.obs["cell_type"].astype(str).to_numpy() != "tiny")
    np.testing.assert_array_equal(result.rows, expect_rows)
    assert "tiny (4)" in result.message(10)
    with pytest.raises(InputError, match="every reference cell type"):
        filter_cell_types(header.labels, 10_000, "cell_type")


def test_integer_check_and_override(tmp_path):
    genes = gene_names(210)
    data = counts_adata(30, genes, seed=4)
    data.X = data.X.astype(np.float32)
    data.X.data[3] = 1.5
    path = write(data, tmp_path / "frac.h5ad")
    header = read_header(path)
    with pytest.raises(InputError, match="matrix 'X' holds non-integer"):
        load_csr(header, np.arange(30), np.arange(210))
    got = load_csr(header, np.arange(30), np.arange(210), check_integer=False)
    np.testing.assert_array_equal(got.toarray(), dense_of(data))
    data.X.data[3] = -2.0
    data.layers["counts"] = data.X.copy()
    path = write(data, tmp_path / "neg.h5ad")
    with pytest.raises(InputError, match="'layers/counts' holds negative"):
        load_csr(read_header(path, layer="counts"), np.arange(30), np.arange(210))


def test_too_few_and_duplicate_genes():
    with pytest.raises(InputError, match="only 150 common genes"):
        intersect_genes(gene_names(300), gene_names(150) + gene_names(10, "x"))
    with pytest.raises(InputError, match="share no gene"):
        intersect_genes(gene_names(300), gene_names(300, "x"))
    with pytest.raises(InputError, match="duplicate gene name.*g5"):
        intersect_genes(gene_names(300) + ["g5"], gene_names(300))
    # a duplicate that is not common is harmless
    assert intersect_genes(gene_names(300) + ["r1", "r1"], gene_names(300)).n_common == 300
