"""Time the exact rank GEMMs on numpy vs torch (CUDA when present, else torch's CPU build).

    python bench/gpu_backend.py [--out FILE] [--replicates 1000] [--shapes 12625x25,8763x94]

Cases (synthetic integer ranks with ties; equality of every result is checked by SHA-256 of
the bytes each backend returns):

- ``02a``: one group's whole upper triangle of correlation tiles, U[a:b]·U[a:]ᵀ scaled to
  float32 r, tile rows 1,024 (02a's largest), for each N × k of ``--shapes``; results
  copied into one reused host buffer (pinned on CUDA), as the stage would read them;
- ``02b``: B resample-weighted replicates (U_b·diag(c_b))·U_bᵀ of a 460-gene dense core at the
  production group (k = 187, k_r = 149), every core pair gathered on the device, replicate
  ranks uploaded per block of 100 (they are made on the host), Δ-sized results (B × E) back.

Also recorded: host RSS added by torch and by the CUDA context (to check the backend's
TORCH_IMPORT_BYTES / CUDA_CONTEXT_HOST_BYTES), and the GPU's peak allocated bytes against
``products_device_bytes``. Writes JSON to ``--out`` (default ``$OUT/gpu_backend.json`` when
$OUT is set, else ``bench/results/gpu_backend.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))

from dcoex.backend import (  # noqa: E402 - after the path set-up
    DEVICE_WORKSPACE_BYTES,
    Backend,
    NumpyBackend,
    TorchBackend,
    products_device_bytes,
)
from dcoex.ranks import IntegerRanks, exact_dtype  # noqa: E402

TILE_ROWS = 1024
CORE_GENES, K_GROUP, K_RESAMPLE, REPLICATE_BLOCK = 460, 187, 149, 100


def rss_bytes() -> int:
    """Resident set size of this process now (bytes, /proc/self/status VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return -1


def ranks_with_ties(n: int, k: int, seed: int) -> IntegerRanks:
    """Integer ranks of n genes over k samples: values on 12 levels, so ties are common."""
    return IntegerRanks(np.random.default_rng(seed).integers(0, 12, size=(n, k)).astype(np.float32))


def sweep_02a(backend: Backend, ranks: IntegerRanks) -> tuple[float, str]:
    """Wall seconds and SHA-256 of every tile of the upper triangle (tile rows TILE_ROWS)."""
    n = ranks.u.shape[0]
    digest = hashlib.sha256()
    start = time.perf_counter()
    u = backend.put(ranks.u)
    buffer = backend.host_buffer(TILE_ROWS * n, np.float32)
    hash_s = 0.0
    for a in range(0, n - 1, TILE_ROWS):
        b = min(a + TILE_ROWS, n - 1)
        tile = buffer[: (b - a) * (n - a)].reshape(b - a, n - a)
        backend.correlations(u[a:b], u[a:], scale_left=ranks.scale[a:b], scale_right=ranks.scale[a:], out=tile)
        t0 = time.perf_counter()
        digest.update(tile.tobytes())
        hash_s += time.perf_counter() - t0
    backend.synchronize()
    return time.perf_counter() - start - hash_s, digest.hexdigest()


def replicate_inputs(n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """02b-shaped inputs: u (B, g, k) integer ranks per resample, counts (B, k), scale (B, g)."""
    rng = np.random.default_rng(seed)
    dtype = exact_dtype(K_RESAMPLE, K_RESAMPLE - 1)
    positions = rng.integers(0, K_GROUP, size=(n_boot, K_RESAMPLE))
    counts = np.zeros((n_boot, K_GROUP), dtype)
    for b in range(n_boot):
        np.add.at(counts[b], positions[b], 1)
    # ranks need not be a real resample's for timing and equality: any integers within the bound
    u = rng.integers(-(K_RESAMPLE - 1), K_RESAMPLE, size=(n_boot, CORE_GENES, K_GROUP)).astype(dtype)
    squares = np.einsum("bgk,bgk,bk->bg", u, u, counts, dtype=np.float64)
    return u, counts, (1.0 / np.sqrt(squares)).astype(np.float32)


def sweep_02b(backend: Backend, u: np.ndarray, counts: np.ndarray, scale: np.ndarray) -> tuple[float, str]:
    """Wall seconds and SHA-256 of r (B, E) of every core pair, replicate blocks of REPLICATE_BLOCK."""
    rows, cols = np.triu_indices(CORE_GENES, 1)
    n_boot = u.shape[0]
    out = backend.host_buffer((n_boot, rows.size), np.float32)
    start = time.perf_counter()
    for b0 in range(0, n_boot, REPLICATE_BLOCK):
        b1 = min(b0 + REPLICATE_BLOCK, n_boot)
        block = backend.put(u[b0:b1])  # made on the host per block in 02b: the upload counts
        backend.correlations(block, block, scale_left=scale[b0:b1], scale_right=scale[b0:b1],
                             weights=counts[b0:b1], pairs=(rows, cols), out=out[b0:b1])
    backend.synchronize()
    wall = time.perf_counter() - start
    return wall, hashlib.sha256(out.tobytes()).hexdigest()


def torch_backend() -> tuple[TorchBackend, dict]:
    """The torch backend (CUDA when torch sees one) and the host RSS torch and CUDA add."""
    before = rss_bytes()
    import torch

    after_import = rss_bytes()
    backend = TorchBackend("cuda" if torch.cuda.is_available() else "cpu")
    one = np.ones((4, 4), np.float32)
    backend.products(one, one)  # creates the CUDA context and cuBLAS handle
    facts = {"torch": torch.__version__, "backend": backend.name, "describe": backend.describe(),
             "torch_import_rss_bytes": after_import - before, "cuda_context_rss_bytes": rss_bytes() - after_import,
             "tf32": bool(torch.backends.cuda.matmul.allow_tf32),
             "float32_matmul_precision": torch.get_float32_matmul_precision()}
    if backend.cuda:
        limit = backend.device_limit()
        facts["device_limit"] = None if limit is None else limit.to_dict()
    return backend, facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_out = Path(os.environ["OUT"]) / "gpu_backend.json" if os.environ.get("OUT") else \
        REPO / "bench" / "results" / "gpu_backend.json"
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--replicates", type=int, default=1000, help="02b replicates B")
    parser.add_argument("--shapes", default="12625x25,8763x94", help="02a N x k, comma separated")
    args = parser.parse_args()
    reference = NumpyBackend()
    backend, facts = torch_backend()
    import torch
    rows = []
    for shape in args.shapes.split(","):
        n, k = (int(v) for v in shape.lower().split("x"))
        ranks = ranks_with_ties(n, k, seed=n + k)
        cpu_s, cpu_digest = sweep_02a(reference, ranks)
        if backend.cuda:
            torch.cuda.reset_peak_memory_stats()
        dev_s, dev_digest = sweep_02a(backend, ranks)
        row = {"case": "02a", "n_genes": n, "k": k, "dtype": str(ranks.dtype.__name__), "tile_rows": TILE_ROWS,
               "numpy_s": round(cpu_s, 3), f"{backend.name}_s": round(dev_s, 3),
               "speedup": round(cpu_s / dev_s, 2), "identical": cpu_digest == dev_digest}
        if backend.cuda:
            row["device_peak_bytes"] = int(torch.cuda.max_memory_allocated())
            row["device_estimate_bytes"] = int(
                n * k * np.dtype(ranks.dtype).itemsize + DEVICE_WORKSPACE_BYTES
                + products_device_bytes(rows=TILE_ROWS, cols=n, inner=k, dtype=ranks.dtype))
        rows.append(row)
        print(json.dumps(row), flush=True)
    u, counts, scale = replicate_inputs(args.replicates, seed=1)
    cpu_s, cpu_digest = sweep_02b(reference, u, counts, scale)
    if backend.cuda:
        torch.cuda.reset_peak_memory_stats()
    dev_s, dev_digest = sweep_02b(backend, u, counts, scale)
    n_pairs = CORE_GENES * (CORE_GENES - 1) // 2
    row = {"case": "02b", "core_genes": CORE_GENES, "k": K_GROUP, "k_r": K_RESAMPLE, "replicates": args.replicates,
           "edges": n_pairs, "dtype": str(u.dtype), "numpy_s": round(cpu_s, 3), f"{backend.name}_s": round(dev_s, 3),
           "speedup": round(cpu_s / dev_s, 2), "identical": cpu_digest == dev_digest}
    if backend.cuda:
        row["device_peak_bytes"] = int(torch.cuda.max_memory_allocated())
        row["device_estimate_bytes"] = int(
            REPLICATE_BLOCK * CORE_GENES * K_GROUP * u.itemsize + DEVICE_WORKSPACE_BYTES
            + products_device_bytes(rows=CORE_GENES, cols=CORE_GENES, inner=K_GROUP, dtype=u.dtype,
                                    batch=REPLICATE_BLOCK, weighted=True, n_pairs=n_pairs))
    rows.append(row)
    print(json.dumps(row), flush=True)
    result = {"host": platform.node(), "cpu_count": os.cpu_count(), "numpy": np.__version__, **facts,
              "blas_threads_note": "numpy and torch CPU use their default thread counts", "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    if not all(r["identical"] for r in rows):
        sys.exit("backends differ: see 'identical' in the rows")


if __name__ == "__main__":
    main()
