"""Extreme groups and bootstrap indices of each reference gene (docs/design.md §4.1).

For reference gene g with expression row x (S samples):

- group sizes: k = floor(S·frac), computed as ``int(S * frac + FLOOR_EPSILON)`` so that a
  product that should be an integer but lands a hair below it in floating point
  (e.g. 0.3 × 10 = 2.9999999999999996) is not floored one too low;
  k_r = ``int(k * bootstrap_frac + FLOOR_EPSILON)``;
- order = stable argsort of x ascending (ties keep ascending sample index);
  LOW = order[:k_L], HIGH = order[S-k_H:], each stored sorted ascending by sample index;
- RNG: ``Generator(PCG64(SeedSequence(seed, spawn_key=(g,))))``; draw LOW positions
  ``integers(0, k_L, size=(B, k_rL), dtype=int32)``, then HIGH positions the same way from
  the same generator; indices = group[positions].

Every gene has its own stream, so the result does not depend on batch size, task split,
thread count or machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpc.errors import InputError

#: Added before flooring S·frac and k·bootstrap_frac (see the module docstring).
FLOOR_EPSILON = 1e-9
#: Smallest group or resample size allowed.
MIN_GROUP = 4

RNG_SCHEME = (
    "per-gene numpy.random.Generator(PCG64(SeedSequence(seed, spawn_key=(g,)))); "
    "low=integers(0,k_L,size=(B,k_rL),dtype=int32) then high=integers(0,k_H,size=(B,k_rH),dtype=int32) "
    "from the same generator; indices=group[positions]; groups from a stable ascending argsort "
    "(ties by sample index), LOW first k_L, HIGH last k_H, stored ascending"
)


def floor_fraction(n: int, frac: float) -> int:
    """floor(n · frac) with the FLOOR_EPSILON guard."""
    return int(n * frac + FLOOR_EPSILON)


@dataclass(frozen=True)
class GroupSizes:
    """Sizes of the LOW/HIGH groups (k) and of their bootstrap resamples (k_r)."""

    k_low: int
    k_high: int
    kr_low: int
    kr_high: int


def check_fractions(low_frac: float, high_frac: float, bootstrap_frac: float, n_bootstrap: int) -> None:
    """InputError unless 0 < fractions <= 0.5, low+high <= 1, 0 < bootstrap_frac <= 1, B >= 1."""
    for name, value in (("--low-frac", low_frac), ("--high-frac", high_frac)):
        if not 0 < value <= 0.5:
            raise InputError(f"{name} {value}: must be in (0, 0.5]")
    if low_frac + high_frac > 1:
        raise InputError(f"--low-frac {low_frac} + --high-frac {high_frac} > 1: groups would overlap")
    if not 0 < bootstrap_frac <= 1:
        raise InputError(f"--bootstrap-frac {bootstrap_frac}: must be in (0, 1]")
    if n_bootstrap < 1:
        raise InputError(f"--n-bootstrap {n_bootstrap}: must be >= 1")


def group_sizes(
    n_samples: int, low_frac: float, high_frac: float, bootstrap_frac: float, source: str = "input"
) -> GroupSizes:
    """k_L, k_H, k_rL, k_rH for S samples; InputError if any is below MIN_GROUP or groups overlap."""
    k_low, k_high = floor_fraction(n_samples, low_frac), floor_fraction(n_samples, high_frac)
    sizes = GroupSizes(
        k_low, k_high, floor_fraction(k_low, bootstrap_frac), floor_fraction(k_high, bootstrap_frac)
    )
    for name, value in (("k_low", sizes.k_low), ("k_high", sizes.k_high),
                        ("k_r_low", sizes.kr_low), ("k_r_high", sizes.kr_high)):
        if value < MIN_GROUP:
            raise InputError(
                f"{source}: {n_samples} samples give {name} = {value} (low_frac {low_frac}, "
                f"high_frac {high_frac}, bootstrap_frac {bootstrap_frac}); at least {MIN_GROUP} needed"
            )
    if k_low + k_high > n_samples:
        raise InputError(f"{source}: groups of {k_low} + {k_high} overlap in {n_samples} samples")
    return sizes


def extreme_groups(rows: np.ndarray, k_low: int, k_high: int) -> tuple[np.ndarray, np.ndarray]:
    """LOW and HIGH sample indices of each row: int32 (b, k_L) and (b, k_H), ascending."""
    rows = np.atleast_2d(rows)
    order = np.argsort(rows, axis=1, kind="stable")
    n_samples = rows.shape[1]
    low = np.sort(order[:, :k_low], axis=1).astype(np.int32)
    high = np.sort(order[:, n_samples - k_high :], axis=1).astype(np.int32)
    return low, high


def gene_generator(seed: int, gene_index: int) -> np.random.Generator:
    """The PCG64 generator of reference gene ``gene_index`` (0-based)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(int(gene_index),))))


def bootstrap_indices(
    low: np.ndarray,
    high: np.ndarray,
    *,
    seed: int,
    gene_index: int,
    n_bootstrap: int,
    kr_low: int,
    kr_high: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap sample indices of one gene: int32 (B, k_rL) and (B, k_rH)."""
    rng = gene_generator(seed, gene_index)
    low_pos = rng.integers(0, low.shape[0], size=(n_bootstrap, kr_low), dtype=np.int32)
    high_pos = rng.integers(0, high.shape[0], size=(n_bootstrap, kr_high), dtype=np.int32)
    return np.take(low, low_pos), np.take(high, high_pos)
