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


def exact_dtype(n_terms: int, max_abs: int) -> type:
    """float32 if every partial sum of n_terms products of integers |x| <= max_abs is exact
    in float32 (< 2**24), else float64 (exact below 2**53)."""
    return np.float32 if n_terms * max_abs * max_abs < 2**24 else np.float64


#: Rows ranked at once by IntegerRanks (its float64 temporaries are ~60 bytes per cell of a block).
RANK_BLOCK_ROWS = 1024


class IntegerRanks:
    """Doubled centred average ranks u = 2·rank − (k + 1) of each row: integers, so their dot
    products are exact in the chosen float type whatever the summation order (BLAS blocking,
    threads, tile shape); ``scale`` = 1/||u|| (0 for constant rows). The Spearman r of rows
    i, j is (u_i·u_j)·scale_i·scale_j."""

    def __init__(self, x: np.ndarray) -> None:
        x = np.atleast_2d(x)
        n, k = x.shape
        self.dtype = exact_dtype(k, k - 1)
        self.u = np.empty((n, k), self.dtype)
        norm = np.empty(n)
        for a in range(0, n, RANK_BLOCK_ROWS):  # rows are independent: bounded float64 temporaries
            ranks = average_ranks(x[a : a + RANK_BLOCK_ROWS])
            ranks *= 2.0
            ranks -= k + 1
            norm[a : a + RANK_BLOCK_ROWS] = np.sqrt(np.einsum("ij,ij->i", ranks, ranks))
            self.u[a : a + RANK_BLOCK_ROWS] = ranks
        self.constant = norm == 0.0
        self.scale = np.where(self.constant, 0.0, 1.0 / np.where(self.constant, 1.0, norm)).astype(np.float32)
