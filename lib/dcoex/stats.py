"""Correlation tests of docs/design.md §4.3–§4.4 and the flat pair index of the upper triangle.

- per-group test: t = r·sqrt(df/(1−r²)), df = k−2, two-sided Student-t p from the survival
  function (r clipped to [−1, 1]; 1−r² floored at float32 eps as in the established code);
- differential test: Z = (atanh r_H − atanh r_L)/sqrt(1/(k_L−3) + 1/(k_H−3)), r clipped to
  ±0.9999, two-sided p = 2·norm.sf(|Z|) (no underflow to 0 before ~1e-308).
All p-value functions take float32 or float64 arrays and compute in float64. Only
scipy.special is imported (scipy.stats costs 1-3 s of import per process).
"""

from __future__ import annotations

import numpy as np
from scipy import special

FISHER_CLIP = 0.9999
_EPS32 = float(np.finfo(np.float32).eps)


def t_statistic(r: np.ndarray, df: int) -> np.ndarray:
    """|t| of a correlation r with df degrees of freedom (float64)."""
    r64 = np.clip(np.abs(np.asarray(r, dtype=np.float64)), 0.0, 1.0)
    return r64 * np.sqrt(df / np.maximum(1.0 - r64 * r64, _EPS32))


def t_pvalue(r: np.ndarray, df: int) -> np.ndarray:
    """Two-sided p of H0: rho = 0 for correlation(s) r (float64)."""
    return 2.0 * special.stdtr(df, -t_statistic(r, df))


def fisher_z(r_low: np.ndarray, r_high: np.ndarray, k_low: int, k_high: int) -> np.ndarray:
    """Z of the difference r_high − r_low (float64); positive when r_high > r_low."""
    zl = np.arctanh(np.clip(np.asarray(r_low, dtype=np.float64), -FISHER_CLIP, FISHER_CLIP))
    zh = np.arctanh(np.clip(np.asarray(r_high, dtype=np.float64), -FISHER_CLIP, FISHER_CLIP))
    return (zh - zl) / np.sqrt(1.0 / (k_low - 3) + 1.0 / (k_high - 3))


def z_pvalue(z: np.ndarray) -> np.ndarray:
    """Two-sided normal p of Z from the survival function (float64)."""
    return 2.0 * special.ndtr(-np.abs(np.asarray(z, dtype=np.float64)))


def r_critical(alpha: float, df: int) -> float:
    """|r| at which the t-test p equals alpha (0 if alpha >= 1)."""
    if alpha >= 1.0:
        return 0.0
    t = float(special.stdtrit(df, 1.0 - alpha / 2.0))
    return t / np.sqrt(df + t * t)


def z_critical(alpha: float) -> float:
    """|Z| at which the normal two-sided p equals alpha (0 if alpha >= 1)."""
    if alpha >= 1.0:
        return 0.0
    return float(-special.ndtri(alpha / 2.0))


def n_pairs(n: int) -> int:
    """Number of unordered pairs of n items."""
    return n * (n - 1) // 2


def flat_index(i: np.ndarray, j: np.ndarray, n_genes: int) -> np.ndarray:
    """Row-major upper-triangle index of pairs i < j: i(2N−i−1)/2 + (j−i−1), int64."""
    i64 = np.asarray(i, dtype=np.int64)
    j64 = np.asarray(j, dtype=np.int64)
    return i64 * (2 * n_genes - i64 - 1) // 2 + (j64 - i64 - 1)


def pair_from_flat(k: np.ndarray, n_genes: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of flat_index in exact int64 arithmetic: (i, j) as int64 arrays. Row i starts at
    flat index i·(2N − i − 1)/2; ascending ``k`` (as the edge files store them) is cut at the
    row starts in one pass, any other order looks each up (binary search)."""
    k64 = np.asarray(k, dtype=np.int64)
    shape = k64.shape
    k64 = k64.ravel()
    n = int(n_genes)
    rows = np.arange(max(n - 1, 1), dtype=np.int64)
    starts = rows * (2 * n - rows - 1) // 2
    if k64.size and bool(np.all(k64[1:] >= k64[:-1])):
        bounds = np.searchsorted(k64, starts, side="left")
        i = np.repeat(rows, np.diff(np.append(bounds, k64.size)))
    else:
        i = np.searchsorted(starts, k64, side="right") - 1
    j = k64 - starts[i] + i + 1
    return i.reshape(shape), j.reshape(shape)


def bootstrap_pvalue(n_minority: np.ndarray, n_finite: np.ndarray) -> np.ndarray:
    """Two-sided bootstrap p of Δ (float64): max(2·m/n, 1/n) with m = min(#{Δ^b > 0}, #{Δ^b < 0})
    over the n finite replicates; NaN where n < 2 (docs/design.md §4.6)."""
    n = np.asarray(n_finite, dtype=np.int64)
    n_safe = np.maximum(n, 1)
    p = np.maximum(2.0 * np.asarray(n_minority, dtype=np.int64) / n_safe, 1.0 / n_safe)
    return np.where(n < 2, np.nan, p)


def bootstrap_bias(delta_mean: np.ndarray, delta_base: np.ndarray) -> np.ndarray:
    """bias = mean of the bootstrap Δ's (as stored, float32) − Δ_base, in float64, as float32."""
    return (np.asarray(delta_mean, dtype=np.float32).astype(np.float64)
            - np.asarray(delta_base, dtype=np.float32).astype(np.float64)).astype(np.float32)


def w_statistic(r_low: np.ndarray, r_high: np.ndarray) -> np.ndarray:
    """The differential statistic of stage 02a, w = |b − a| / (1 − a·b) with a, b the r's
    clipped to ±FISHER_CLIP (float64): the same IEEE operations in the same order as its numba
    kernels (``kernels._w_stat``), so bit for bit the w the stage computed (tested); readers
    derive q_diff from it without loading numba."""
    a = np.clip(np.asarray(r_low, dtype=np.float32).astype(np.float64), -FISHER_CLIP, FISHER_CLIP)
    b = np.clip(np.asarray(r_high, dtype=np.float32).astype(np.float64), -FISHER_CLIP, FISHER_CLIP)
    return np.abs(b - a) / (1.0 - a * b)
