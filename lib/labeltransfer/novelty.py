""""unknown" = not in the reference: a query cell far, in the latent, from every reference type.

Two distances (docs/label_transfer.md, "unknown", for the measurements that chose the default):

``knn`` (ReferenceNeighbours): a cell's mean Euclidean distance to its k nearest reference
cells, divided by the ``quantile`` of the same distance over the reference cells of the type
of its nearest reference cell, each reference cell scored without itself (leave-one-out).
Above 1 the cell lies further from the reference than (1 - quantile) of that type's own cells.

``distance`` (TypeDistance): each reference type k gets a centroid and a Ledoit-Wolf shrunk
covariance of its reference cells' latent coordinates (the pooled within-type covariance for
types with fewer than MIN_CELLS_FOR_OWN_COVARIANCE cells); a cell's squared Mahalanobis
distance to type k is divided by the ``quantile`` of the same distance over the reference
cells of type k (held out: each half of a type's cells is scored by the fit on the other
half). The cell's ``novelty`` is the smallest ratio over the types.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Types with fewer reference cells use the pooled within-type covariance.
MIN_CELLS_FOR_OWN_COVARIANCE = 20
#: Unknown rules of --unknown-rule (the first is the default).
UNKNOWN_RULES = ("knn", "distance", "probability", "both", "none")
#: --unknown-latent: the distances in the classifier's latent (SCANVI's for scanvi-xgb) or scVI's.
UNKNOWN_LATENTS = ("classifier", "scvi")
#: Reference neighbours of the knn rule (--unknown-k).
DEFAULT_K = 30
#: Working memory (bytes) of scikit-learn's chunked brute-force neighbour search.
KNN_WORKING_BYTES = 64 * 2**20


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


@dataclass(frozen=True)
class ReferenceNeighbours:
    """The reference latent (cells × D, float32), its type codes, class names and per-type
    cut-offs (K, latent units) of the mean distance to the k nearest reference cells."""

    reference: np.ndarray
    codes: np.ndarray
    classes: list[str]
    cutoffs: np.ndarray
    k: int
    quantile: float

    def neighbours(self, latent: np.ndarray, *, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(mean distance to the k nearest reference cells, type code of the nearest one) per row.

        ``exclude_self``: ``latent`` is the reference itself and each row's own point is skipped.
        Brute force in chunks of at most KNN_WORKING_BYTES of distances (sklearn).
        """
        import sklearn
        from sklearn.neighbors import NearestNeighbors

        extra = 1 if exclude_self else 0
        k = min(self.k + extra, len(self.reference))
        with sklearn.config_context(working_memory=KNN_WORKING_BYTES / 2**20):
            index = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(self.reference)
            dist, idx = index.kneighbors(np.asarray(latent, dtype=np.float32))
        if exclude_self:  # the point itself is at distance 0, normally first (ties: drop it anyway)
            own = idx == np.arange(len(idx))[:, None]
            own[~own.any(axis=1), -1] = True
            keep = ~own
            dist = dist[keep].reshape(len(idx), k - 1)
            idx = idx[keep].reshape(len(idx), k - 1)
        return dist.mean(axis=1), self.codes[idx[:, 0]]

    def novelty(self, latent: np.ndarray) -> np.ndarray:
        """mean k-nearest-reference distance / the nearest type's cut-off (cells,); > 1 = unknown."""
        mean, nearest = self.neighbours(latent)
        return mean / self.cutoffs[nearest]


def fit_reference_neighbours(
    latent: np.ndarray, labels: np.ndarray, quantile: float = 0.99, k: int = DEFAULT_K,
) -> ReferenceNeighbours:
    """Fit on the reference latent (cells × dims) and labels; cut-offs from leave-one-out distances."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(latent) < 2:
        raise ValueError("the knn rule needs at least 2 reference cells")
    classes, codes = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
    fit = ReferenceNeighbours(np.ascontiguousarray(latent, dtype=np.float32), codes, [str(c) for c in classes],
                              np.ones(len(classes)), min(k, len(latent) - 1), quantile)
    held, _ = fit.neighbours(fit.reference, exclude_self=True)
    cutoffs = np.array([np.quantile(held[codes == c], quantile) for c in range(len(classes))])
    return ReferenceNeighbours(fit.reference, codes, fit.classes, np.maximum(cutoffs, 1e-12), fit.k, quantile)


def novelty_scores(
    rule: str, reference: np.ndarray, labels: np.ndarray, query: np.ndarray, *, quantile: float = 0.99,
    k: int = DEFAULT_K, seed: int = 0,
) -> np.ndarray:
    """The query cells' novelty (> 1 = far) by the distance ``rule`` uses: the centroid
    Mahalanobis distance for ``distance``, the k-nearest-reference distance for every other
    rule (for ``probability`` and ``none`` it is reported, not used)."""
    if rule == "distance":
        return fit_type_distance(reference, labels, quantile, seed=seed).novelty(query)
    return fit_reference_neighbours(reference, labels, quantile, k).novelty(query)


def unknown_mask(rule: str, *, max_prob: np.ndarray, novelty: np.ndarray | None, threshold: float) -> np.ndarray:
    """Which cells are ``unknown`` under ``rule`` (one of UNKNOWN_RULES).

    knn / distance: novelty > 1 (``novelty`` from that rule's distance); probability: max
    probability < threshold; both: novelty > 1 or max probability < threshold; none: no cell.
    """
    if rule not in UNKNOWN_RULES:
        raise ValueError(f"rule must be one of {UNKNOWN_RULES}, got {rule!r}")
    far = np.zeros(len(max_prob), dtype=bool) if novelty is None else novelty > 1.0
    unsure = max_prob < threshold
    return {"knn": far, "distance": far, "probability": unsure, "both": far | unsure,
            "none": np.zeros(len(max_prob), dtype=bool)}[rule]
