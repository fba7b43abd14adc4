""""unknown" = not in the reference: a query cell far, in the latent, from every reference type.

Each reference type k gets a centroid and a Ledoit-Wolf shrunk covariance of its reference
cells' latent coordinates (the pooled within-type covariance for types with fewer than
MIN_CELLS_FOR_OWN_COVARIANCE cells); a cell's squared Mahalanobis distance to type k is divided
by the ``quantile`` of the same distance over the reference cells of type k (held out: each
half of a type's cells is scored by the fit on the other half). The cell's ``novelty`` is the
smallest ratio over the types: above 1 it lies further from every type than (1 - quantile) of
that type's own reference cells do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Types with fewer reference cells use the pooled within-type covariance.
MIN_CELLS_FOR_OWN_COVARIANCE = 20
#: Unknown rules of --unknown-rule.
UNKNOWN_RULES = ("distance", "probability", "both", "none")


@dataclass(frozen=True)
class TypeDistance:
    """Per-type centroids (K × D), precision matrices (K × D × D) and cut-offs (K, squared distances)."""

    classes: list[str]
    centroids: np.ndarray
    precisions: np.ndarray
    cutoffs: np.ndarray
    quantile: float

    def squared(self, latent: np.ndarray, batch: int = 65_536) -> np.ndarray:
        """Squared Mahalanobis distances (cells × K, float64) of ``latent`` rows to each type."""
        latent = np.asarray(latent, dtype=np.float64)
        out = np.empty((len(latent), len(self.classes)), dtype=np.float64)
        for start in range(0, len(latent), batch):
            block = latent[start : start + batch]
            for k, (mu, prec) in enumerate(zip(self.centroids, self.precisions)):
                diff = block - mu
                out[start : start + batch, k] = np.einsum("ij,jk,ik->i", diff, prec, diff)
        return out

    def novelty(self, latent: np.ndarray) -> np.ndarray:
        """min over types of squared distance / that type's cut-off (cells,); > 1 = unknown."""
        return (self.squared(latent) / self.cutoffs[None, :]).min(axis=1)


def _covariances(latent: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.covariance import LedoitWolf

    dims = latent.shape[1]
    centroids = np.stack([latent[y == k].mean(axis=0) for k in range(n_classes)])
    pooled = LedoitWolf().fit(latent - centroids[y]).covariance_
    precisions = np.empty((n_classes, dims, dims))
    for k in range(n_classes):
        cells = latent[y == k]
        cov = LedoitWolf().fit(cells).covariance_ if len(cells) >= MIN_CELLS_FOR_OWN_COVARIANCE else pooled
        precisions[k] = np.linalg.pinv(cov, hermitian=True)
    return centroids, precisions


def fit_type_distance(latent: np.ndarray, labels: np.ndarray, quantile: float = 0.99, seed: int = 0) -> TypeDistance:
    """Fit on the reference latent (cells × dims) and labels; cut-offs from held-out halves."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    latent = np.asarray(latent, dtype=np.float64)
    classes, y = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
    n_classes = len(classes)
    centroids, precisions = _covariances(latent, y, n_classes)
    # held-out distances: each half of every type scored by the fit on the other half
    half = np.zeros(len(y), dtype=bool)
    rng = np.random.default_rng(seed)
    for k in range(n_classes):
        idx = np.flatnonzero(y == k)
        half[rng.permutation(idx)[: len(idx) // 2]] = True
    held = np.empty(len(y))
    for part in (half, ~half):
        train = ~part
        if np.all(np.bincount(y[train], minlength=n_classes) > 0):
            c, p = _covariances(latent[train], y[train], n_classes)
        else:  # a type with one cell: score it in-sample
            c, p = centroids, precisions
        fit = TypeDistance(list(classes), c, p, np.ones(n_classes), quantile)
        held[part] = fit.squared(latent[part])[np.arange(part.sum()), y[part]]
    cutoffs = np.array([np.quantile(held[y == k], quantile) for k in range(n_classes)])
    return TypeDistance([str(c) for c in classes], centroids, precisions, np.maximum(cutoffs, 1e-12), quantile)


def unknown_mask(rule: str, *, max_prob: np.ndarray, novelty: np.ndarray | None, threshold: float) -> np.ndarray:
    """Which cells are ``unknown`` under ``rule`` (one of UNKNOWN_RULES).

    distance: novelty > 1; probability: max probability < threshold; both: either; none: no cell.
    """
    if rule not in UNKNOWN_RULES:
        raise ValueError(f"rule must be one of {UNKNOWN_RULES}, got {rule!r}")
    far = np.zeros(len(max_prob), dtype=bool) if novelty is None else novelty > 1.0
    unsure = max_prob < threshold
    return {"distance": far, "probability": unsure, "both": far | unsure,
            "none": np.zeros(len(max_prob), dtype=bool)}[rule]
