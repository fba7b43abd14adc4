"""Bench of stage 02b (and 03) on realistic-density data against the GEMM bound.

    python bench/stage02b_tiles.py [--n-genes 12625] [--n-samples 128] [--n-boot 1000] [--time-tiles N]
        [--alphas 0.05,0.7] [--work-dir DIR] [--out bench/results/stage02b_tiles.json]

1. ``prepare`` (a child process): a realistic matrix (dcoex.realistic) and a
   ``bootstrap_indices.h5`` whose rows are filled for the reference gene only (groups and
   draws exactly as stage 01 makes them; groups of 20 % of the samples, resamples of 80 %).
2. Per FDR level: 02a, 02b and 03 for the reference gene, each a separate process started
   through bench/peak_rss.py (peak RSS = the process's VmHWM; wall and estimate from the
   stage's task sidecar).
3. The GEMM bound of the 02b run, in a child process: the FLOPs of B replicate matrix
   products per group over the tiles that hold edges (tiles = runs of ``edge_chunk``
   edges of the 02a file in pair order; a tile's product is rows × columns × k: 2·T·C·k
   FLOPs per group and replicate), at the float32 GEMM rate measured on the median tile's
   shape right after the stage ran (same threads).

``--time-tiles N`` (on a work folder prepared before, with its base files): instead, time
02b's science in this process on the first N tiles of each base file and their GEMM bound,
and extrapolate to the gene's edges at B = 1000 (for genes too large to run whole here).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEED = 3


def prepare(work: Path, n_genes: int, n_samples: int, n_boot: int, gene: int) -> None:
    """Write expression.h5 and bootstrap_indices.h5 (rows of ``gene`` only) into ``work``."""
    import h5py
    import numpy as np

    from dcoex.expression_store import write_expression
    from dcoex.h5io import write_attrs
    from dcoex.provenance import write_provenance
    from dcoex.realistic import make_realistic
    from dcoex.stages import stage_contract
    from dcoex.stages.s01_bootstrap_indices.science import RNG_SCHEME, bootstrap_indices, extreme_groups, group_sizes
    from dcoex.stages.upstream import FileUpstream

    x = make_realistic(n_genes, n_samples, seed=SEED).astype(np.float32)
    names = [f"g{i}" for i in range(n_genes)]
    sha = write_expression(work / "expression.h5", x, names, [f"s{j}" for j in range(n_samples)], compression="none")
    sizes = group_sizes(n_samples, 0.2, 0.2, 0.8)
    low, high = extreme_groups(x[gene : gene + 1], sizes.k_low, sizes.k_high)
    with h5py.File(work / "bootstrap_indices.h5", "w") as f:
        gz = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
        shapes = {"low": sizes.k_low, "high": sizes.k_high}
        ds = {name: f.create_dataset(f"indices/{name}", (n_genes, k), np.int32, chunks=(1, k), **gz)
              for name, k in shapes.items()}
        boots = {name: f.create_dataset(f"indices/{name}_boot", (n_genes, n_boot, kr), np.int32,
                                        chunks=(1, n_boot, kr), **gz)
                 for name, kr in (("low", sizes.kr_low), ("high", sizes.kr_high))}
        ds["low"][gene], ds["high"][gene] = low[0], high[0]
        boots["low"][gene], boots["high"][gene] = bootstrap_indices(
            low[0], high[0], seed=42, gene_index=gene, n_bootstrap=n_boot, kr_low=sizes.kr_low, kr_high=sizes.kr_high)
        write_attrs(f.require_group("meta"), {
            "low_frac": 0.2, "high_frac": 0.2, "n_bootstrap": n_boot, "bootstrap_frac": 0.8, "seed": 42,
            "processing_mode": "bench (rows of the reference gene only)", "rng_scheme": RNG_SCHEME,
            "expr_content_sha256": sha, "n_genes": n_genes, "n_samples": n_samples,
        })
        values = {"low_frac": 0.2, "high_frac": 0.2, "n_bootstrap": n_boot, "bootstrap_frac": 0.8, "seed": 42}
        write_provenance(f, stage_contract("01").wanted(values, FileUpstream(files={"00": work / "expression.h5"})))


def tile_shapes(gene_i, gene_j, edge_chunk: int) -> list[tuple[int, int]]:
    """(rows, columns) of each 2-D tile of a band as 02b cuts it (science.column_tiles)."""
    import numpy as np

    from dcoex.stages.s02b_bootstrap_edges.science import column_tiles

    return [(np.unique(gene_i[at]).size, np.unique(gene_j[at]).size) for at in column_tiles(gene_i, gene_j, edge_chunk)]


def gemm_bound(base_file: str, edge_chunk: int, n_boot: int, k_low: int, k_high: int) -> dict:
    """FLOPs of the tiles' per-replicate products (the 2-D tiles of each band, as the stage
    cuts them), the float32 rate on the median tile shape (measured now) and their quotient
    (seconds)."""
    import time

    import numpy as np

    from dcoex.edge_files import iter_base_edges
    from dcoex.stages.s02b_bootstrap_edges.estimator import band_edges

    shapes = []
    for chunk in iter_base_edges(Path(base_file), chunk_edges=band_edges(edge_chunk),
                                 columns=("gene_i", "gene_j")):
        shapes += tile_shapes(chunk["gene_i"], chunk["gene_j"], edge_chunk)
    if not shapes:
        return {"tiles": 0, "flops": 0, "gflops_rate": None, "bound_s": 0.0}
    flops = sum(2.0 * t * c * (k_low + k_high) * n_boot for t, c in shapes)
    t, c = sorted(shapes, key=lambda s: s[0] * s[1])[len(shapes) // 2]
    k = max(k_low, k_high)
    rng = np.random.default_rng(0)
    a = rng.integers(-20, 20, (t, k)).astype(np.float32)
    b = rng.integers(-20, 20, (k, c)).astype(np.float32)
    out = np.empty((t, c), dtype=np.float32)
    np.matmul(a, b, out=out)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < 2.0:
        np.matmul(a, b, out=out)
        reps += 1
    rate = 2.0 * t * c * k * reps / (time.perf_counter() - start)
    return {"tiles": len(shapes), "median_tile_rows_cols": [t, c], "flops": flops,
            "gflops_rate": round(rate / 1e9, 2), "bound_s": round(flops / rate, 2)}


def time_tiles(work: Path, alpha: float, gene: int, n_tiles: int, tile: int) -> dict:
    """In this process: 02b's science (bootstrap_band: the 2-D tiles of each band,
    replicate Δ's and statistics) on the first bands of the gene's 02a file until
    ``n_tiles`` tiles ran, wall and CPU seconds, and the GEMM bound of the same tiles at the
    float32 rate measured right after; extrapolated to all the edges."""
    import time

    import h5py
    import numpy as np

    from dcoex.edge_files import iter_base_edges, read_base_meta
    from dcoex.expression_store import open_expression
    from dcoex.stages.s02b_bootstrap_edges.estimator import band_edges
    from dcoex.stages.s02b_bootstrap_edges.science import bootstrap_band, positions_in_group, replicate_deltas

    base_file = next((work / f"base_{alpha}").glob(f"*_g{gene}.h5"))
    with open_expression(work / "expression.h5") as store:
        expr = store.read_all()
    with h5py.File(work / "bootstrap_indices.h5", "r") as f:
        low, high = np.sort(f["indices/low"][gene]), np.sort(f["indices/high"][gene])
        lb, hb = f["indices/low_boot"][gene], f["indices/high_boot"][gene]
    n_boot = lb.shape[0]
    x_low, x_high = expr[:, low], expr[:, high]
    pos_low, pos_high = positions_in_group(lb, low), positions_in_group(hb, high)
    _, n_edges = read_base_meta(base_file)
    buffer, pool, shapes = np.empty((n_boot, tile), dtype=np.float32), {}, []
    columns = ("gene_i", "gene_j", "r_low", "r_high")
    first = next(iter(iter_base_edges(base_file, chunk_edges=1000, columns=columns)))  # warm-up: kernels loaded
    replicate_deltas(x_low, x_high, pos_low[:2], pos_high[:2], gene_i=first["gene_i"].astype(np.int64),
                     gene_j=first["gene_j"].astype(np.int64))
    done = wall = cpu = 0.0
    for chunk in iter_base_edges(base_file, chunk_edges=band_edges(tile), columns=columns):
        if len(shapes) >= n_tiles:
            break
        gi, gj = chunk["gene_i"].astype(np.int64), chunk["gene_j"].astype(np.int64)
        shapes += tile_shapes(gi, gj, tile)
        delta_base = (chunk["r_high"] - chunk["r_low"]).astype(np.float32)
        w0, c0 = time.perf_counter(), time.process_time()
        bootstrap_band(x_low, x_high, pos_low, pos_high, gene_i=gi, gene_j=gj, delta_base=delta_base, ci_alpha=0.05,
                       tile_edges=tile, buffer=buffer, pool=pool)
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
        done += gi.size
    k = low.size + high.size
    flops = sum(2.0 * t * c * k * n_boot for t, c in shapes)
    t, c = shapes[len(shapes) // 2]
    a = np.ones((t, max(low.size, high.size)), dtype=np.float32)
    b = np.ones((max(low.size, high.size), c), dtype=np.float32)
    out = np.empty((t, c), dtype=np.float32)
    reps, start = 0, time.perf_counter()
    cpu0 = time.process_time()
    while time.perf_counter() - start < 2.0:
        np.matmul(a, b, out=out)
        reps += 1
    rate = 2.0 * t * c * a.shape[1] * reps / (time.process_time() - cpu0)  # per CPU second, as the stage's CPU
    return {"fdr_alpha": alpha, "edges": int(n_edges), "tiles_timed": len(shapes), "edges_timed": int(done),
            "n_bootstrap": n_boot, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "ns_per_edge_replicate_wall": round(1e9 * wall / done / n_boot, 2),
            "ns_per_edge_replicate_cpu": round(1e9 * cpu / done / n_boot, 2),
            "gemm_flops": flops, "gflops_rate": round(rate / 1e9, 2), "gemm_bound_s": round(flops / rate, 2),
            "wall_over_bound": round(wall / (flops / rate), 2), "cpu_over_bound": round(cpu / (flops / rate), 2),
            "extrapolated_gene_wall_s_at_B1000": round(wall / done * n_edges * 1000 / n_boot, 1)}


def _stage(module: str, args: list[str], env: dict, *, work: Path, out_dir: Path, stage: str) -> dict:
    peak_json = out_dir.parent / f"peak_{stage}_{out_dir.name}.json"
    cmd = [sys.executable, str(REPO / "bench/peak_rss.py"), str(peak_json), module, *args, "--quiet", "--force"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{module} failed ({done.returncode}):\n{done.stderr}")
    side = json.loads(next((out_dir / "memory").glob(f"{stage}.genes_*.memory.json")).read_text())
    peak = json.loads(peak_json.read_text())["peak_rss_bytes"]
    return {"wall_s": side["wall_s"], "cpu_s": side.get("cpu_s"), "peak_rss_bytes": peak,
            "estimate_bytes": side["estimate_bytes"], "estimate_over_peak": round(side["estimate_bytes"] / peak, 3),
            "batch_size": side.get("batch_size")}


def _child(code: str, env: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _load() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-genes", type=int, default=12625)
    parser.add_argument("--n-samples", type=int, default=128)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--gene", type=int, default=0)
    parser.add_argument("--alphas", default="0.05,0.7")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-03", action="store_true")
    parser.add_argument("--time-tiles", type=int, default=0,
                        help="Instead: time 02b's science on this many tiles of existing base files (in process).")
    parser.add_argument("--tile", type=int, default=None,
                        help="Edges per tile for --time-tiles (default: the stage's own, max_chunk(B)).")
    parser.add_argument("--work-dir", default="/tmp/dcoex_bench_stage02b_tiles")
    parser.add_argument("--out", default=str(REPO / "bench/results/stage02b_tiles.json"))
    args = parser.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MEMFIT_MEM_LIMIT=os.environ.get("MEMFIT_MEM_LIMIT", "16G"),
               OPENBLAS_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads), NSLOTS=str(args.threads),
               PYTHONPATH=os.pathsep.join([str(REPO / "lib"), os.environ.get("PYTHONPATH", "")]))
    if not (work / "bootstrap_indices.h5").exists():
        code = (f"import sys; sys.path.insert(0, {str(REPO / 'bench')!r}); import stage02b_tiles as b; "
                f"b.prepare(__import__('pathlib').Path({str(work)!r}), {args.n_genes}, {args.n_samples}, "
                f"{args.n_boot}, {args.gene})")
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
    expr, idx, gene = str(work / "expression.h5"), str(work / "bootstrap_indices.h5"), args.gene
    if args.time_tiles:
        from threadpoolctl import threadpool_limits

        sys.path.insert(0, str(REPO / "lib"))
        import dcoex  # noqa: F401 - its process defaults (dcoex/__init__.py) before numpy loads

        threadpool_limits(args.threads)  # BLAS; numba's threads: NUMBA_NUM_THREADS (set it to --threads)
        from dcoex.stages.s02b_bootstrap_edges.estimator import max_chunk

        tile = args.tile or max_chunk(args.n_boot)
        rows = [time_tiles(work, float(a), gene, args.time_tiles, tile) for a in args.alphas.split(",")]
        print(json.dumps(rows))
        Path(args.out).write_text(json.dumps({"shape": {"n_genes": args.n_genes, "n_samples": args.n_samples},
                                              "threads": args.threads, "mode": "time_tiles",
                                              "load_avg_after": _load(),
                                              "machine": "2-core development VM shared with other agents",
                                              "rows": rows}, indent=1) + "\n")
        return
    rows = []
    for alpha in [float(a) for a in args.alphas.split(",")]:
        base, boot, net = work / f"base_{alpha}", work / f"boot_{alpha}", work / f"net_{alpha}"
        row = {"fdr_alpha": alpha, "load_avg_before": _load()}
        row["02a"] = _stage("dcoex.stages.s02a_base_correlations", ["--expr-h5", expr, "--indices-h5", idx,
                            "--out-dir", str(base), "--fdr-alpha", str(alpha), "--gene-index", str(gene)],
                            env, work=work, out_dir=base, stage="02a")
        row["02b"] = _stage("dcoex.stages.s02b_bootstrap_edges", ["--expr-h5", expr, "--indices-h5", idx,
                            "--base-dir", str(base), "--out-dir", str(boot), "--gene-index", str(gene)],
                            env, work=work, out_dir=boot, stage="02b")
        base_file = str(next(base.glob(f"*_g{gene}.h5")))
        code = ("import json, h5py; from stage02b_tiles import gemm_bound; "
                f"f = h5py.File({base_file!r}); k = (int(f['meta'].attrs['k_low']), int(f['meta'].attrs['k_high'])); "
                f"n = int(f['edges/r_low'].shape[0]); f.close(); "
                f"print(json.dumps({{'edges': n, **gemm_bound({base_file!r}, {row['02b']['batch_size']}, {args.n_boot}, *k)}}))")
        bound = _child(f"import sys; sys.path.insert(0, {str(REPO / 'bench')!r}); " + code, env)
        row["edges"] = bound.pop("edges")
        row["gemm_bound"] = bound
        row["02b"]["wall_over_bound"] = round(row["02b"]["wall_s"] / bound["bound_s"], 2) if bound["bound_s"] else None
        if not args.skip_03:
            row["03"] = _stage("dcoex.stages.s03_network", ["--base-dir", str(base), "--boot-dir", str(boot),
                               "--out-dir", str(net), "--gene-index", str(gene)], env, work=work, out_dir=net, stage="03")
        rows.append(row)
        print(json.dumps(row), flush=True)
        _write(args, rows)


def _write(args: argparse.Namespace, rows: list[dict]) -> None:
    """Write the result JSON (after every row, so a long run keeps what it measured)."""
    result = {"shape": {"n_genes": args.n_genes, "n_samples": args.n_samples, "n_bootstrap": args.n_boot,
                        "generator": f"dcoex.realistic seed {SEED}", "reference_gene": args.gene},
              "threads": args.threads, "host_cpus": os.cpu_count(),
              "machine": "2-core development VM shared with other agents (loaded; timings are noisy)",
              "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
