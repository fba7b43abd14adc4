"""scVI or SCANVI latent space of the joint (reference + query) counts; the model is saved then freed.

``scvi``: an unsupervised scVI latent (batch = dataset). ``scanvi``: that scVI model is then
trained on as SCANVI with the reference labels (query cells unlabelled), so the latent is shaped
by the reference types, as in scvi-tools' reference-mapping workflow.
"""

from __future__ import annotations

import gc
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import anndata
import numpy as np
import pandas as pd

EARLY_STOPPING_PATIENCE = 10
#: Latent models of --method (the classifier on top is XGBoost for both).
LATENT_MODELS = ("scvi", "scanvi")
#: The label given to query cells when SCANVI is trained (never a real type's name).
UNLABELLED = "__unlabelled_query__"
#: scvi-tools' epoch heuristic (scvi/model/_utils.py, get_max_epochs_heuristic, 1.4.2):
#: min(round(DECAY_AT_N_OBS / n_cells × EPOCHS_CAP), EPOCHS_CAP), at least 1.
EPOCHS_CAP, DECAY_AT_N_OBS = 400, 20_000


def default_max_epochs(n_cells: int) -> int:
    """scvi-tools' default epoch budget for ``n_cells`` cells: 400 up to 20 000 cells, then
    400 × 20 000 / n_cells (rounded, at least 1)."""
    return max(1, min(round(DECAY_AT_N_OBS / max(n_cells, 1) * EPOCHS_CAP), EPOCHS_CAP))


def scanvi_epochs(scvi_epochs: int) -> int:
    """SCANVI epochs after a scVI model trained for up to ``scvi_epochs``: scvi-tools' rule for a
    model made with ``SCANVI.from_scvi_model`` (scvi/model/base/_training_mixin.py, 1.4.2):
    min(10, max(2, round(scvi_epochs / 3)))."""
    return int(min(10, max(2, round(scvi_epochs / 3.0))))


@dataclass(frozen=True)
class LatentResult:
    """Latent coordinates (cells × n_latent, float32) and training facts.

    ``samples``: draws from q(z|x) of the cells asked for (draws × cells × n_latent, float32).
    """

    latent: np.ndarray
    samples: np.ndarray
    epochs_trained: int
    early_stopped: bool
    history: dict
    #: Wall seconds of scVI training (SCANVI excluded) and per scVI epoch.
    train_s: float = 0.0
    #: SCANVI epochs trained (0 for the scvi method) and their wall seconds.
    scanvi_epochs: int = 0
    scanvi_s: float = 0.0
    #: SCANVI's own class probabilities (rows ``predict_rows`` × ``scanvi_classes``, float64)
    #: after ``classifier_epochs`` more SCANVI epochs (None without), their count and seconds.
    scanvi_proba: np.ndarray | None = None
    scanvi_classes: tuple[str, ...] = ()
    classifier_epochs: int = 0
    classifier_s: float = 0.0
    #: The scVI latent (cells × n_latent float32) before SCANVI training (None for the scvi
    #: method, where ``latent`` is that already): SCANVI's classifier loss pulls query cells of a
    #: type the reference lacks onto the reference types, the unsupervised latent does not.
    scvi_latent: np.ndarray | None = None

    @property
    def seconds_per_epoch(self) -> float:
        return self.train_s / max(self.epochs_trained, 1)


def train_latent(
    adata: anndata.AnnData,
    model_dir: Path,
    *,
    n_latent: int = 30,
    max_epochs: int = 400,
    batch_size: int = 128,
    device: str = "cpu",
    seed: int = 0,
    batch_key: str = "dataset",
    progress: bool = False,
    n_samples: int = 0,
    sample_rows: np.ndarray | None = None,
    model: str = "scvi",
    labels: np.ndarray | None = None,
    classifier_epochs: int = 0,
    predict_rows: np.ndarray | None = None,
) -> LatentResult:
    """Train scVI (``batch_key`` batches, early stopping) on ``adata.X`` counts; save to ``model_dir``.

    ``model="scanvi"`` continues as SCANVI with ``labels`` (one per row; query rows UNLABELLED)
    for scanvi_epochs(max_epochs) epochs; the latent and draws are then SCANVI's.

    ``classifier_epochs`` (scanvi only): after the latent and draws are taken, SCANVI trains
    up to that many more epochs (early stopping) and gives its class probabilities for
    ``predict_rows`` (``scanvi_proba``, one column per labelled class, rows summing to 1): its
    classifier needs more epochs than scvi-tools' SCANVI rule gives, the latent does not
    (docs/label_transfer.md, "Ensemble"). The saved model is the SCANVI after them.

    ``progress`` shows the epoch bar on stderr (the CLI turns it on for a TTY without --quiet).
    ``n_samples`` draws from the posterior q(z|x) of the rows ``sample_rows`` (all rows if None)
    are taken besides the posterior mean (n_samples × rows × n_latent float32 bytes × 4).

    The model, its data loaders and the trainer are deleted before returning, so only the
    latent array (cells × n_latent float32) stays in memory.
    """
    import time

    import scvi
    import torch

    if model not in LATENT_MODELS:
        raise ValueError(f"model must be one of {LATENT_MODELS}, got {model!r}")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("scvi").setLevel(logging.ERROR)
    scvi.settings.seed = seed
    scvi.settings.dl_num_workers = 0
    scvi.settings.progress_bar_style = "tqdm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = dict(accelerator="gpu" if device == "gpu" else "cpu", devices=1, batch_size=batch_size,
                     early_stopping=True, early_stopping_patience=EARLY_STOPPING_PATIENCE,
                     enable_progress_bar=progress, enable_model_summary=False)
        labels_key = None
        if model == "scanvi":
            if labels is None or len(labels) != adata.n_obs:
                raise ValueError("the scanvi model needs one label per cell")
            labels_key = "_label_transfer_label"
            adata.obs[labels_key] = pd.Categorical(np.asarray(labels, dtype=str))
        scvi.model.SCVI.setup_anndata(adata, batch_key=batch_key, labels_key=labels_key)
        net = scvi.model.SCVI(adata, n_latent=n_latent)
        start = time.monotonic()
        net.train(max_epochs=max_epochs, **train)
        train_s = time.monotonic() - start
        history = {
            k: [float(x) for x in v.to_numpy().ravel()]
            for k, v in net.history.items()
            if k in ("elbo_train", "elbo_validation")
        }
        epochs = len(history.get("elbo_train", []))
        n_scanvi, scanvi_s, scvi_latent = 0, 0.0, None
        if model == "scanvi":
            scvi_latent = np.asarray(net.get_latent_representation(batch_size=batch_size), dtype=np.float32)
            net = scvi.model.SCANVI.from_scvi_model(net, unlabeled_category=UNLABELLED, labels_key=labels_key)
            n_scanvi = scanvi_epochs(max_epochs)
            start = time.monotonic()
            net.train(max_epochs=n_scanvi, n_samples_per_label=100, **train)
            scanvi_s = time.monotonic() - start
            n_scanvi = len(net.history.get("elbo_train", [])) or n_scanvi
        latent = np.asarray(net.get_latent_representation(batch_size=batch_size), dtype=np.float32)
        rows = np.arange(adata.n_obs) if sample_rows is None else np.asarray(sample_rows)
        samples = np.empty((n_samples, len(rows), n_latent), dtype=np.float32)
        for draw in range(n_samples):
            samples[draw] = net.get_latent_representation(indices=rows, give_mean=False, batch_size=batch_size)
        proba, classes, n_classifier, classifier_s = None, (), 0, 0.0
        if model == "scanvi" and classifier_epochs > 0:
            before = len(net.history.get("elbo_train", []))
            start = time.monotonic()
            net.train(max_epochs=int(classifier_epochs), n_samples_per_label=100, **train)
            classifier_s = time.monotonic() - start
            after = len(net.history.get("elbo_train", []))  # scvi-tools appends to the history
            n_classifier = (after - before if after > before else after) or int(classifier_epochs)
            at = np.arange(adata.n_obs) if predict_rows is None else np.asarray(predict_rows)
            soft = net.predict(indices=at, soft=True, batch_size=batch_size)
            classes = tuple(str(c) for c in soft.columns if str(c) != UNLABELLED)
            proba = soft[list(classes)].to_numpy(dtype=np.float64)
            proba /= np.maximum(proba.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
        net.save(str(model_dir), overwrite=True, save_anndata=False)
    early = epochs < max_epochs
    net.trainer = None
    del net
    gc.collect()
    if device == "gpu":
        torch.cuda.empty_cache()
    return LatentResult(latent, samples, epochs, early, history, train_s=round(train_s, 3),
                        scanvi_epochs=n_scanvi, scanvi_s=round(scanvi_s, 3), scanvi_proba=proba,
                        scanvi_classes=classes, classifier_epochs=n_classifier,
                        classifier_s=round(classifier_s, 3), scvi_latent=scvi_latent)
