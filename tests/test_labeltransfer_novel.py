"""A query-only cell type: the default run calls it ``unknown`` and the known types lose nothing."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from util_labeltransfer import CLI, PYTHON

pytestmark = [pytest.mark.labels, pytest.mark.slow]


@pytest.fixture(scope="module")
def novel_run(tmp_path_factory):
    import subprocess

    from labeltransfer.synthetic import novel_type_split

    d = tmp_path_factory.mktemp("lt_novel")
    ref, qry, novel = novel_type_split(500, 300, 300, seed=3)
    ref.write_h5ad(d / "ref.h5ad")
    qry.write_h5ad(d / "query.h5ad")
    out = d / "out"
    proc = subprocess.run(
        [PYTHON, str(CLI), "run", "--reference", str(d / "ref.h5ad"), "--query", str(d / "query.h5ad"),
         "--query-label-key", "cell_type", "--out-dir", str(out), "--max-epochs", "20", "--n-latent", "10",
         "--n-hvg", "0", "--latent-samples", "0", "--device", "cpu", "--min-common-genes", "100"],
        capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return qry, novel, out, json.loads((out / "report.json").read_text())


def test_novel_type_becomes_unknown_and_known_types_keep_their_f1(novel_run):
    from sklearn.metrics import f1_score

    qry, novel, out, report = novel_run
    pred = pd.read_csv(out / "predictions.tsv", sep="\t")
    prob = pd.read_csv(out / "probabilities.tsv.gz", sep="\t").drop(columns="cell")
    truth = qry.obs["cell_type"].astype(str).to_numpy()
    labels = pred["predicted_label"].astype(str).to_numpy()
    argmax = prob.columns.to_numpy()[prob.to_numpy().argmax(axis=1)].astype(str)
    assert novel not in prob.columns and (truth == novel).sum() > 40
    recall = np.mean(labels[truth == novel] == "unknown")
    assert recall >= 0.8
    known = sorted(set(truth) - {novel})
    f1_out = f1_score(truth, labels, labels=known, average="macro", zero_division=0)
    f1_argmax = f1_score(truth, argmax, labels=known, average="macro", zero_division=0)
    assert f1_out >= f1_argmax - 0.01
    # the report says the same (independent: scikit-learn on the written tables)
    m = report["metrics"]
    assert m["unknown_recall"] == pytest.approx(recall)
    assert m["known_macro_f1"] == pytest.approx(f1_out) and m["argmax"]["known_macro_f1"] == pytest.approx(f1_argmax)
    assert m["novel_types"] == [novel]
    assert report["method"] == "scanvi-xgb" and report["unknown"]["rule"] == "knn"
    assert (pred["is_unknown"] == (pred["novelty"] > 1)).all()
    assert report["scvi"]["max_epochs"] == 20 and report["scvi"]["scanvi_epochs"] == 7
    assert 1 <= report["scvi"]["epochs_trained"] <= 20 and report["scvi"]["seconds_per_epoch"] > 0
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert "unknown" in m["confusion_matrix"]["labels"]


def test_no_full_matrix_is_densified(tmp_path, monkeypatch):
    """The whole run (in this process, 1 epoch) on 6 000 + 4 000 cells × 5 000 genes, 5 % dense,
    with every sparse toarray/todense patched to fail above 4 096 rows: only mini-batches of the
    HVG matrix may be made dense, never a whole matrix (or a 64 MiB load chunk)."""
    from labeltransfer.run import RunOptions, run_label_transfer
    from labeltransfer.synthetic import sparse_counts

    sparse_counts(6000, 5000, density=0.05, seed=1).write_h5ad(tmp_path / "ref.h5ad")
    sparse_counts(4000, 5000, density=0.05, seed=2).write_h5ad(tmp_path / "query.h5ad")
    biggest = [0]

    def guard(original):
        def call(self, *args, **kwargs):
            biggest[0] = max(biggest[0], self.shape[0])
            if self.shape[0] > 4096:
                raise AssertionError(f"densified a {self.shape} sparse matrix")
            return original(self, *args, **kwargs)
        return call

    for cls in (sp.csr_matrix, sp.csc_matrix, sp.coo_matrix, sp.csr_array, sp.csc_array, sp.coo_array):
        for name in ("toarray", "todense"):
            monkeypatch.setattr(cls, name, guard(getattr(cls, name)))
    # the UMAP figure embeds the dense (cells × 30) latent only: its 10 000-cell fit (~1.5 min
    # here) says nothing about densifying the counts, so two latent columns stand in for it
    monkeypatch.setattr("labeltransfer.plots.umap_coordinates",
                        lambda latent, seed=0, n_neighbors=15: np.ascontiguousarray(latent[:, :2], dtype=np.float32))
    report = run_label_transfer(RunOptions(
        reference=str(tmp_path / "ref.h5ad"), query=str(tmp_path / "query.h5ad"), label_key="cell_type",
        out_dir=str(tmp_path / "out"), max_epochs=1, n_hvg=2000, latent_samples=1, device="cpu", quiet=True,
        ignore_memory_check=True))
    assert report["matrices"]["concatenate"]["shape"] == [10000, 5000]
    for step in ("load_reference", "load_query", "concatenate", "hvg"):
        assert report["matrices"][step]["format"] == "csr" and report["matrices"][step]["dtype"] == "float32"
    assert 0 < biggest[0] <= 4096  # mini-batches were made dense (the guard saw them), nothing larger
