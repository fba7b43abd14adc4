"""Stages 02a, 02b and 07 on the host (numpy) and on the GPU backend, same inputs, same run.

    python bench/gpu_stages.py [--allow-cpu] [--n-genes 4000] [--n-samples 128] [--n-boot 200]
        [--fdr-alpha 0.7] [--permutations 2] [--work-dir DIR] [--out FILE]

Realistic data (dcoex.realistic, bench/stage02b_tiles.prepare: groups and resamples of
reference gene 0 as stage 01 makes them). Each stage runs twice in this process, with
``device="cpu"`` and with the GPU backend (``"gpu"``; with ``--allow-cpu`` and no CUDA,
torch's CPU build, the same code path), after a warm-up of the compiled kernels; the outputs
must be identical (every dataset and attribute but the memory record), and the wall and CPU
seconds, tile/chunk sizes and the GPU's peak allocated bytes are written as JSON to
``--out`` (default ``$OUT/gpu_stages.json`` when $OUT is set, else
``bench/results/gpu_stages.json``). Exit 1 if any output differs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))
sys.path.insert(0, str(REPO / "bench"))

from stage02b_tiles import prepare  # noqa: E402 - after the path set-up

from dcoex.backend import Backend, TorchBackend  # noqa: E402
from dcoex.stages.s02a_base_correlations.cli import run_base  # noqa: E402
from dcoex.stages.s02b_bootstrap_edges.cli import run_bootstrap  # noqa: E402
from dcoex.stages.s07_permutation_null.cli import run_null  # noqa: E402


def _bytes(value) -> bytes:
    """The bytes of a value read from HDF5 (strings by content, not by object pointer)."""
    array = np.asarray(value)
    return repr(array.tolist()).encode() if array.dtype.kind == "O" else array.tobytes()


def tree(folder: Path) -> dict:
    """{file/dataset or @attribute: bytes} of every .h5 file in ``folder`` (memfit group skipped)."""
    out = {}
    for path in sorted(folder.glob("*.h5")):
        with h5py.File(path, "r") as f:
            def visit(name: str, obj, path=path) -> None:
                if name.split("/")[0] == "memfit":
                    return
                for key, value in obj.attrs.items():
                    out[f"{path.name}:{name}@{key}"] = _bytes(value)
                if isinstance(obj, h5py.Dataset):
                    out[f"{path.name}:{name}"] = _bytes(obj[()])

            f.visititems(visit)
    return out


def timed(run) -> tuple[dict, float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    info = run()
    return info, round(time.perf_counter() - w0, 3), round(time.process_time() - c0, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--allow-cpu", action="store_true", help="Without CUDA: torch's CPU build as the 'GPU'.")
    parser.add_argument("--n-genes", type=int, default=4000)
    parser.add_argument("--n-samples", type=int, default=128)
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--fdr-alpha", type=float, default=0.7)
    parser.add_argument("--permutations", type=int, default=2)
    parser.add_argument("--work-dir", default="/tmp/dcoex_gpu_stages")
    parser.add_argument("--out", default=str(Path(os.environ["OUT"]) / "gpu_stages.json") if os.environ.get("OUT")
                        else str(REPO / "bench/results/gpu_stages.json"))
    args = parser.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        raise SystemExit("gpu_stages: torch sees no CUDA GPU (use --allow-cpu for torch's CPU build)")
    gpu: Backend | str = "gpu" if cuda else TorchBackend("cpu")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "bootstrap_indices.h5").exists():
        prepare(work, args.n_genes, args.n_samples, args.n_boot, 0)
    expr, idx = str(work / "expression.h5"), str(work / "bootstrap_indices.h5")
    one = {"gene_index": [0]}
    run_base(expr, idx, str(work / "warm_base"), fdr_alpha=0.05, batch_size=64, exact_q=False, selection=one)
    result = {"host": platform.node(), "torch": torch.__version__, "cuda": cuda,
              "device": torch.cuda.get_device_name(0) if cuda else "torch CPU build (no GPU)",
              "shape": {"n_genes": args.n_genes, "n_samples": args.n_samples, "n_bootstrap": args.n_boot,
                        "fdr_alpha": args.fdr_alpha, "permutations": args.permutations},
              "stages": {}}
    identical = True
    for label, device in (("cpu", "cpu"), ("gpu", gpu)):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        info, wall, cpu = timed(lambda device=device, label=label: run_base(
            expr, idx, str(work / f"base_{label}"), fdr_alpha=args.fdr_alpha, batch_size="auto", exact_q=False,
            selection=one, force=True, device=device))
        a = {"wall_s": wall, "cpu_s": cpu, "tile_rows": info["tile_rows"]}
        info, wall, cpu = timed(lambda device=device, label=label: run_bootstrap(
            expr, idx, str(work / "base_cpu"), str(work / f"boot_{label}"), edge_selection="sig_differential",
            ci_alpha=0.05, fdr_alpha=None, n_bootstrap=None, batch_size="auto", store_replicates=False,
            selection=one, force=True, device=device))
        b = {"wall_s": wall, "cpu_s": cpu, "edge_chunk": info["edge_chunk"]}
        values = {"n_permutations": args.permutations, "perms_per_task": args.permutations, "fdr_alpha": 0.05,
                  "device": "cpu" if device == "cpu" else "gpu"}
        info, wall, cpu = timed(lambda device=device, label=label, values=values: run_null(
            expr, idx, work / f"null_{label}", values=values, force=True,
            backend=device if isinstance(device, Backend) else None))
        c = {"wall_s": wall, "cpu_s": cpu, "tile_rows": info["tile_rows"]}
        peak = int(torch.cuda.max_memory_allocated()) if cuda and label == "gpu" else None
        result["stages"][label] = {"02a": a, "02b": b, "07": c, "gpu_peak_allocated_bytes": peak}
        print(label, json.dumps(result["stages"][label]), flush=True)
    with h5py.File(next((work / "base_cpu").glob("*.h5")), "r") as f:
        result["edges_02a"] = int(f["edges/r_low"].shape[0])
    for stage in ("base", "boot", "null"):
        host, device = tree(work / f"{stage}_cpu"), tree(work / f"{stage}_gpu")
        result[f"identical_{stage}"] = host == device
        result[f"differing_{stage}"] = sorted(k for k in set(host) | set(device) if host.get(k) != device.get(k))[:10]
        identical &= host == device
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k.startswith("identical")}))
    sys.exit(0 if identical else 1)


if __name__ == "__main__":
    main()
