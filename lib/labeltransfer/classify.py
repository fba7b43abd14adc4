"""XGBoost (hist) on the reference latent; optional stratified K-fold grid search.

Trees split on one coordinate at a time, while the boundaries between cell types in a VAE
latent space are oblique. The classifier's input is therefore the latent coordinates plus
the reference's linear discriminant coordinates (shrinkage LDA, Ledoit-Wolf; n_types - 1
columns, fitted on the reference cells only): the trees get the directions that separate
the types, and keep the raw latent for what is not linear (docs/label_transfer.md).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

#: Parameter grids of --xgb-tuning (every combination is tried).
GRIDS = {
    "none": {"max_depth": [4], "learning_rate": [0.1], "n_estimators": [200], "subsample": [0.8],
             "colsample_bytree": [0.5]},
    "quick": {"max_depth": [4, 6], "learning_rate": [0.05, 0.1], "n_estimators": [200], "subsample": [0.8],
              "colsample_bytree": [0.5]},
    "full": {
        "max_depth": [3, 4, 6, 8],
        "learning_rate": [0.05, 0.1, 0.3],
        "n_estimators": [100, 300],
        "subsample": [0.8, 1.0],
        "colsample_bytree": [0.5],
    },
}
FOLDS = {"none": 0, "quick": 3, "full": 5}
CLASS_WEIGHTS = ("balanced", "none")
#: Classifier inputs: the latent plus discriminant coordinates, or the latent alone.
FEATURES = ("latent+lda", "latent")


@dataclass
class LatentFeatures:
    """The classifier's input built from latent coordinates (cells × dims, float)."""

    discriminant: object | None = None
    #: Number of discriminant columns appended (n_types - 1, at most the latent's dims).
    n_extra: int = 0

    def transform(self, latent: np.ndarray) -> np.ndarray:
        """``latent`` with the discriminant coordinates appended (float32; unchanged without them)."""
        latent = np.asarray(latent, dtype=np.float32)
        if self.discriminant is None:
            return latent
        return np.hstack([latent, self.discriminant.transform(latent).astype(np.float32)])


def fit_features(latent: np.ndarray, y: np.ndarray, kind: str = "latent+lda") -> LatentFeatures:
    """Fit the feature map on reference cells ``latent`` with integer labels ``y``.

    ``latent+lda`` fits shrinkage LDA (eigen solver, Ledoit-Wolf shrinkage: stable with a few
    cells per type) when there are at least 2 types; ``latent`` appends nothing.
    """
    if kind not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {kind!r}")
    if kind == "latent" or len(np.unique(y)) < 2:
        return LatentFeatures()
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto")
    latent = np.asarray(latent, dtype=np.float64)
    lda.fit(latent, y)
    return LatentFeatures(lda, int(lda.transform(latent[:1]).shape[1]))


@dataclass
class Classifier:
    """A fitted XGBoost model with its class names (column order of probabilities)."""

    model: object
    classes: list[str]
    best_params: dict
    cv_scores: list[dict]
    features: LatentFeatures = field(default_factory=LatentFeatures)

    def predict_proba(self, latent: np.ndarray) -> np.ndarray:
        """Probabilities (cells × classes, float64) for latent coordinates ``latent``."""
        return np.asarray(self.model.predict_proba(self.features.transform(latent)), dtype=np.float64)


def _model(params: dict, device: str, seed: int, n_jobs: int):
    from xgboost import XGBClassifier

    return XGBClassifier(
        tree_method="hist",
        device="cuda" if device == "gpu" else "cpu",
        random_state=seed,
        n_jobs=n_jobs,
        **params,
    )


def _weights(y: np.ndarray, class_weight: str) -> np.ndarray | None:
    """Per-cell weights n / (n_classes × count of the cell's class), or None (all 1)."""
    if class_weight == "none":
        return None
    counts = np.bincount(y)
    present = np.count_nonzero(counts)
    return (len(y) / (present * counts[y])).astype(np.float64)


def fit_classifier(
    latent: np.ndarray,
    labels: np.ndarray,
    *,
    tuning: str = "none",
    device: str = "cpu",
    seed: int = 0,
    n_jobs: int = 2,
    class_weight: str = "balanced",
    features: str = "latent+lda",
) -> Classifier:
    """Fit on ``latent`` (cells × dims) → ``labels``; tune by stratified K-fold macro-F1 if asked.

    ``class_weight="balanced"`` weights each cell by n / (n_classes × cells of its class), so rare
    types weigh as much as common ones (macro-F1); ``"none"`` gives every cell weight 1.
    ``features`` is one of FEATURES; in tuning, the feature map is fitted on each fold's training
    cells only.
    """
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold

    if class_weight not in CLASS_WEIGHTS:
        raise ValueError(f"class_weight must be one of {CLASS_WEIGHTS}, got {class_weight!r}")
    classes, y = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
    weight = _weights(y, class_weight)
    grid = GRIDS[tuning]
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    scores: list[dict] = []
    best = combos[0]
    folds = FOLDS[tuning]
    if folds and len(combos) > 1:
        n_splits = int(min(folds, np.bincount(y).min()))
        if n_splits >= 2:
            splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
            splits = list(splitter.split(latent, y))
            fold_maps = [fit_features(latent[train], y[train], features) for train, _ in splits]
            for params in combos:
                fold_scores = []
                for (train, test), fmap in zip(splits, fold_maps):
                    model = _model(params, device, seed, n_jobs)
                    model.fit(fmap.transform(latent[train]), y[train], sample_weight=_weights(y[train], class_weight))
                    fold_scores.append(f1_score(y[test], model.predict(fmap.transform(latent[test])), average="macro"))
                scores.append({"params": params, "macro_f1": float(np.mean(fold_scores))})
            best = max(scores, key=lambda s: s["macro_f1"])["params"]
    fmap = fit_features(latent, y, features)
    model = _model(best, device, seed, n_jobs)
    model.fit(fmap.transform(latent), y, sample_weight=weight)
    return Classifier(model, [str(c) for c in classes], dict(best), scores, fmap)


def posterior_proba(classifier: Classifier, latent: np.ndarray, samples: np.ndarray | None = None) -> np.ndarray:
    """Class probabilities averaged over the posterior mean ``latent`` (cells × dims) and the
    draws ``samples`` (draws × cells × dims) of each cell's q(z|x); float64, cells × classes."""
    proba = classifier.predict_proba(latent)
    if samples is None or len(samples) == 0:
        return proba
    for draw in samples:
        proba += classifier.predict_proba(draw)
    return proba / (len(samples) + 1)


def predict(
    classifier: Classifier, latent: np.ndarray, unknown_threshold: float, unknown_label: str = "unknown",
    samples: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(labels, max probability, is_unknown, probabilities): below the threshold -> ``unknown``.

    With ``samples`` (draws of the cells' latent posterior) the probabilities are averaged over
    the mean and the draws (posterior_proba)."""
    proba = posterior_proba(classifier, latent, samples)
    best = proba.argmax(axis=1)
    max_prob = proba[np.arange(len(best)), best]
    is_unknown = max_prob < unknown_threshold
    labels = np.asarray(classifier.classes, dtype=object)[best]
    labels = np.where(is_unknown, unknown_label, labels)
    return labels, max_prob, is_unknown, proba
