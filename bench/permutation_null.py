"""Benchmark of stage 07 (the permutation null) beside stage 02a at the production shape.

    python bench/permutation_null.py [--work-dir DIR] [--out bench/results/permutation_null.json]
        [--n-permutations 3] [--alphas 0.05,0.7] [--datasets synthetic,realistic]

For each dataset, 8,763 genes × 938 samples:

- ``synthetic``: ``dcoex.synthetic`` (three modulators with modules of 30 genes; everything else noise);
- ``realistic``: ``dcoex.realistic`` (default parameters: overlapping modulated modules, the
  generator whose differential edge densities match a real matrix, docs/realistic_data.md).

A child process writes ``expression.h5``; stage 01 runs through its CLI with ``--n-bootstrap 1``
(07 reads only the group sizes, 02a the groups). Then, at each alpha, stage 02a for one reference
gene (a modulator / gene 0) and stage 07 for ``--n-permutations`` permutations in one task, each a
separate process started from this lean parent (no numpy here), with ``--quiet``. Time per
reference gene and per permutation, peak RSS and the stage's own estimate come from the sidecars;
a permutation stores no edges, only the metrics (N × 23 float64). The projection for P = 1,000
is the measured time per permutation × 1,000 (one core-slot; divide by the number of array tasks
for the wall time). The machine is shared: the load average before each run is recorded.
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
N_GENES, N_SAMPLES = 8763, 938
SEED = 11


def prepare(work: Path, dataset: str) -> int:
    """Write ``work/expression.h5`` for ``dataset``; returns the reference gene for 02a."""
    from dcoex.expression_store import write_expression

    if dataset == "synthetic":
        from dcoex.synthetic import make_synthetic

        data = make_synthetic(N_GENES, N_SAMPLES, SEED, n_modulators=3, module_size=30)
        matrix, names, samples, gene = data.matrix, data.gene_names, data.sample_names, data.modulators[0]
    else:
        from dcoex.realistic import RealisticGenerator, RealisticParams

        generator = RealisticGenerator(RealisticParams(N_GENES, N_SAMPLES, SEED))
        matrix, names, samples, gene = generator.matrix(), generator.gene_names, generator.sample_names, 0
    write_expression(work / "expression.h5", matrix, names, samples, compression="none")
    return int(gene)


def _run(args: list[str], env: dict) -> float:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return time.monotonic() - start


def _load() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="/tmp/dcoex_bench_perm")
    parser.add_argument("--out", default=str(REPO / "bench/results/permutation_null.json"))
    parser.add_argument("--n-permutations", type=int, default=3)
    parser.add_argument("--alphas", default="0.05,0.7")
    parser.add_argument("--datasets", default="synthetic,realistic")
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads of the stage processes")
    args = parser.parse_args()
    env = dict(os.environ, MEMFIT_MEM_LIMIT=os.environ.get("MEMFIT_MEM_LIMIT", "16G"),
               OPENBLAS_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads), NSLOTS=str(args.threads),
               PYTHONPATH=os.pathsep.join([str(REPO / "lib"), os.environ.get("PYTHONPATH", "")]))
    out = Path(args.out)
    rows = json.loads(out.read_text())["rows"] if out.is_file() else []

    def save(row: dict) -> None:
        """Replace the row of the same (dataset, stage, alpha) and write the JSON (after every run)."""
        key = (row["dataset"], row["stage"], row["fdr_alpha"])
        rows[:] = [r for r in rows if (r["dataset"], r["stage"], r["fdr_alpha"]) != key] + [row]
        result = {"shape": {"n_genes": N_GENES, "n_samples": N_SAMPLES}, "threads": args.threads,
                  "host_cpus": os.cpu_count(),
                  "machine": "shared 2-core VM, other agents running (see load_avg_before)", "rows": rows}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(_fmt(row), flush=True)

    for dataset in args.datasets.split(","):
        work = Path(args.work_dir) / dataset
        work.mkdir(parents=True, exist_ok=True)
        if not (work / "gene.json").exists():
            code = (f"import sys, json, pathlib; sys.path.insert(0, {str(REPO / 'bench')!r}); import permutation_null as b; "
                    f"w = pathlib.Path({str(work)!r}); (w / 'gene.json').write_text(json.dumps(b.prepare(w, {dataset!r})))")
            subprocess.run([sys.executable, "-c", code], check=True, env=env)
            _run(["dcoex.stages.s01_bootstrap_indices", "--in-h5", str(work / "expression.h5"), "--out-h5",
                  str(work / "bootstrap_indices.h5"), "--n-bootstrap", "1", "--quiet"], env)
        gene = json.loads((work / "gene.json").read_text())
        expr, idx = str(work / "expression.h5"), str(work / "bootstrap_indices.h5")
        for alpha in [float(a) for a in args.alphas.split(",")]:
            base = work / f"base_{alpha}"
            load = _load()
            wall = _run(["dcoex.stages.s02a_base_correlations", "--expr-h5", expr, "--indices-h5", idx, "--out-dir",
                         str(base), "--fdr-alpha", str(alpha), "--gene-index", str(gene), "--force", "--quiet"], env)
            rec = json.loads(next((base / "memory").glob("02a.genes_*.memory.json")).read_text())
            with_edges = _count_edges(base, env)
            save({"dataset": dataset, "stage": "02a", "fdr_alpha": alpha, "reference_gene": gene,
                         "edges": with_edges, "process_wall_s": round(wall, 2), "stage_wall_s": rec["wall_s"],
                         "peak_rss_bytes": rec["peak_rss_bytes"], "estimate_bytes": rec["estimate_bytes"],
                         "used_over_estimate": rec.get("used_over_estimate"), "tile_rows": rec["batch_size"],
                         "load_avg_before": load})
            shutil_rm(base)
            null = work / f"null_{alpha}"
            load = _load()
            p = args.n_permutations
            wall = _run(["dcoex.stages.s07_permutation_null", "--expr-h5", expr, "--indices-h5", idx, "--out-dir",
                         str(null), "--fdr-alpha", str(alpha), "--n-permutations", str(p), "--perms-per-task", str(p),
                         "--force", "--quiet"], env)
            rec = json.loads(next((null / "memory").glob("07.perms_*.memory.json")).read_text())
            per_perm = rec["per_task"]["1"]["s_per_permutation"]
            save({"dataset": dataset, "stage": "07", "fdr_alpha": alpha, "n_permutations": p,
                         "null_edges": _null_edges(null, env), "process_wall_s": round(wall, 2),
                         "stage_wall_s": rec["wall_s"], "s_per_permutation": per_perm,
                         "projected_P1000_core_hours": round(per_perm * 1000 / 3600, 3),
                         "peak_rss_bytes": rec["peak_rss_bytes"], "estimate_bytes": rec["estimate_bytes"],
                         "used_over_estimate": rec.get("used_over_estimate"), "tile_rows": rec["batch_size"],
                         "load_avg_before": load})


def shutil_rm(path: Path) -> None:
    """Drop a 02a output folder (large at alpha 0.7) once measured."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _count_edges(base: Path, env: dict) -> int:
    code = "import h5py,glob,sys; f=h5py.File(glob.glob(sys.argv[1])[0]); print(f['edges/r_low'].shape[0])"
    done = subprocess.run([sys.executable, "-c", code, str(base / "*.h5")], capture_output=True, text=True,
                          check=True, env=env)
    return int(done.stdout)


def _null_edges(null: Path, env: dict) -> list[int]:
    code = "import h5py,glob,sys; f=h5py.File(glob.glob(sys.argv[1])[0]); print(list(f['permutation/n_edges'][...]))"
    done = subprocess.run([sys.executable, "-c", code, str(null / "perm_*.h5")], capture_output=True, text=True,
                          check=True, env=env)
    return json.loads(done.stdout.replace("np.int64(", "").replace(")", ""))


def _fmt(row: dict) -> str:
    per = f"{row['s_per_permutation']:.2f} s/perm" if "s_per_permutation" in row else f"{row['stage_wall_s']:.2f} s/gene"
    return (f"{row['dataset']:9} {row['stage']:3} alpha {row['fdr_alpha']:<4} {per:>14}  process {row['process_wall_s']:6.1f} s  "
            f"peak {row['peak_rss_bytes'] / 2**30:5.2f} GiB  est {row['estimate_bytes'] / 2**30:5.2f} GiB  "
            f"load {row['load_avg_before']}")


if __name__ == "__main__":
    main()
