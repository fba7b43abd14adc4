"""Stage 02b's run-time model against measured CPU seconds, over group size k and edge density.

    python bench/time_model_02b.py --data DIR [--data DIR ...]
        [--alphas 0.05 0.3 0.7] [--n-bootstrap 100] [--genes 0] [--out bench/results/time_model_02b.json]

Each ``--data`` folder holds an ``expression.h5`` (stage 00; bench/stage02a_real.py writes them
into its work folder, e.g. realistic_1500x938).
Per folder: stage 01 (B = ``--n-bootstrap``, default group fractions) into ``tm_B{B}/``, then per
reference gene and α stage 02a and 02b through their CLIs (a separate process each, ``--quiet``).
Reported per run: N, k_low/k_high, the resample size k_r, B, the gene's edges, 02b's CPU and wall
seconds (its memfit sidecar), the model (``runtime_seconds`` of the 02b estimator) and
CPU / model. The driver asks TIME_SAFETY × the model (at least 15 minutes), so CPU / model must
stay below 1 with room, and far below only where the floor decides anyway.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from whole_run import _edges, _gene_file, _sidecar  # noqa: E402 - the bench folder is not a package


def _run(module: str, args: list[str]) -> float:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", module, *args, "--quiet"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "lib")})
    if done.returncode != 0:
        raise SystemExit(f"{module} {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", required=True)
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.05, 0.3, 0.7])
    parser.add_argument("--n-bootstrap", type=int, default=100)
    parser.add_argument("--genes", default="0")
    parser.add_argument("--out", default=str(REPO / "bench/results/time_model_02b.json"))
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "lib"))
    import h5py

    from dcoex.stages.s02b_bootstrap_edges.estimator import runtime_seconds

    rows = []
    for data in map(Path, args.data):
        expr = data / "expression.h5"
        work = data / f"tm_B{args.n_bootstrap}"
        work.mkdir(exist_ok=True)
        idx = work / "bootstrap_indices.h5"
        if not idx.exists():
            _run("dcoex.stages.s01_bootstrap_indices", ["--in-h5", str(expr), "--out-h5", str(idx),
                                                        "--n-bootstrap", str(args.n_bootstrap), "--force"])
        with h5py.File(idx, "r") as f:
            n_genes = int(f["indices/low"].shape[0])
            k_low, k_high = int(f["indices/low"].shape[1]), int(f["indices/high"].shape[1])
            kr_low, kr_high = int(f["indices/low_boot"].shape[2]), int(f["indices/high_boot"].shape[2])
        for gene in (int(g) for g in args.genes.split(",")):
            for alpha in args.alphas:
                base, boot = work / f"base_{alpha}", work / f"boot_{alpha}"
                common = ["--gene-index", str(gene), "--force"]
                _run("dcoex.stages.s02a_base_correlations", ["--expr-h5", str(expr), "--indices-h5", str(idx),
                                                             "--out-dir", str(base), "--fdr-alpha", str(alpha), *common])
                _sidecar(base, "02a")
                edges = _edges(_gene_file(base, gene))
                load = os.getloadavg()[0]
                wall = _run("dcoex.stages.s02b_bootstrap_edges", ["--expr-h5", str(expr), "--indices-h5", str(idx),
                                                                  "--base-dir", str(base), "--out-dir", str(boot),
                                                                  *common])
                rec = _sidecar(boot, "02b")
                model = runtime_seconds(n_genes=n_genes, gene_edges=[edges], n_bootstrap=args.n_bootstrap,
                                        kr_low=kr_low, kr_high=kr_high)
                row = {"data": data.name, "n_genes": n_genes, "k_low": k_low, "k_high": k_high, "kr_low": kr_low, "kr_high": kr_high,
                       "n_bootstrap": args.n_bootstrap, "gene": gene, "fdr_alpha": alpha, "edges": edges,
                       "cpu_s": rec.get("cpu_s"), "stage_wall_s": rec.get("wall_s"), "process_wall_s": round(wall, 2),
                       "modelled_s": round(model, 2), "cpu_over_modelled": round(rec.get("cpu_s", 0) / model, 3),
                       "threads": rec.get("threads"), "load_avg_before": round(load, 2)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps({"machine": f"{os.cpu_count()} CPUs", "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
