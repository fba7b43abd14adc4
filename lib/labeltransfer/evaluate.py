"""Accuracy, macro-F1, per-class F1 and the confusion matrix of predictions vs query labels."""

from __future__ import annotations

import numpy as np


def evaluate(truth: np.ndarray, predicted: np.ndarray, known: list[str] | None = None) -> dict:
    """Metrics over every query cell ("unknown" predictions count as wrong).

    Classes are the union of true and predicted labels, sorted; the confusion matrix has
    true labels as rows and predicted labels as columns. With ``known`` (the reference types):
    ``known_macro_f1`` = mean F1 over the true classes that are reference types; for the query
    cells of other (novel) types, ``unknown_recall`` = share predicted "unknown"; for the
    cells of reference types, ``known_called_unknown`` = share predicted "unknown".
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    truth = np.asarray(truth, dtype=str)
    predicted = np.asarray(predicted, dtype=str)
    classes = sorted(set(truth) | set(predicted))
    true_classes = sorted(set(truth))
    per_class = f1_score(truth, predicted, labels=true_classes, average=None, zero_division=0)
    extra = {}
    if known is not None:
        known_set = set(map(str, known))
        known_true = [c for c in true_classes if c in known_set]
        is_novel = ~np.isin(truth, list(known_set))
        said_unknown = predicted == "unknown"
        extra = {
            "known_macro_f1": float(np.mean([f for c, f in zip(true_classes, per_class) if c in known_set]))
            if known_true else 0.0,
            "novel_types": sorted(set(truth[is_novel].tolist())),
            "n_novel": int(is_novel.sum()),
            "unknown_recall": float(said_unknown[is_novel].mean()) if is_novel.any() else None,
            "unknown_precision": float(is_novel[said_unknown].mean()) if said_unknown.any() else None,
            "known_called_unknown": float(said_unknown[~is_novel].mean()) if (~is_novel).any() else None,
        }
    return {
        **extra,
        "n_cells": int(len(truth)),
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(np.mean(per_class)) if len(per_class) else 0.0,
        "per_class_f1": {c: float(f) for c, f in zip(true_classes, per_class)},
        "n_unknown": int(np.sum(predicted == "unknown")),
        "confusion_matrix": {
            "labels": classes,
            "matrix": confusion_matrix(truth, predicted, labels=classes).tolist(),
        },
    }
