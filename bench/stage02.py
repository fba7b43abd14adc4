"""Benchmark of stages 02a and 02b at the production shape (8,763 genes × 938 samples, B = 1,000).

    python bench/stage02.py [--work-dir DIR] [--out bench/results/stage02.json] [--genes-only]

1. ``prepare`` (a child process): synthetic expression (dcoex.synthetic, one modulator whose
   module of 460 genes is correlated in its HIGH group only: C(460,2) = 105,570 planted
   edges; plus a small planted module of 9 genes on a second gene: 36 edges; plus a noise
   gene) and a ``bootstrap_indices.h5`` covering all N genes whose rows are filled for the
   three reference genes only (groups and draws exactly as stage 01 makes them).
2. Each measured run is a separate process started from this lean parent (it imports no
   numpy, so the child's peak RSS is its own), with ``--quiet``; wall time and peak RSS
   come from the stage's task sidecar, next to the stage's own estimate.

Rows: 02a at alpha 0.05 and 0.7 for the three genes; 02b (alpha 0.05 base files) for the
small-module gene (few edges) and the modulator (>= 100,000 edges).
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
N_GENES, N_SAMPLES, N_BOOT = 8763, 938, 1000
BIG_MODULE, SMALL_MODULE = 460, 9
SEED = 11
BASELINE = {"02a_s": 81.0, "02a_gb": 3.3, "02b_small_s": 328.0}


def prepare(work: Path) -> dict:
    """Write expression.h5 and bootstrap_indices.h5 into ``work``; returns the reference genes."""
    import h5py
    import numpy as np

    from dcoex.expression_store import write_expression
    from dcoex.h5io import write_attrs
    from dcoex.stages.s01_bootstrap_indices.science import RNG_SCHEME, bootstrap_indices, extreme_groups, group_sizes
    from dcoex.synthetic import make_synthetic

    data = make_synthetic(N_GENES, N_SAMPLES, SEED, n_modulators=1, module_size=BIG_MODULE, strength=4.0)
    x = data.matrix
    big = data.modulators[0]
    taken = set(data.modules[big]) | {big}
    rng = np.random.default_rng(SEED)
    free = [g for g in rng.permutation(N_GENES).tolist() if g not in taken]
    small, noise, members = free[0], free[1], free[2 : 2 + SMALL_MODULE]
    sizes = group_sizes(N_SAMPLES, 0.2, 0.2, 0.8)
    top = np.argsort(x[small], kind="stable")[N_SAMPLES - sizes.k_high :]
    factor = rng.standard_normal(top.size).astype(np.float32)
    for g in members:
        x[g, top] += 4.0 * factor * float(np.std(x[g]))
    sha = write_expression(work / "expression.h5", x, data.gene_names, data.sample_names, compression="none")
    genes = sorted({big, small, noise})
    with h5py.File(work / "bootstrap_indices.h5", "w") as f:
        gz = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
        low_ds = f.create_dataset("indices/low", (N_GENES, sizes.k_low), np.int32, chunks=(1, sizes.k_low), **gz)
        high_ds = f.create_dataset("indices/high", (N_GENES, sizes.k_high), np.int32, chunks=(1, sizes.k_high), **gz)
        lb_ds = f.create_dataset("indices/low_boot", (N_GENES, N_BOOT, sizes.kr_low), np.int32,
                                 chunks=(1, N_BOOT, sizes.kr_low), **gz)
        hb_ds = f.create_dataset("indices/high_boot", (N_GENES, N_BOOT, sizes.kr_high), np.int32,
                                 chunks=(1, N_BOOT, sizes.kr_high), **gz)
        for g in genes:
            low, high = extreme_groups(x[g : g + 1], sizes.k_low, sizes.k_high)
            low_ds[g], high_ds[g] = low[0], high[0]
            lb_ds[g], hb_ds[g] = bootstrap_indices(low[0], high[0], seed=42, gene_index=g, n_bootstrap=N_BOOT,
                                                   kr_low=sizes.kr_low, kr_high=sizes.kr_high)
        write_attrs(f.require_group("meta"), {
            "low_frac": 0.2, "high_frac": 0.2, "n_bootstrap": N_BOOT, "bootstrap_frac": 0.8, "seed": 42,
            "processing_mode": "bench (rows of the reference genes only)", "rng_scheme": RNG_SCHEME,
            "expr_content_sha256": sha, "n_genes": N_GENES, "n_samples": N_SAMPLES,
        })
    roles = {"modulator_460": big, "module_9": small, "noise": noise}
    (work / "genes.json").write_text(json.dumps(roles))
    return roles


def _run(args: list[str], env: dict) -> float:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return time.monotonic() - start


def _sidecar(out_dir: Path, stage: str, gene: int) -> dict:
    return json.loads((out_dir / "memory" / f"{stage}.genes_{gene:04d}-{gene:04d}.memory.json").read_text())


def _load() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="/tmp/dcoex_bench_stage02")
    parser.add_argument("--out", default=str(REPO / "bench/results/stage02.json"))
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads of the stage processes")
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument("--skip-02b", action="store_true")
    args = parser.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MEMFIT_MEM_LIMIT=os.environ.get("MEMFIT_MEM_LIMIT", "16G"),
               OPENBLAS_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads),
               NSLOTS=str(args.threads))
    if not (work / "genes.json").exists():
        code = f"import sys; sys.path.insert(0, {str(REPO / 'bench')!r}); import stage02; stage02.prepare(__import__('pathlib').Path({str(work)!r}))"
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
    roles = json.loads((work / "genes.json").read_text())
    if args.prepare_only:
        return
    expr, idx = str(work / "expression.h5"), str(work / "bootstrap_indices.h5")
    rows = []
    for alpha in (0.05, 0.7):
        out = work / f"base_{alpha}"
        for role, gene in roles.items():
            load = _load()
            wall = _run(["dcoex.stages.s02a_base_correlations", "--expr-h5", expr, "--indices-h5", idx, "--out-dir",
                         str(out), "--fdr-alpha", str(alpha), "--gene-index", str(gene), "--force", "--quiet"], env)
            rec = _sidecar(out, "02a", gene)
            rows.append(_row("02a", role, gene, alpha=alpha, rec=rec, wall=wall, load=load, edges=_edges(out, gene)))
            print(_fmt(rows[-1]), flush=True)
    if not args.skip_02b:
        base = work / "base_0.05"
        out = work / "boot"
        for role in ("module_9", "modulator_460"):
            gene = roles[role]
            load = _load()
            wall = _run(["dcoex.stages.s02b_bootstrap_edges", "--expr-h5", expr, "--indices-h5", idx, "--base-dir",
                         str(base), "--out-dir", str(out), "--gene-index", str(gene), "--force", "--quiet"], env)
            rec = _sidecar(out, "02b", gene)
            rows.append(_row("02b", role, gene, alpha=0.05, rec=rec, wall=wall, load=load, edges=_edges(base, gene)))
            print(_fmt(rows[-1]), flush=True)
    result = {
        "shape": {"n_genes": N_GENES, "n_samples": N_SAMPLES, "n_bootstrap": N_BOOT},
        "threads": args.threads, "host_cpus": os.cpu_count(), "baseline_established": BASELINE,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(_table(rows))


def _edges(base_dir: Path, gene: int) -> int:
    code = ("import h5py,glob,sys; f=h5py.File(glob.glob(sys.argv[1])[0]); "
            "print(f['meta'].attrs['n_sig_differential'])")
    done = subprocess.run([sys.executable, "-c", code, str(base_dir / f"{gene:04d}_*.h5")],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def _row(stage: str, role: str, gene: int, *, alpha: float, rec: dict, wall: float, load: str, edges: int) -> dict:
    return {
        "stage": stage, "gene": gene, "role": role, "fdr_alpha": alpha, "edges": edges,
        "stage_wall_s": rec["wall_s"], "process_wall_s": round(wall, 2), "cpu_s": rec["cpu_s"],
        "peak_rss_bytes": rec["peak_rss_bytes"], "sampled_peak_rss_bytes": rec["sampled_peak_rss_bytes"],
        "estimate_bytes": rec["estimate_bytes"], "ratio_measured_over_estimate": rec.get("used_over_estimate"),
        "batch_size": rec["batch_size"], "load_avg_before": load,
    }


def _fmt(row: dict) -> str:
    return (f"{row['stage']:4} {row['role']:14} gene {row['gene']:5} alpha {row['fdr_alpha']:<4} "
            f"edges {row['edges']:>7}  wall {row['stage_wall_s']:7.2f} s  peak {row['peak_rss_bytes'] / 2**30:5.2f} GiB  "
            f"est {row['estimate_bytes'] / 2**30:5.2f} GiB  used/est {row['ratio_measured_over_estimate']}  "
            f"batch {row['batch_size']}  load {row['load_avg_before']}")


def _table(rows: list[dict]) -> str:
    head = "| stage | gene (role) | alpha | edges | wall s | peak GiB | estimate GiB | used/est | batch | load |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['stage']} | {r['gene']} ({r['role']}) | {r['fdr_alpha']} | {r['edges']} | {r['stage_wall_s']:.2f} | "
            f"{r['peak_rss_bytes'] / 2**30:.3f} | {r['estimate_bytes'] / 2**30:.3f} | {r['ratio_measured_over_estimate']} | "
            f"{r['batch_size']} | {r['load_avg_before']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
