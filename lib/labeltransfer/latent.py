"""scVI latent space of the joint (reference + query) counts; the model is saved then freed."""

from __future__ import annotations

import gc
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import anndata
import numpy as np

EARLY_STOPPING_PATIENCE = 10


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
) -> LatentResult:
    """Train scVI (``batch_key`` batches, early stopping) on ``adata.X`` counts; save to ``model_dir``.

    ``progress`` shows the epoch bar on stderr (the CLI turns it on for a TTY without --quiet).
    ``n_samples`` draws from the posterior q(z|x) of the rows ``sample_rows`` (all rows if None)
    are taken besides the posterior mean (n_samples × rows × n_latent float32 bytes × 4).

    The model, its data loaders and the trainer are deleted before returning, so only the
    latent array (cells × n_latent float32) stays in memory.
    """
    import scvi
    import torch

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("scvi").setLevel(logging.ERROR)
    scvi.settings.seed = seed
    scvi.settings.dl_num_workers = 0
    scvi.settings.progress_bar_style = "tqdm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scvi.model.SCVI.setup_anndata(adata, batch_key=batch_key)
        model = scvi.model.SCVI(adata, n_latent=n_latent)
        model.train(
            max_epochs=max_epochs,
            accelerator="gpu" if device == "gpu" else "cpu",
            devices=1,
            batch_size=batch_size,
            early_stopping=True,
            early_stopping_patience=EARLY_STOPPING_PATIENCE,
            enable_progress_bar=progress,
            enable_model_summary=False,
        )
        latent = np.asarray(model.get_latent_representation(batch_size=batch_size), dtype=np.float32)
        rows = np.arange(adata.n_obs) if sample_rows is None else np.asarray(sample_rows)
        samples = np.empty((n_samples, len(rows), n_latent), dtype=np.float32)
        for draw in range(n_samples):
            samples[draw] = model.get_latent_representation(indices=rows, give_mean=False, batch_size=batch_size)
        history = {
            k: [float(x) for x in v.to_numpy().ravel()]
            for k, v in model.history.items()
            if k in ("elbo_train", "elbo_validation")
        }
        epochs = len(history.get("elbo_train", []))
        model.save(str(model_dir), overwrite=True, save_anndata=False)
    early = epochs < max_epochs
    model.trainer = None
    del model
    gc.collect()
    if device == "gpu":
        torch.cuda.empty_cache()
    return LatentResult(latent, samples, epochs, early, history)
