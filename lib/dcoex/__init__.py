"""dcoex: bootstrap differential co-expression, memory-safe on SGE and SLURM.

Importing the package sets three process defaults (a value already in the environment wins),
before numpy and numba read them (a stage's ``python -m dcoex.stages...`` imports this first):

- ``NUMPY_MADVISE_HUGEPAGE=0``: numpy asks for transparent huge pages on large arrays; on a
  node whose memory is fragmented (long uptimes) the kernel then compacts memory on the first
  touch of each array, which cost 02a 1.8–2.2 s of an 8 s gene at 8,763 × 938 and 02b ~1 ns
  per edge·replicate on its first tile (measured on the development VM: 4 × 32 MiB of
  ``np.full`` took 0.98 s with the advice, 0.06 s without);
- ``OMP_WAIT_POLICY=PASSIVE``: OpenMP workers (numba's parallel kernels run on them) sleep
  when a parallel region ends instead of spinning; spinning workers took up to 40 % of the
  CPU from the numpy sorts and BLAS calls between 02b's kernels;
- ``OPENBLAS_THREAD_TIMEOUT=4``: OpenBLAS's workers spin 2^4 cycles, not its default 2^28
  (~0.1 s), after each BLAS call before they sleep; spinning, one of them took a core from the
  numba kernel that follows each tile's products (02a at 8,763 × 938: the histogram kernel
  0.84 → 0.45 s, the stage 8.4 → 6.4 CPU s; docs/stage02a.md).
"""

import os

os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

__version__ = "0.1.0"
