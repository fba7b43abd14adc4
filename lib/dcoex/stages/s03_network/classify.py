"""Edge selection and qualitative classes of a differential network (docs/design.md §4.7)."""

from __future__ import annotations

import numpy as np

#: Class codes (int8) and labels; the index of a label is its code.
CLASS_LABELS: tuple[str, ...] = ("unchanged", "disappear", "new", "sign_change", "strengthen", "weaken")
UNCHANGED, DISAPPEAR, NEW, SIGN_CHANGE, STRENGTHEN, WEAKEN = range(6)


def presence(r: np.ndarray, sig: np.ndarray, tau: float) -> np.ndarray:
    """present = sig AND |r| >= tau (bool array)."""
    return np.asarray(sig, dtype=bool) & (np.abs(np.asarray(r, dtype=np.float64)) >= tau)


def classify(
    r_low: np.ndarray, r_high: np.ndarray, present_low: np.ndarray, present_high: np.ndarray
) -> np.ndarray:
    """Class code per edge (int8), from the presence masks and the two correlations.

    disappear: present_L only; new: present_H only; both present: sign_change if the
    signs differ, else strengthen (|r_H| > |r_L|) or weaken (|r_H| < |r_L|); everything
    else (neither present, or equal magnitudes) is unchanged.
    """
    r_low = np.asarray(r_low, dtype=np.float64)
    r_high = np.asarray(r_high, dtype=np.float64)
    codes = np.zeros(r_low.shape, dtype=np.int8)
    codes[present_low & ~present_high] = DISAPPEAR
    codes[~present_low & present_high] = NEW
    both = present_low & present_high
    sign_differs = np.sign(r_low) != np.sign(r_high)
    abs_low, abs_high = np.abs(r_low), np.abs(r_high)
    codes[both & sign_differs] = SIGN_CHANGE
    codes[both & ~sign_differs & (abs_high > abs_low)] = STRENGTHEN
    codes[both & ~sign_differs & (abs_high < abs_low)] = WEAKEN
    return codes


def select_edges(
    delta: np.ndarray,
    ci_low: np.ndarray,
    ci_high: np.ndarray,
    min_effect: float,
    ci_filter: bool,
) -> np.ndarray:
    """Mask of the edges kept in E: |delta| >= min_effect and (if ci_filter) CI excludes 0."""
    delta = np.asarray(delta, dtype=np.float64)
    keep = np.abs(delta) >= min_effect
    if ci_filter:
        keep &= (np.asarray(ci_low) > 0) | (np.asarray(ci_high) < 0)
    return keep


def class_counts(codes: np.ndarray) -> dict[str, int]:
    """{"n_unchanged": .., "n_disappear": .., ...} over ``codes``."""
    counts = np.bincount(np.asarray(codes, dtype=np.int64), minlength=len(CLASS_LABELS))
    return {f"n_{label}": int(counts[code]) for code, label in enumerate(CLASS_LABELS)}
