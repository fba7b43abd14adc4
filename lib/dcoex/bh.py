"""Benjamini–Hochberg over one test family, from the candidates that can pass only.

A family has ``m`` tests whose p-values are a non-increasing function ``p_of`` of a
statistic s (|r| or |Z|). The candidates are every test with s >= some cut whose p is
>= alpha at the cut, so that every test with p <= alpha is a candidate. Sorted by s
descending, the candidates are ranks 1..n of the whole family (every non-candidate has a
larger p), and for rank i

    q_i = min(1, min_{j >= i} p_(j)·m/j),

and q_i < alpha  <=>  i <= i* = max{j : p_(j)·m/j < alpha}: non-candidates have
p_(j)·m/j >= p_(j) > alpha, so they never decide significance. Hence significance is exact
from the candidates alone, and so is every q below alpha (the minimum over j in [i, i*]).
A q at or above alpha would need the whole family; it is reported as NaN unless the
candidates are the whole family (``complete``), in which case every q is exact.

p-values are evaluated lazily by blocks of ranks, so a family whose candidates mostly fail
costs a few evaluations per block, not one per candidate.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

BLOCK = 4096


class BHFamily:
    """One BH family: candidate statistics (any order; sorted in place), family size m, p = p_of(s)."""

    def __init__(
        self,
        stats: np.ndarray,
        m: int,
        p_of: Callable[[np.ndarray], np.ndarray],
        alpha: float,
        complete: bool = False,
    ) -> None:
        self.ascending = np.asarray(stats)
        self.ascending.sort()
        self.n = int(self.ascending.size)
        if self.n > m:
            raise ValueError(f"{self.n} candidates for a family of {m} tests")
        self.m = int(m)
        self.p_of = p_of
        self.alpha = float(alpha)
        self.complete = bool(complete) or self.n == self.m
        self._cache: dict[int, np.ndarray] = {}
        self.n_sig = self._find_cut()
        self.cut = float(self._stat_at(self.n_sig)) if self.n_sig else np.inf

    def _stat_at(self, rank: int) -> float:
        """Statistic of 1-based descending rank."""
        return self.ascending[self.n - rank]

    def _p_block(self, b: int) -> np.ndarray:
        """p of ranks b·BLOCK+1 .. min((b+1)·BLOCK, n)."""
        if b not in self._cache:
            lo, hi = b * BLOCK, min((b + 1) * BLOCK, self.n)
            stats_desc = self.ascending[self.n - lo - 1 : self.n - hi - 1 if self.n - hi - 1 >= 0 else None : -1]
            self._cache[b] = np.asarray(self.p_of(stats_desc), dtype=np.float64)
        return self._cache[b]

    def _find_cut(self) -> int:
        """i* = max{i : p_(i)·m/i < alpha}, 0 if none; scans blocks from the end."""
        if self.n == 0 or self.m == 0:
            return 0
        for b in range((self.n - 1) // BLOCK, -1, -1):
            lo, hi = b * BLOCK + 1, min((b + 1) * BLOCK, self.n)
            p_first = float(self.p_of(np.asarray([self._stat_at(lo)]))[0])
            if p_first * self.m / hi >= self.alpha:
                continue
            p = self._p_block(b)
            ranks = np.arange(lo, hi + 1, dtype=np.float64)
            hits = np.nonzero(p * self.m / ranks < self.alpha)[0]
            if hits.size:
                return int(lo + hits[-1])
        return 0

    def is_significant(self, stats: np.ndarray) -> np.ndarray:
        """q < alpha for tests of the family with these statistics."""
        return np.asarray(stats) >= self.cut

    def ranks(self, stats: np.ndarray) -> np.ndarray:
        """1-based descending rank of each statistic (the last of its ties); > n if not a candidate."""
        return self.n - np.searchsorted(self.ascending, np.asarray(stats), side="left")

    def q_values(self, stats: np.ndarray) -> np.ndarray:
        """BH q of tests with these statistics (float64): exact below alpha, else NaN unless complete."""
        stats = np.asarray(stats)
        ranks = self.ranks(stats)
        q = np.full(stats.shape, np.nan)
        top = self.n if self.complete else self.n_sig
        inside = (ranks >= 1) & (ranks <= top)
        if not inside.any():
            return q
        first = int(ranks[inside].min())
        b_lo, b_hi = (first - 1) // BLOCK, (top - 1) // BLOCK
        p = np.concatenate([self._p_block(b) for b in range(b_lo, b_hi + 1)])
        self._cache.clear()
        start = b_lo * BLOCK + 1
        p = p[: top - start + 1]
        scaled = p * self.m / np.arange(start, top + 1, dtype=np.float64)
        suffix_min = np.minimum.accumulate(scaled[::-1])[::-1]
        np.minimum(suffix_min, 1.0, out=suffix_min)
        q[inside] = suffix_min[ranks[inside] - start]
        return q

    def release(self) -> None:
        """Drop cached p blocks (bytes)."""
        self._cache.clear()
