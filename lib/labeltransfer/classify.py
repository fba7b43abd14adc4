"""XGBoost (hist) on the reference latent; optional stratified K-fold grid search."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

#: Parameter grids of --xgb-tuning (every combination is tried).
GRIDS = {
    "none": {"max_depth": [6], "learning_rate": [0.3], "n_estimators": [100]},
    "quick": {"max_depth": [4, 6], "learning_rate": [0.1, 0.3], "n_estimators": [100]},
    "full": {
        "max_depth": [3, 4, 6, 8],
        "learning_rate": [0.05, 0.1, 0.3],
        "n_estimators": [100, 300],
        "subsample": [0.8, 1.0],
    },
}
FOLDS = {"none": 0, "quick": 3, "full": 5}
CLASS_WEIGHTS = ("balanced", "none")


@dataclass
class Classifier:
    """A fitted XGBoost model with its class names (column order of probabilities)."""

    model: object
    classes: list[str]
    best_params: dict
    cv_scores: list[dict]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_proba(x), dtype=np.float64)


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
    tuning: str = "none",
    device: str = "cpu",
    seed: int = 0,
    n_jobs: int = 2,
    class_weight: str = "balanced",
) -> Classifier:
    """Fit on ``latent`` (cells × dims) → ``labels``; tune by stratified K-fold macro-F1 if asked.

    ``class_weight="balanced"`` weights each cell by n / (n_classes × cells of its class), so rare
    types weigh as much as common ones (macro-F1); ``"none"`` gives every cell weight 1.
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
            for params in combos:
                fold_scores = []
                for train, test in splits:
                    model = _model(params, device, seed, n_jobs)
                    model.fit(latent[train], y[train], sample_weight=_weights(y[train], class_weight))
                    fold_scores.append(f1_score(y[test], model.predict(latent[test]), average="macro"))
                scores.append({"params": params, "macro_f1": float(np.mean(fold_scores))})
            best = max(scores, key=lambda s: s["macro_f1"])["params"]
    model = _model(best, device, seed, n_jobs)
    model.fit(latent, y, sample_weight=weight)
    return Classifier(model, [str(c) for c in classes], dict(best), scores)


def predict(
    classifier: Classifier, latent: np.ndarray, unknown_threshold: float, unknown_label: str = "unknown"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(labels, max probability, is_unknown, probabilities): below the threshold -> ``unknown``."""
    proba = classifier.predict_proba(latent)
    best = proba.argmax(axis=1)
    max_prob = proba[np.arange(len(best)), best]
    is_unknown = max_prob < unknown_threshold
    labels = np.asarray(classifier.classes, dtype=object)[best]
    labels = np.where(is_unknown, unknown_label, labels)
    return labels, max_prob, is_unknown, proba
