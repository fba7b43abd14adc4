"""Stage 02a on realistic-density data: time, peak RSS vs estimate, file size, GEMM bound.

    python bench/stage02a_real.py [--shape 12625x128] [--shape 500x128 ...] [--alpha 0.05 --alpha 0.7]
        [--genes 0,1] [--real] [--work-dir DIR] [--out bench/results/stage02a_real.json]

For each shape: ``python -m dcoex.realistic`` writes a genes × samples TSV (seed 1), stage 00
converts it, stage 01 makes the groups (--low-frac = --high-frac = 0.2 → k = 25 at 128 samples;
--n-bootstrap 1: 02a reads only the groups), then stage 02a runs once per reference gene and
alpha as users run it (a separate process, --quiet, --force). ``--real`` adds the bladderbatch
export (bench/data/export_bladderbatch.sh writes bladderbatch.tsv into the bench work folder) when present.

Reported per run: edges (meta n_sig_differential), the stage's wall and CPU seconds and peak
RSS (its memfit task sidecar), the estimate (the same sidecar), the file's bytes and
``output_bytes`` of the estimator, and the GEMM bound: the float32 rank products of every tile
of the same groups (the only O(N²·k) arithmetic), timed in a separate process.
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
WORK = REPO / "bench" / "work"
FRAC = 0.2

GEMM_CODE = """
import json, sys, time
import h5py, numpy as np
from dcoex.backend import NumpyBackend
from dcoex.expression_store import open_expression
from dcoex.ranks import IntegerRanks
from dcoex.stages.s02a_base_correlations.science import _Tiles
expr, idx, gene, rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with open_expression(expr) as store:
    x = store.read_all()
with h5py.File(idx, "r") as f:
    low, high = f["indices/low"][gene], f["indices/high"][gene]
tiles = _Tiles(IntegerRanks(x[:, low]), IntegerRanks(x[:, high]), rows, NumpyBackend())
wall, cpu = time.perf_counter(), time.process_time()
for _ in tiles:
    pass
print(json.dumps({"gemm_wall_s": time.perf_counter() - wall, "gemm_cpu_s": time.process_time() - cpu}))
"""


def _python(args: list[str], env: dict) -> str:
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def _load() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def _prepare(tsv: Path, folder: Path, env: dict) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    expr, idx = folder / "expression.h5", folder / "bootstrap_indices.h5"
    if not expr.exists():
        _python(["-m", "dcoex.stages.s00_convert", "--expr-tsv", str(tsv), "--out-h5", str(expr),
                 "--compression", "none", "--quiet"], env)
    if not idx.exists():
        _python(["-m", "dcoex.stages.s01_bootstrap_indices", "--in-h5", str(expr), "--out-h5", str(idx),
                 "--low-frac", str(FRAC), "--high-frac", str(FRAC), "--n-bootstrap", "1", "--quiet"], env)
    return expr, idx


def _gene_names(expr: Path) -> list[str]:
    from dcoex.expression_store import open_expression

    with open_expression(str(expr)) as store:
        return list(store.gene_names)


def _run_02a(dataset: str, expr: Path, idx: Path, folder: Path, *, gene: int, alpha: float, env: dict) -> dict:
    import h5py

    from dcoex.genes import gene_file_path
    from dcoex.stages.s02a_base_correlations.estimator import output_bytes

    out = folder / f"base_{alpha}"
    load = _load()
    start = time.monotonic()
    _python(["-m", "dcoex.stages.s02a_base_correlations", "--expr-h5", str(expr), "--indices-h5", str(idx),
             "--out-dir", str(out), "--fdr-alpha", str(alpha), "--gene-index", str(gene), "--force", "--quiet"], env)
    process_wall = time.monotonic() - start
    rec = next(r for r in (json.loads(p.read_text()) for p in (out / "memory").glob("02a.genes_*.memory.json"))
               if r["genes"] == [gene])
    path = gene_file_path(out, gene, _gene_names(expr)[gene], rec["n_genes"])
    with h5py.File(path, "r") as f:
        meta = f["meta"].attrs
        n_genes, edges, form = int(meta["n_genes"]), int(meta["n_sig_differential"]), str(meta["edge_form"])
        q_form = str(meta["q_diff_form"])
        table_entries = int(f["q_tables/diff_q"].shape[0]) if "q_tables/diff_q" in f else None
        k_low, k_high = int(meta["k_low"]), int(meta["k_high"])
    file_bytes = path.stat().st_size
    path.unlink()  # large at alpha 0.7
    gemm = json.loads(_python(["-c", GEMM_CODE, str(expr), str(idx), str(gene), str(rec["batch_size"])], env))
    return {
        "dataset": dataset, "n_genes": n_genes, "gene": gene, "k_low": k_low, "k_high": k_high, "fdr_alpha": alpha,
        "edges": edges, "density": edges / (n_genes * (n_genes - 1) / 2), "edge_form": form,
        "q_diff_form": q_form, "q_diff_table_entries": table_entries,
        "stage_wall_s": rec["wall_s"], "stage_cpu_s": rec["cpu_s"], "process_wall_s": round(process_wall, 2),
        "peak_rss_bytes": rec["peak_rss_bytes"], "estimate_bytes": rec["estimate_bytes"],
        "used_over_estimate": rec.get("used_over_estimate"), "tile_rows": rec["batch_size"],
        "file_bytes": file_bytes, "output_bytes_estimate": output_bytes(n_genes, edges, k_low=k_low, k_high=k_high),
        **{k: round(v, 3) for k, v in gemm.items()}, "load_avg_before": load,
    }


def _fmt(row: dict) -> str:
    return (f"{row['dataset']:>16} gene {row['gene']:5} alpha {row['fdr_alpha']:<4} edges {row['edges']:>9} "
            f"({row['edge_form']}, q {row.get('q_diff_form')})  wall {row['stage_wall_s']:6.2f} s cpu {row['stage_cpu_s']:6.2f} s  "
            f"gemm {row['gemm_wall_s']:5.2f} s  peak {row['peak_rss_bytes'] / 2**20:6.0f} MiB "
            f"est {row['estimate_bytes'] / 2**20:6.0f} MiB  file {row['file_bytes'] / 2**20:7.1f} MiB "
            f"(est {row['output_bytes_estimate'] / 2**20:7.1f})  load {row['load_avg_before']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", action="append", help="GENESxSAMPLES (repeatable); default 12625x128")
    parser.add_argument("--alpha", action="append", type=float, help="default 0.05 and 0.7")
    parser.add_argument("--genes", default="0", help="reference genes (comma-separated)")
    parser.add_argument("--real", action="store_true", help="also the bladderbatch export (WORK / bladderbatch.tsv) if present")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads of the stage processes")
    parser.add_argument("--work-dir", default=str(WORK / "stage02a_real"))
    parser.add_argument("--out", default=str(REPO / "bench/results/stage02a_real.json"))
    args = parser.parse_args()
    work = Path(args.work_dir)
    env = dict(os.environ, PYTHONPATH=str(REPO / "lib"), MEMFIT_MEM_LIMIT=os.environ.get("MEMFIT_MEM_LIMIT", "16G"),
               OPENBLAS_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads), NSLOTS=str(args.threads))
    datasets = []
    for shape in args.shape or ["12625x128"]:
        n_genes, n_samples = (int(v) for v in shape.split("x"))
        folder = work / f"realistic_{shape}"
        tsv = folder / "expr.tsv"
        if not tsv.exists():
            folder.mkdir(parents=True, exist_ok=True)
            _python(["-m", "dcoex.realistic", "--n-genes", str(n_genes), "--n-samples", str(n_samples), "--seed", "1",
                     "--out", str(tsv)], env)
        datasets.append((f"realistic_{shape}", tsv, folder))
    real = WORK / "bladderbatch.tsv"
    if args.real and real.exists():
        datasets.append(("bladderbatch", real, work / "bladderbatch"))
    rows = []
    for name, tsv, folder in datasets:
        expr, idx = _prepare(tsv, folder, env)
        for gene in (int(g) for g in args.genes.split(",")):
            for alpha in args.alpha or [0.05, 0.7]:
                rows.append(_run_02a(name, expr, idx, folder, gene=gene, alpha=alpha, env=env))
                print(_fmt(rows[-1]), flush=True)
    result = {"machine": f"{os.cpu_count()} CPUs, shared with other jobs (see load_avg_before)",
              "threads": args.threads, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
