"""Figures: confusion matrix (counts, row-normalised colour) and the joint UMAP of the latent."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def umap_coordinates(latent: np.ndarray, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """2-D UMAP of ``latent`` (cells × dims) as float32."""
    import warnings

    import umap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reducer = umap.UMAP(
            n_neighbors=int(min(n_neighbors, max(2, len(latent) - 1))), random_state=seed, n_jobs=1
        )
        return np.asarray(reducer.fit_transform(latent), dtype=np.float32)


def plot_confusion(confusion: dict, path: Path, title: str = "query: true vs predicted") -> None:
    """``confusion`` = {"labels": [...], "matrix": rows true × columns predicted}."""
    plt = _pyplot()
    labels = confusion["labels"]
    counts = np.asarray(confusion["matrix"], dtype=float)
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(labels) <= 25:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if counts[i, j]:
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if fractions[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, label="fraction of true class")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _scatter(ax, coords: np.ndarray, groups: np.ndarray, title: str) -> None:
    import matplotlib

    names = sorted(set(groups.tolist()) - {"unknown"})
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    colours = {name: cmap(k % cmap.N) for k, name in enumerate(names)}
    if "unknown" in set(groups.tolist()):
        names.append("unknown")
        colours["unknown"] = "lightgrey"
    for name in names:
        sel = groups == name
        ax.scatter(coords[sel, 0], coords[sel, 1], s=3, color=colours[name], label=name, rasterized=True)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if len(names) <= 25:
        ax.legend(markerscale=3, fontsize=6, loc="best", frameon=False)


def plot_umap(coords: np.ndarray, dataset: np.ndarray, label: np.ndarray, path: Path) -> None:
    """Two panels: the joint UMAP coloured by dataset and by label (reference truth / query prediction)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    _scatter(axes[0], coords, np.asarray(dataset, dtype=str), "dataset")
    _scatter(axes[1], coords, np.asarray(label, dtype=str), "label (reference) / prediction (query)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
