"""Whole-run projection: time, CPU, memory and disk of 02a + 02b + 03 per reference gene, projected to all genes.

    python bench/whole_run.py [--dataset generated|real|both] [--n-genes 12625] [--n-samples 128]
        [--n-ref 3] [--alphas 0.05 0.7] [--n-bootstrap 1000] [--seed 1] [--work-dir DIR]
        [--out bench/results/whole_run.json] [--threads 2] [--skip-02b-above EDGES]
        [--boot-precision float32|compact]

Datasets (inputs and outputs under ``--work-dir``, default: ``whole_run`` in bench's git-ignored work folder):
- ``generated``: ``python -m dcoex.realistic`` at ``--n-genes`` × ``--n-samples`` (its default
  parameters reproduce real edge densities: docs/realistic_data.md);
- ``real``: the bladderbatch microarrays (bench/data/export_bladderbatch.sh; 22,283 × 57), or any
  genes × samples TSV given with ``--real-tsv``.

For each dataset the stages run as users run them, one process per stage and reference gene
(through their CLIs, ``--quiet``, ``--force``): 00 and 01 once (all genes, B = ``--n-bootstrap``),
then for ``--n-ref`` reference genes drawn at random and each alpha: 02a, 02b, 03. Each stage's wall
time, CPU time, peak RSS and its own estimate come from its task sidecar (``memory/*.memory.json``);
output bytes from the files. Per-gene outputs are deleted after they are measured.

Projection to the whole run (every gene a reference gene, as the pipeline runs): per stage, the mean
per reference gene × N genes (CPU-hours and bytes), plus 00 and 01 once. Beside it, the GEMM bound
of 02a and 02b: their floating-point work at the float32 GEMM rate measured in this run (a square
GEMM of 2048 timed in this process before the stages):

- 02a: two groups, the upper triangle of an N × N product with inner dimension k: 2 · N² · k FLOPs;
- 02b: B replicates × two groups × min(dense upper triangle N² · k_r, gathered dot products 2 · k_r · E)
  for E differential edges.

The machine was shared if the load average printed beside each row says so.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "work"
STAGE_MODULES = {
    "00": "dcoex.stages.s00_convert",
    "01": "dcoex.stages.s01_bootstrap_indices",
    "02a": "dcoex.stages.s02a_base_correlations",
    "02b": "dcoex.stages.s02b_bootstrap_edges",
    "03": "dcoex.stages.s03_network",
}
PER_GENE = ("02a", "02b", "03")


def _load() -> float:
    with open("/proc/loadavg") as handle:
        return float(handle.read().split()[0])


def _run(stage: str, args: list[str], env: dict) -> float:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", STAGE_MODULES[stage], *args, "--quiet"], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{stage} {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.monotonic() - start


def gemm_gflops(size: int = 2048, repeats: int = 3) -> float:
    """Best float32 GEMM rate of this process (GFLOP/s) over ``repeats`` square products."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2.0 * size**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _sidecar(out_dir: Path, stage: str) -> dict:
    (path,) = (out_dir / "memory").glob(f"{stage}.genes_*.memory.json")
    record = json.loads(path.read_text())
    path.unlink()
    return record


def _gene_file(folder: Path, gene: int) -> Path:
    (path,) = [p for p in folder.glob("*.h5") if p.name.split("_", 1)[0].isdigit() and int(p.name.split("_", 1)[0]) == gene]
    return path


def _edges(path: Path) -> int:
    import h5py

    with h5py.File(path, "r") as f:
        return int(f["meta"].attrs["n_sig_differential"])


def _shape(expr: Path) -> tuple[int, int]:
    import h5py

    with h5py.File(expr, "r") as f:
        return int(f.attrs["n_genes"]), int(f.attrs["n_samples"])


def _group_sizes(idx: Path) -> tuple[int, int, int]:
    import h5py

    with h5py.File(idx, "r") as f:
        low, boot = f["indices/low"], f["indices/low_boot"]
        return int(low.shape[1]), int(boot.shape[2]), int(boot.shape[1])


def _stage_row(stage: str, rec: dict, *, wall: float, out_bytes: int, load: float) -> dict:
    return {
        "stage": stage, "process_wall_s": round(wall, 3), "stage_wall_s": rec.get("wall_s"), "cpu_s": rec.get("cpu_s"),
        "peak_rss_bytes": rec.get("peak_rss_bytes"), "estimate_bytes": rec.get("estimate_bytes"),
        "measured_over_estimate": rec.get("used_over_estimate"), "batch_size": rec.get("batch_size"),
        "output_bytes": out_bytes, "load_avg_before": load,
    }


def _dir_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _prepare(name: str, tsv: Path, folder: Path, *, n_boot: int, env: dict) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    expr, idx = folder / "expression.h5", folder / "bootstrap_indices.h5"
    rows = {}
    for stage, out, args in (
        ("00", expr, ["--expr-tsv", str(tsv), "--out-h5", str(expr), "--force"]),
        ("01", idx, ["--in-h5", str(expr), "--out-h5", str(idx), "--n-bootstrap", str(n_boot), "--force"]),
    ):
        load = _load()
        wall = _run(stage, args, env)
        rows[stage] = {"stage": stage, "process_wall_s": round(wall, 3), "output_bytes": out.stat().st_size,
                       "load_avg_before": load}
        print(f"{name}: {stage} {wall:.1f} s, {out.stat().st_size / 2**20:.1f} MiB", flush=True)
    return rows


def _per_gene(name: str, folder: Path, *, gene: int, alpha: float, env: dict, skip_02b_above: int | None,
              boot_precision: str = "float32") -> dict:
    expr, idx = folder / "expression.h5", folder / "bootstrap_indices.h5"
    base, boot, net = (folder / f"{s}_{alpha}" for s in ("base", "boot", "net"))
    common = ["--gene-index", str(gene), "--force"]
    rows: dict[str, dict] = {}
    load = _load()
    wall = _run("02a", ["--expr-h5", str(expr), "--indices-h5", str(idx), "--out-dir", str(base),
                        "--fdr-alpha", str(alpha), *common], env)
    base_file = _gene_file(base, gene)
    edges = _edges(base_file)
    rows["02a"] = _stage_row("02a", _sidecar(base, "02a"), wall=wall, out_bytes=base_file.stat().st_size, load=load)
    if skip_02b_above is None or edges <= skip_02b_above:
        load = _load()
        wall = _run("02b", ["--expr-h5", str(expr), "--indices-h5", str(idx), "--base-dir", str(base),
                            "--out-dir", str(boot), "--boot-precision", boot_precision, *common], env)
        boot_file = _gene_file(boot, gene)
        rows["02b"] = _stage_row("02b", _sidecar(boot, "02b"), wall=wall, out_bytes=boot_file.stat().st_size, load=load)
        load = _load()
        wall = _run("03", ["--base-dir", str(base), "--boot-dir", str(boot), "--out-dir", str(net),
                           "--expr-h5", str(expr), *common], env)
        net_file = _gene_file(net, gene)
        rows["03"] = _stage_row("03", _sidecar(net, "03"), wall=wall, out_bytes=net_file.stat().st_size, load=load)
        boot_file.unlink()
        net_file.unlink()
    base_file.unlink()
    line = "  ".join(f"{s} {r['process_wall_s']:.1f} s {r['peak_rss_bytes'] / 2**20:.0f}/{r['estimate_bytes'] / 2**20:.0f} MiB "
                     f"{r['output_bytes'] / 2**20:.1f} MiB" for s, r in rows.items())
    print(f"{name}: gene {gene} alpha {alpha}: {edges:,} edges  {line}", flush=True)
    return {"gene": gene, "fdr_alpha": alpha, "edges": edges, "stages": rows}


def _gemm_bound_s(stage: str, *, n: int, k: int, kr: int, n_boot: int, edges: int, gflops: float) -> float:
    if stage == "02a":
        flops = 2.0 * n * n * k
    elif stage == "02b":
        flops = n_boot * 2.0 * min(float(n) * n * kr, 2.0 * kr * edges)
    else:
        return 0.0
    return flops / (gflops * 1e9)


def _projection(genes: list[dict], *, n: int, k: int, kr: int, n_boot: int, gflops: float) -> dict:
    out: dict[str, dict] = {}
    for stage in PER_GENE:
        rows = [(g["edges"], g["stages"][stage]) for g in genes if stage in g["stages"]]
        if not rows:
            continue
        wall = [r["stage_wall_s"] or r["process_wall_s"] for _, r in rows]
        cpu = [r["cpu_s"] or 0.0 for _, r in rows]
        bound = [_gemm_bound_s(stage, n=n, k=k, kr=kr, n_boot=n_boot, edges=e, gflops=gflops) for e, _ in rows]
        ratio = [r["peak_rss_bytes"] / r["estimate_bytes"] for _, r in rows if r.get("estimate_bytes")]
        out[stage] = {
            "genes_measured": len(rows),
            "wall_s_per_gene": {"mean": statistics.mean(wall), "max": max(wall)},
            "gemm_bound_s_per_gene": statistics.mean(bound),
            "wall_over_gemm_bound": statistics.mean(wall) / statistics.mean(bound) if statistics.mean(bound) else None,
            "peak_over_estimate": {"min": min(ratio), "max": max(ratio)} if ratio else None,
            "projected_cpu_hours": statistics.mean(cpu) * n / 3600.0,
            "projected_wall_hours_1_core_slot": statistics.mean(wall) * n / 3600.0,
            "bytes_per_gene": statistics.mean(r["output_bytes"] for _, r in rows),
            "projected_disk_bytes": statistics.mean(r["output_bytes"] for _, r in rows) * n,
        }
    return out


def _table(result: dict) -> str:
    lines = ["| dataset | alpha | stage | genes | edges (mean) | s / gene | GEMM bound s | ratio | peak / est | "
             "MB / gene | projected CPU-h | projected disk GB |", "|" + "---|" * 12]
    for ds in result["datasets"]:
        for alpha, block in ds["alphas"].items():
            edges = statistics.mean(g["edges"] for g in block["genes"])
            for stage, p in block["projection"].items():
                pe = p["peak_over_estimate"]
                ratio_text = f"{p['wall_over_gemm_bound']:.1f}" if p["wall_over_gemm_bound"] else "-"
                pe_text = f"{pe['min']:.2f}–{pe['max']:.2f}" if pe else "-"
                lines.append(
                    f"| {ds['name']} {ds['n_genes']}×{ds['n_samples']} | {alpha} | {stage} | {p['genes_measured']} | "
                    f"{edges:,.0f} | {p['wall_s_per_gene']['mean']:.2f} | {p['gemm_bound_s_per_gene']:.3f} | "
                    f"{ratio_text} | "
                    f"{pe_text} | {p['bytes_per_gene'] / 1e6:.2f} | "
                    f"{p['projected_cpu_hours']:.1f} | {p['projected_disk_bytes'] / 1e9:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("generated", "real", "both"), default="generated")
    parser.add_argument("--real-tsv", default=str(WORK / "bladderbatch.tsv"))
    parser.add_argument("--n-genes", type=int, default=12625)
    parser.add_argument("--n-samples", type=int, default=128)
    parser.add_argument("--n-ref", type=int, default=3, help="reference genes measured per dataset and alpha")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.05, 0.7])
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-02b-above", type=int, default=None,
                        help="measure 02b/03 only for genes with at most this many edges")
    parser.add_argument("--work-dir", default=str(WORK / "whole_run"))
    parser.add_argument("--out", default=str(REPO / "bench/results/whole_run.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--boot-precision", choices=("float32", "compact"), default="float32",
                        help="02b's --boot-precision (docs/stage02b.md)")
    args = parser.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO / "lib") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               MEMFIT_MEM_LIMIT=os.environ.get("MEMFIT_MEM_LIMIT", "16G"), OPENBLAS_NUM_THREADS=str(args.threads),
               OMP_NUM_THREADS=str(args.threads), NUMBA_NUM_THREADS=str(args.threads), NSLOTS=str(args.threads))
    gflops = gemm_gflops()
    print(f"float32 GEMM: {gflops:.1f} GFLOP/s (this process, {args.threads} threads)", flush=True)
    datasets = []
    names = ("generated", "real") if args.dataset == "both" else (args.dataset,)
    for name in names:
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        if name == "generated":
            tsv = folder / f"realistic_{args.n_genes}x{args.n_samples}_s{args.seed}.tsv"
            if not tsv.exists():
                subprocess.run([sys.executable, "-m", "dcoex.realistic", "--n-genes", str(args.n_genes), "--n-samples",
                                str(args.n_samples), "--seed", str(args.seed), "--out", str(tsv)], env=env, check=True)
        else:
            tsv = Path(args.real_tsv)
            if not tsv.exists():
                subprocess.run(["bash", str(REPO / "bench/data/export_bladderbatch.sh"), str(tsv)], check=True)
        once = _prepare(name, tsv, folder, n_boot=args.n_bootstrap, env=env)
        n, n_samples = _shape(folder / "expression.h5")
        k, kr, n_boot = _group_sizes(folder / "bootstrap_indices.h5")
        genes = sorted(random.Random(args.seed).sample(range(n), args.n_ref))
        block: dict = {"name": name, "n_genes": n, "n_samples": n_samples, "k": k, "kr": kr, "n_bootstrap": n_boot,
                       "reference_genes": genes, "once": once, "alphas": {}}
        for alpha in args.alphas:
            measured = [_per_gene(name, folder, gene=g, alpha=alpha, env=env, skip_02b_above=args.skip_02b_above,
                                  boot_precision=args.boot_precision) for g in genes]
            block["alphas"][str(alpha)] = {
                "genes": measured,
                "projection": _projection(measured, n=n, k=k, kr=kr, n_boot=n_boot, gflops=gflops),
            }
            proj = block["alphas"][str(alpha)]["projection"]
            total_cpu = sum(p["projected_cpu_hours"] for p in proj.values())
            total_disk = sum(p["projected_disk_bytes"] for p in proj.values()) + sum(r["output_bytes"] for r in once.values())
            block["alphas"][str(alpha)]["total"] = {"projected_cpu_hours": total_cpu, "projected_disk_bytes": total_disk}
            print(f"{name} alpha {alpha}: whole run ≈ {total_cpu:.1f} CPU-h, {total_disk / 1e9:.2f} GB", flush=True)
        datasets.append(block)
    result = {"gemm_gflops_float32": gflops, "threads": args.threads, "host_cpus": os.cpu_count(),
              "n_bootstrap": args.n_bootstrap, "boot_precision": args.boot_precision, "datasets": datasets}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(_table(result))


if __name__ == "__main__":
    main()
