"""Stage 08 science: empirical permutation p-values (+1 correction) and BH across reference genes.

For metric m with sidedness "upper" (T = x), "abs" (T = |x|) or "abs_log" (T = |ln x|),
observed value x_g and null values x_g^(1..P) (stage 07):

    p_g = (1 + #{b : T(x_g^(b)) >= T(x_g)}) / (1 + P_g),

P_g = the permutations whose null value is defined (a ratio over an empty L1 is undefined,
NaN): the test of a ratio is conditional on it being defined. Ties count as extreme, so p is
never below 1/(1 + P). p is NaN where x_g is undefined. q = Benjamini–Hochberg over the
reference genes with a p-value, one family per metric (docs/stage08.md).
"""

from __future__ import annotations

import numpy as np


def statistic(values: np.ndarray, side: str) -> np.ndarray:
    """T of the sidedness ``side`` (float64; NaN stays NaN)."""
    x = np.asarray(values, dtype=np.float64)
    if side == "upper":
        return x
    if side == "abs":
        return np.abs(x)
    if side == "abs_log":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.abs(np.log(x))
    raise ValueError(f"unknown sidedness {side!r}")


def empirical_pvalues(observed: np.ndarray, null: np.ndarray, side: str) -> tuple[np.ndarray, np.ndarray]:
    """(p, P_g) of every column: ``observed`` (G,), ``null`` (P, G)."""
    t_obs = statistic(observed, side)
    t_null = statistic(null, side)
    defined = ~np.isnan(t_null)
    n_defined = defined.sum(axis=0)
    with np.errstate(invalid="ignore"):
        extreme = (defined & (t_null >= t_obs[None, :])).sum(axis=0)
    p = (1.0 + extreme) / (1.0 + n_defined)
    p[np.isnan(t_obs)] = np.nan
    return p, n_defined.astype(np.int64)


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg q-values over the finite entries of ``p`` (NaN elsewhere)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    m = finite.size
    if m == 0:
        return q
    order = finite[np.argsort(p[finite], kind="stable")]
    scaled = p[order] * m / np.arange(1, m + 1)
    q[order] = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    return q


def null_summary(null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population SD (ddof 0) of each column's defined null values (NaN if none)."""
    defined = ~np.isnan(null)
    count = defined.sum(axis=0)
    total = np.where(defined, null, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        var = np.where(defined, (null - mean[None, :]) ** 2, 0.0).sum(axis=0) / np.maximum(count, 1)
    return mean, np.where(count > 0, np.sqrt(var), np.nan)


def format_value(x: float) -> str:
    """TSV text of a value: whole numbers as integers, others with 6 significant digits, ``nan``."""
    if np.isnan(x):
        return "nan"
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.6g}"
