"""Stage 02a (base correlations of one reference gene) peak-RSS estimate, in bytes.

Memory model (N genes, S samples, k_L/k_H group sizes, T tile rows, m = N(N−1)/2):

- ``python``: interpreter + numpy/scipy/h5py/click imports (measured);
- ``expr``: the whole N × S float32 matrix, loaded once per task;
- ``ranks``: per group the unit-norm float32 ranks (4 B per cell, kept) plus the
  transient of average ranking one group (argsort order, sorted copy, tie bounds and
  float64 ranks: ~45 B per cell);
- ``tile``: one tile of T rows × N columns: two float32 r blocks, the float32 Fisher
  pre-filter, masks and comparison temporaries (~30 B per cell);
- ``candidates``: BH candidates (|r_L|, |r_H| as float32, |Z| as float64) for the
  fraction ``c`` of tests whose p can be <= alpha, plus the concatenation copy of the
  largest family: m·c·(4 + 4 + 8 + 8);
- ``bh``: q-values of the significant prefix (p, scaled, suffix minimum; float64) for a
  fraction ``c_sig`` of m: m·c_sig·32;
- ``edges``: the stored sig_differential edges, ~120 B each while collected.

``c`` defaults to min(1, alpha + background) with ``background`` the fraction of truly
correlated pairs (tune per data set; 0.02 for mostly independent genes); ``exact_q``
makes every test a candidate.
"""

from __future__ import annotations

from memfit.estimate import MemoryEstimate
from memfit.units import MiB

#: Resident bytes of the stage before data: interpreter, numpy, scipy.special/stats,
#: h5py, click, psutil, threadpoolctl (measured: ~105 MiB on CPython 3.11).
STAGE_BASELINE_BYTES = 105 * MiB
RANK_TRANSIENT_BYTES_PER_CELL = 45
TILE_BYTES_PER_CELL = 30
EDGE_BYTES = 120
BH_BYTES_PER_SIG = 32


def estimate(
    n_genes: int,
    n_samples: int,
    k_low: int,
    k_high: int,
    fdr_alpha: float = 0.05,
    tile_rows: int = 512,
    exact_q: bool = False,
    background: float = 0.02,
    n_edges: int | None = None,
) -> MemoryEstimate:
    """Predicted peak RSS (bytes) of stage 02a for one reference gene at ``tile_rows``."""
    n = int(n_genes)
    m = n * (n - 1) // 2
    t = max(1, min(int(tile_rows), max(n - 1, 1)))
    frac = 1.0 if exact_q else min(1.0, float(fdr_alpha) + float(background))
    frac_sig = 1.0 if exact_q else min(1.0, float(fdr_alpha) * 0.5 + float(background))
    n_edges = int(m * 0.002) if n_edges is None else int(n_edges)
    components = {
        "python": STAGE_BASELINE_BYTES,
        "expr": n * int(n_samples) * 4,
        "ranks": n * (k_low + k_high) * 4 + n * max(k_low, k_high) * RANK_TRANSIENT_BYTES_PER_CELL,
        "tile": t * n * TILE_BYTES_PER_CELL,
        "candidates": int(m * frac * 24),
        "bh": int(m * frac_sig * BH_BYTES_PER_SIG),
        "edges": n_edges * EDGE_BYTES,
    }
    params = {
        "n_genes": n, "n_samples": int(n_samples), "k_low": int(k_low), "k_high": int(k_high),
        "fdr_alpha": float(fdr_alpha), "tile_rows": t, "exact_q": bool(exact_q),
        "background": float(background), "n_edges": n_edges,
    }
    return MemoryEstimate("02a", components, params)
