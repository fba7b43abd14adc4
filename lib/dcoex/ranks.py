"""Row-wise ranks with ties, and the standardised ranks whose dot products are Spearman r."""

from __future__ import annotations

import numpy as np


def tie_bounds(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based first and last position of each element's tie run in row-sorted values."""
    n_rows, k = sorted_values.shape
    pos = np.arange(k)
    starts = np.ones((n_rows, k), dtype=bool)
    starts[:, 1:] = sorted_values[:, 1:] != sorted_values[:, :-1]
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)
    ends = np.ones((n_rows, k), dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    last = np.minimum.accumulate(np.where(ends, pos, k)[:, ::-1], axis=1)[:, ::-1]
    return first, last


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (1..k, ties share the mean of their positions) of each row, float64."""
    x = np.atleast_2d(x)
    order = np.argsort(x, axis=1)  # tie order is irrelevant: ties share their mean rank
    first, last = tie_bounds(np.take_along_axis(x, order, axis=1))
    ranks = np.empty(x.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    return ranks


def unit_ranks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centred average ranks of each row scaled to unit Euclidean norm (float32), and a mask
    of constant rows (their row is 0). Dot products of two rows are Spearman correlations.
    """
    ranks = average_ranks(x)
    ranks -= (ranks.shape[1] + 1) / 2.0
    norm = np.sqrt(np.einsum("ij,ij->i", ranks, ranks))
    constant = norm == 0.0
    norm[constant] = 1.0
    ranks /= norm[:, None]
    return ranks.astype(np.float32), constant
