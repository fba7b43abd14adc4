"""Stage 02a (base correlations of one reference gene) peak-RSS estimate, in bytes.

Memory model (N genes, S samples, k_L/k_H group sizes, T tile rows, m = N(N−1)/2,
c = candidate fraction):

- ``python``: interpreter + numpy/scipy.stats/h5py/click imports (measured);
- ``expr``: the whole N × S float32 matrix, loaded once per task;
- ``ranks``: the integer ranks of both groups (float32), N·(k_L + k_H)·4 (the float64
  ranking transient, ~45 B per cell, is freed before the tiles start);
- ``tile``: the reused tile buffers of T × N cells — two float32 r blocks, |r| and its
  mask: 13 B per cell, 16 as measured; +8 for the float64 products of groups with
  k(k−1)² >= 2**24 — plus the differential filter's slice temporaries
  (FILTER_CELLS cells: two float32 buffers, and ~70 B per passing cell for its indices and
  float64 Fisher values);
- ``candidates``: BH candidates of the three families, |r_L| and |r_H| float32 and |Z|
  float64, plus the concatenation copy of the differential family: 24 B per candidate,
  30 as measured (allocator slack of the per-tile lists); and, when there are at most
  DIFF_DETAIL_CAP differential candidates, their pair index and r values (24 B each);
- ``bh``: q-values of the significant prefixes (p, scaled, suffix minimum; float64):
  32 B per significant test, ~``background``·m;
- ``edges``: the stored sig_differential edges, ~120 B each while collected.

c = min(1, alpha + background): every test with p <= alpha plus the truly correlated
pairs (``background``, 0.02 by default; raise it for data with broad co-expression).
``exact_q`` makes every test a candidate (c = 1).
"""

from __future__ import annotations

from memfit.estimate import MemoryEstimate
from memfit.units import MiB

#: Resident bytes of the stage before data: interpreter, numpy, scipy.special/stats, h5py,
#: click, psutil, threadpoolctl (measured 113 MiB on CPython 3.11) + recorder/HDF5 state.
STAGE_BASELINE_BYTES = 116 * MiB
TILE_BYTES_PER_CELL = 16
#: Bins of each family's histogram (science.py); 8 bytes each.
N_BINS = 1 << 16
#: Statistics collected at once per family in a collection pass (bounded groups of bins).
WINDOW_ITEMS = 1 << 21
#: Edges per chunk handed to the sink (the HDF5 writer).
CHUNK_EDGES = 1 << 16
#: Tile cells of one emission slice (its buffers hold 24 bytes per cell).
EMIT_CELLS = 1 << 16
#: Cells of one differential-filter slice (dcoex.stages.s02a_base_correlations.science uses this); its bytes per
#: cell are FILTER_BYTES_FIXED + FILTER_BYTES_SELECTED × (fraction of cells passing).
FILTER_CELLS = 1 << 20
FILTER_BYTES_FIXED = 8
FILTER_BYTES_SELECTED = 70
#: Differential candidates kept with their pair and r values in the first pass.
DIFF_DETAIL_CAP = 4_000_000
CANDIDATE_BYTES = 30
DETAIL_BYTES = 24
EDGE_BYTES = 120
BH_BYTES_PER_SIG = 32


def estimate(
    n_genes: int,
    n_samples: int,
    *,
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
    n_cand = int(m * frac)
    n_edges = int(m * 0.002) if n_edges is None else int(n_edges)
    k_max = max(int(k_low), int(k_high))
    wide = 8 if k_max * (k_max - 1) ** 2 >= 2**24 else 0  # float64 rank products (dcoex.ranks)
    components = {
        "python": STAGE_BASELINE_BYTES,
        "expr": n * int(n_samples) * 4,
        "ranks": n * (int(k_low) + int(k_high)) * 4,
        "tile": t * n * (TILE_BYTES_PER_CELL + wide)
        + int(min(FILTER_CELLS, t * n) * (FILTER_BYTES_FIXED + FILTER_BYTES_SELECTED * frac)),
        "candidates": n_cand * CANDIDATE_BYTES + (n_cand * DETAIL_BYTES if n_cand <= DIFF_DETAIL_CAP else 0),
        "bh": int(m * (1.0 if exact_q else float(background))) * BH_BYTES_PER_SIG,
        "edges": n_edges * EDGE_BYTES,
    }
    params = {
        "n_genes": n, "n_samples": int(n_samples), "k_low": int(k_low), "k_high": int(k_high),
        "fdr_alpha": float(fdr_alpha), "tile_rows": t, "exact_q": bool(exact_q),
        "background": float(background), "n_edges": n_edges,
    }
    return MemoryEstimate("02a", components, params)
