"""Accuracy, macro-F1, per-class F1 and the confusion matrix of predictions vs query labels."""

from __future__ import annotations

import numpy as np


def evaluate(truth: np.ndarray, predicted: np.ndarray) -> dict:
    """Metrics over every query cell ("unknown" predictions count as wrong).

    Classes are the union of true and predicted labels, sorted; the confusion matrix has
    true labels as rows and predicted labels as columns.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    truth = np.asarray(truth, dtype=str)
    predicted = np.asarray(predicted, dtype=str)
    classes = sorted(set(truth) | set(predicted))
    true_classes = sorted(set(truth))
    per_class = f1_score(truth, predicted, labels=true_classes, average=None, zero_division=0)
    return {
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
