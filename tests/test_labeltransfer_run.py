"""The full `run` on a tiny split (few epochs): outputs checked against independent computations."""

from __future__ import annotations

import gzip
import json
import subprocess

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from util_labeltransfer import CLI, PYTHON, counts_adata, dense_of, gene_names, write

pytestmark = [pytest.mark.labels, pytest.mark.slow]
THRESHOLD = 0.6


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    d = tmp_path_factory.mktemp("lt_run")
    ref = counts_adata(300, gene_names(230) + gene_names(10, "r"), seed=11, rare={"rare": 4})
    qry = counts_adata(120, gene_names(10, "q") + gene_names(230)[::-1], seed=12)
    ref_path, q_path = write(ref, d / "ref.h5ad"), write(qry, d / "query.h5ad")
    out = d / "out"
    proc = run_cli(ref_path, q_path, out)
    return ref, qry, out, proc.stderr


def run_cli(ref_path, q_path, out) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [PYTHON, str(CLI), "run", "--reference", str(ref_path), "--query", str(q_path), "--label-key", "cell_type",
         "--query-label-key", "cell_type", "--out-dir", str(out), "--max-epochs", "25", "--n-latent", "8",
         "--n-hvg", "220", "--unknown-threshold", str(THRESHOLD), "--device", "cpu", "--xgb-tuning", "quick",
         "--latent-samples", "3", "--unknown-rule", "probability"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_same_inputs_and_seed_give_identical_outputs(result):
    """A second run (same inputs, seed and threads) writes the same latent, predictions and probabilities."""
    _, _, out, _ = result
    again = out.parent / "again"
    run_cli(out.parent / "ref.h5ad", out.parent / "query.h5ad", again)
    assert (out / "predictions.tsv").read_bytes() == (again / "predictions.tsv").read_bytes()
    with gzip.open(out / "probabilities.tsv.gz") as a, gzip.open(again / "probabilities.tsv.gz") as b:
        assert a.read() == b.read()
    first, second = anndata.read_h5ad(out / "query_annotated.h5ad"), anndata.read_h5ad(again / "query_annotated.h5ad")
    np.testing.assert_array_equal(first.obsm["X_scvi"], second.obsm["X_scvi"])
    assert json.loads((again / "report.json").read_text())["xgboost"]["latent_samples"] == 3


def test_outputs_exist_and_nothing_left_behind(result):
    _, _, out, stderr = result
    names = {p.name for p in out.iterdir()}
    assert names == {"predictions.tsv", "probabilities.tsv.gz", "query_annotated.h5ad", "report.json",
                     "confusion_matrix.png", "umap.png", "label_transfer.memory.json", "model"}
    assert (out / "model" / "model.pt").is_file()
    for png in ("confusion_matrix.png", "umap.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert "dropped 1 cell type(s) with fewer than 10 cells: rare (4)" in stderr
    assert "230 common, 10 reference-only, 10 query-only" in stderr


def test_predictions_probabilities_and_threshold(result):
    _, qry, out, _ = result
    pred = pd.read_csv(out / "predictions.tsv", sep="\t")
    with gzip.open(out / "probabilities.tsv.gz", "rt") as fh:
        prob = pd.read_csv(fh, sep="\t")
    assert list(pred["cell"]) == list(qry.obs_names) == list(prob["cell"])
    p = prob.drop(columns="cell")
    assert sorted(p.columns) == ["type_0", "type_1", "type_2"]  # "rare" was dropped
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(pred["probability"], p.max(axis=1), atol=1e-6)
    below = pred["probability"] < THRESHOLD
    assert (pred["is_unknown"] == below).all()
    assert (pred.loc[below, "predicted_label"] == "unknown").all()
    argmax = p.columns.to_numpy()[p.to_numpy().argmax(axis=1)]
    assert (pred.loc[~below, "predicted_label"].to_numpy() == argmax[~below.to_numpy()]).all()


def test_report_metrics_match_sklearn(result):
    from sklearn.metrics import accuracy_score, f1_score

    _, qry, out, _ = result
    report = json.loads((out / "report.json").read_text())
    pred = pd.read_csv(out / "predictions.tsv", sep="\t")
    truth = qry.obs["cell_type"].astype(str).to_numpy()
    labels = pred["predicted_label"].astype(str).to_numpy()
    assert report["metrics"]["accuracy"] == pytest.approx(accuracy_score(truth, labels))
    assert report["metrics"]["macro_f1"] == pytest.approx(
        f1_score(truth, labels, labels=sorted(set(truth)), average="macro", zero_division=0))
    assert report["metrics"]["accuracy"] > 0.6  # three learnable types: chance is 1/3
    with gzip.open(out / "probabilities.tsv.gz", "rt") as fh:
        prob = pd.read_csv(fh, sep="\t").drop(columns="cell")
    argmax = prob.columns.to_numpy()[prob.to_numpy().argmax(axis=1)].astype(str)
    assert report["metrics"]["argmax"]["accuracy"] == pytest.approx(accuracy_score(truth, argmax))
    assert report["metrics"]["argmax"]["macro_f1"] == pytest.approx(
        f1_score(truth, argmax, labels=sorted(set(truth)), average="macro", zero_division=0))
    assert report["metrics"]["argmax"]["accuracy"] >= report["metrics"]["accuracy"]
    assert report["xgboost"]["class_weight"] == "balanced"
    cm = np.array(report["metrics"]["confusion_matrix"]["matrix"])
    assert cm.sum() == len(truth)
    assert report["gene_overlap"]["n_common"] == 230 and report["n_genes_used"] == 220
    assert report["cell_types"]["dropped"] == {"rare": 4}
    assert report["xgboost"]["best_params"] and len(report["xgboost"]["cv"]) == 4
    assert report["scvi"]["epochs_trained"] >= 1
    for key in ("parameters", "versions", "estimate", "allocation", "steps"):
        assert report[key]
    assert set(report["steps"]) == {"load_reference", "load_query", "concatenate", "hvg", "scvi", "xgboost", "outputs"}
    for step in report["steps"].values():
        assert step["peak_rss_bytes"] > 0 and step["wall_s"] >= 0
    for step in ("load_reference", "load_query", "concatenate", "hvg"):
        facts = report["matrices"][step]
        assert facts["format"] == "csr" and facts["dtype"] == "float32"
    assert report["matrices"]["concatenate"]["shape"] == [296 + 120, 230]
    sidecar = json.loads((out / "label_transfer.memory.json").read_text())
    assert sidecar["peak_rss_bytes"] > 0 and sidecar["estimate_bytes"] == report["estimate"]["total_bytes"]


def test_annotated_query_keeps_sparse_counts(result):
    _, qry, out, _ = result
    ann = anndata.read_h5ad(out / "query_annotated.h5ad")
    assert sp.issparse(ann.X) and ann.X.dtype == np.float32
    np.testing.assert_array_equal(dense_of(ann), dense_of(qry))
    assert list(ann.var_names) == list(qry.var_names)
    assert ann.obsm["X_scvi"].shape == (120, 8) and ann.obsm["X_umap"].shape == (120, 2)
    pred = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert list(ann.obs["predicted_label"].astype(str)) == list(pred["predicted_label"].astype(str))
    assert ann.var["in_reference"].sum() == 230


def test_unknown_threshold_rule():
    from labeltransfer.classify import Classifier, predict

    class Fixed:
        def predict_proba(self, x):
            return np.array([[0.7, 0.3], [0.5, 0.5], [0.2, 0.8], [0.45, 0.55], [0.51, 0.49]])

    clf = Classifier(Fixed(), ["a", "b"], {}, [])
    labels, prob, unknown, _ = predict(clf, np.zeros((5, 2)), 0.55)
    assert list(labels) == ["a", "unknown", "b", "b", "unknown"]
    assert list(unknown) == [False, True, False, False, True]
    np.testing.assert_allclose(prob, [0.7, 0.5, 0.8, 0.55, 0.51])
    labels, _, unknown, _ = predict(clf, np.zeros((5, 2)), 0.0)
    assert not unknown.any() and "unknown" not in labels


def test_posterior_averaged_probabilities():
    """Probabilities are the mean over the latent mean and each posterior draw."""
    from labeltransfer.classify import Classifier, posterior_proba, predict

    class Softmax:
        def predict_proba(self, x):
            e = np.exp(x)
            return e / e.sum(axis=1, keepdims=True)

    rng = np.random.default_rng(0)
    mean, draws = rng.normal(size=(6, 3)), rng.normal(size=(4, 6, 3))
    clf = Classifier(Softmax(), ["a", "b", "c"], {}, [])
    expected = np.mean([Softmax().predict_proba(x) for x in [mean, *draws]], axis=0)
    np.testing.assert_allclose(posterior_proba(clf, mean, draws), expected, rtol=1e-5)  # float32 features
    np.testing.assert_allclose(posterior_proba(clf, mean, draws[:0]), Softmax().predict_proba(mean), rtol=1e-5)
    labels, prob, _, proba = predict(clf, mean, 0.0, samples=draws)
    np.testing.assert_allclose(proba, expected, rtol=1e-5)
    assert list(labels) == list(np.array(["a", "b", "c"])[expected.argmax(axis=1)])
    np.testing.assert_allclose(prob, expected.max(axis=1), rtol=1e-5)


def test_balanced_weights_match_sklearn():
    from sklearn.utils.class_weight import compute_sample_weight

    from labeltransfer.classify import _weights

    y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 0, 2, 1, 0])
    np.testing.assert_allclose(_weights(y, "balanced"), compute_sample_weight("balanced", y))
    assert _weights(y, "none") is None
    w = _weights(y, "balanced")
    totals = [w[y == c].sum() for c in range(3)]
    np.testing.assert_allclose(totals, len(y) / 3)  # every class weighs the same in total


def test_ensemble_averages_xgboost_with_the_saved_scanvi(result):
    """The default ensemble: probabilities.tsv.gz is the mean of XGBoost's and SCANVI's class
    probabilities (both kept in query_annotated.h5ad), and SCANVI's are what scvi-tools' own
    predict gives from the saved model on the same cells (recomputed here from the model's genes)."""
    import scvi
    import torch

    from labeltransfer.latent import UNLABELLED

    ref, qry, out, _ = result
    report = json.loads((out / "report.json").read_text())
    assert report["ensemble"]["kind"] == "scanvi" and report["ensemble"]["scanvi_classifier_max_epochs"] == 25
    assert 1 <= report["ensemble"]["scanvi_classifier_epochs"] <= 25  # early stopping may end it sooner
    ann = anndata.read_h5ad(out / "query_annotated.h5ad")
    xgb, scanvi = ann.obsm["proba_xgboost"], ann.obsm["proba_scanvi"]
    np.testing.assert_allclose(scanvi.sum(axis=1), 1.0, atol=1e-5)
    with gzip.open(out / "probabilities.tsv.gz", "rt") as fh:
        prob = pd.read_csv(fh, sep="\t").drop(columns="cell")
    np.testing.assert_allclose(prob.to_numpy(), 0.5 * (xgb.astype(np.float64) + scanvi), atol=2e-6)

    genes = list(torch.load(out / "model" / "model.pt", weights_only=False)["var_names"])
    kept = ref.obs["cell_type"].astype(str) != "rare"
    a, b = ref[kept.to_numpy(), genes], qry[:, genes]
    joint = anndata.AnnData(sp.vstack([sp.csr_matrix(dense_of(a)), sp.csr_matrix(dense_of(b))]).astype(np.float32),
                            var=pd.DataFrame(index=genes))
    joint.obs["dataset"] = pd.Categorical(["reference"] * a.n_obs + ["query"] * b.n_obs,
                                          categories=["reference", "query"])
    joint.obs["_label_transfer_label"] = pd.Categorical(
        np.concatenate([a.obs["cell_type"].astype(str), [UNLABELLED] * b.n_obs]))
    model = scvi.model.SCANVI.load(str(out / "model"), adata=joint)
    soft = model.predict(indices=np.arange(a.n_obs, joint.n_obs), soft=True)
    np.testing.assert_allclose(soft[list(prob.columns)].to_numpy(), scanvi, atol=1e-5)
