"""Every bad input of `run`: one line on stderr, exit 2 (3 for memory), nothing written."""

from __future__ import annotations

import anndata
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from util_labeltransfer import counts_adata, gene_names, invoke, write

GENES = gene_names(250)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lt_bad")
    ref = counts_adata(80, GENES, seed=1)
    qry = counts_adata(40, GENES, seed=2)
    paths = {"ref": write(ref, d / "ref.h5ad"), "query": write(qry, d / "query.h5ad")}
    frac = qry.copy()
    frac.X = frac.X.astype(np.float32)
    frac.X.data[0] = 0.5
    paths["frac"] = write(frac, d / "frac.h5ad")
    neg = ref.copy()
    neg.layers["counts"] = neg.X.copy()
    neg.layers["counts"].data[5] = -1
    paths["neg_layer"] = write(neg, d / "neg_layer.h5ad")
    paths["other_genes"] = write(counts_adata(40, gene_names(250, "x"), seed=3), d / "other.h5ad")
    paths["few_genes"] = write(counts_adata(40, GENES[:120] + gene_names(130, "x"), seed=3), d / "few.h5ad")
    dup = counts_adata(40, GENES, seed=3)
    dup.var_names = GENES[:-1] + [GENES[0]]
    paths["dup"] = write(dup, d / "dup.h5ad")
    empty = anndata.AnnData(
        X=sp.csr_matrix((0, len(GENES)), dtype=np.float32),
        obs=pd.DataFrame({"cell_type": pd.Categorical([])}, index=pd.Index([], dtype=str)),
        var=pd.DataFrame(index=GENES),
    )
    paths["empty"] = write(empty, d / "empty.h5ad")
    text = d / "notes.h5ad"
    text.write_text("cell\tgene\n")
    paths["text"] = text
    with h5py.File(d / "plain.h5", "w") as f:
        f["x"] = np.zeros(3)
    paths["plain"] = d / "plain.h5"
    return paths


def _run(files, capsys, tmp_path, *extra, ref="ref", query="query"):
    out = tmp_path / "out"
    args = ["run", "--reference", str(files[ref]), "--query", str(files[query]), "--label-key", "cell_type",
            "--out-dir", str(out), "--max-epochs", "2", "--quiet", "--device", "cpu", *extra]
    code, err = invoke(args, capsys)
    written = sorted(p.name for p in out.rglob("*")) if out.exists() else []
    return code, err, written


CASES = [
    # (name, kwargs, extra args, expected code, message fragment)
    ("missing label key", {}, ["--label-key", "celltype"], 2, "no obs column 'celltype'; obs columns: cell_type, batch"),
    ("non-integer counts", {"query": "frac"}, [], 2, "'X' holds non-integer values"),
    ("negative counts in a layer", {"ref": "neg_layer", "query": "neg_layer"}, ["--counts-layer", "counts"], 2, "'layers/counts' holds negative"),
    ("no such layer", {}, ["--counts-layer", "raw"], 2, "no matrix 'layers/raw'"),
    ("no common genes", {"query": "other_genes"}, [], 2, "share no gene names"),
    ("few common genes", {"query": "few_genes"}, [], 2, "only 120 common genes"),
    ("duplicate genes", {"query": "dup"}, [], 2, "duplicate gene name(s) among the common genes: g0"),
    ("every type below minimum", {}, ["--min-cells-per-type", "1000"], 2, "every reference cell type"),
    ("empty query", {"query": "empty"}, [], 2, "the query has no cells"),
    ("query label key missing", {}, ["--query-label-key", "truth"], 2, "query has no obs column 'truth'"),
    ("not h5ad (text)", {"query": "text"}, [], 2, "not an .h5ad file"),
    ("not h5ad (hdf5)", {"ref": "plain"}, [], 2, "not an .h5ad file"),
    ("missing file", {"ref": "nothing"}, [], 2, "no such file"),
    ("bad threshold", {}, ["--unknown-threshold", "1.5"], 2, "--unknown-threshold must be in [0, 1]"),
    ("ensemble without SCANVI", {}, ["--method", "scvi-xgb", "--ensemble", "scanvi"], 2,
     "--ensemble scanvi needs --method scanvi-xgb"),
]


@pytest.mark.parametrize("name,kwargs,extra,code,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_one_line_exit_2_nothing_written(files, capsys, tmp_path, *, name, kwargs, extra, code, fragment):
    files = dict(files, nothing=tmp_path / "nothing.h5ad")
    got, err, written = _run(files, capsys, tmp_path, *extra, **kwargs)
    assert got == code, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert fragment in lines[0]
    assert "Traceback" not in err
    assert written == []


def test_gpu_asked_but_absent(files, capsys, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    got, err, written = _run(files, capsys, tmp_path, "--device", "gpu")
    assert got == 2
    assert "no CUDA GPU" in err and len(err.strip().splitlines()) == 1
    assert written == []
    from hpc.device import resolve_device

    assert resolve_device("auto") == "cpu"


def test_memory_refusal_exit_3(files, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MEMFIT_MEM_LIMIT", "300M")
    got, err, written = _run(files, capsys, tmp_path)
    assert got == 3
    assert "out of memory (planned)" in err and "--ignore-memory-check" in err
    assert "libraries" in err  # the estimate table with named components
    assert written == []
