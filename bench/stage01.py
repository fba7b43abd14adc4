"""Benchmark stage 01: wall time, peak RSS (measured and estimated) and file size.

For one shape (default the established production shape, 8,763 genes × 938 samples,
B = 1,000) it builds a synthetic expression.h5, runs stage 01 as a subprocess at each
batch size and measures the child's peak RSS from the kernel (VmHWM via
``bench/peak_rss.py``, independent of memfit's own recorder). Prints a table and writes JSON.

    python bench/stage01.py                          # production shape (~10 GB written per run)
    python bench/stage01.py --n-genes 500 --n-bootstrap 200 --batch-sizes auto,50,all
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

PEAK_RSS = Path(__file__).with_name("peak_rss.py")


def _run_stage(args: list[str], scratch: Path) -> tuple[float, int, int]:
    """Run the stage in a subprocess; return (wall seconds, peak RSS bytes (VmHWM), exit code)."""
    record = scratch / "peak.json"
    start = time.monotonic()
    code = subprocess.run([sys.executable, str(PEAK_RSS), str(record), "dcoex.stages.s01_bootstrap_indices", *args]).returncode
    wall = time.monotonic() - start
    return wall, json.loads(record.read_text())["peak_rss_bytes"], code


@click.command()
@click.option("--n-genes", type=int, default=8763, show_default=True)
@click.option("--n-samples", type=int, default=938, show_default=True)
@click.option("--n-bootstrap", type=int, default=1000, show_default=True)
@click.option("--batch-sizes", default="auto,50,100,500,all", show_default=True)
@click.option("--compression", default="gzip", show_default=True)
@click.option("--compression-level", type=int, default=1, show_default=True)
@click.option("--deflate-strategy", default="planes", show_default=True)
@click.option("--threads", type=int, default=None)
@click.option("--work-dir", type=click.Path(file_okay=False), default=None, help="Scratch folder (default: a temporary one).")
@click.option("--out-json", type=click.Path(dir_okay=False), default="bench/results/stage01.json", show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
def main(*, n_genes, n_samples, n_bootstrap, batch_sizes, compression, compression_level,
         deflate_strategy, threads, work_dir, out_json, seed) -> None:
    """Time stage 01 at several batch sizes on one shape."""
    scratch = Path(work_dir or tempfile.mkdtemp(prefix="dcoex-bench01-"))
    scratch.mkdir(parents=True, exist_ok=True)
    expr = scratch / "expression.h5"
    # built in a child process: a large parent would inflate the stage's ru_maxrss
    # (Linux keeps the forking parent's high-water mark across exec)
    subprocess.run([sys.executable, "-c", (
        "import sys; from dcoex.synthetic import make_synthetic; "
        "from dcoex.expression_store import write_expression; "
        f"d = make_synthetic({n_genes}, {n_samples}, seed=1, n_modulators=0); "
        "write_expression(sys.argv[1], d.matrix, d.gene_names, d.sample_names)"), str(expr)], check=True)
    rows = []
    for batch in [b.strip() for b in batch_sizes.split(",") if b.strip()]:
        out = scratch / f"bootstrap_indices.{batch}.h5"
        args = ["--in-h5", str(expr), "--out-h5", str(out), "--n-bootstrap", str(n_bootstrap),
                "--batch-size", batch, "--seed", str(seed), "--compression", compression,
                "--compression-level", str(compression_level), "--deflate-strategy", deflate_strategy,
                "--quiet"]
        if threads:
            args += ["--threads", str(threads)]
        load_before = os.getloadavg()[0]
        wall, peak, code = _run_stage(args, scratch)
        if code != 0:
            raise SystemExit(f"stage 01 failed at batch size {batch} (exit {code})")
        sidecar = json.loads(Path(str(out) + ".memory.json").read_text())
        rows.append({
            "batch_size": batch,
            "batch_size_used": sidecar["batch_size"],
            "processing_mode": sidecar["processing_mode"],
            "threads": sidecar["threads"],
            "wall_s": round(wall, 2),
            "stage_wall_s": sidecar["wall_s"],
            "cpu_s": sidecar["cpu_s"],
            "peak_rss_bytes": peak,
            "memfit_peak_rss_bytes": sidecar["peak_rss_bytes"],
            "memfit_sampled_peak_rss_bytes": sidecar["sampled_peak_rss_bytes"],
            "estimate_bytes": sidecar["estimate_bytes"],
            "estimate_over_measured": round(sidecar["estimate_bytes"] / peak, 3),
            "file_bytes": out.stat().st_size,
            "load_avg_1min_before": round(load_before, 2),
            "load_avg_1min_after": round(os.getloadavg()[0], 2),
        })
        out.unlink()
        Path(str(out) + ".memory.json").unlink()
        _print_row(rows[-1], header=len(rows) == 1)
    expr.unlink()
    result = {
        "shape": {"n_genes": n_genes, "n_samples": n_samples, "n_bootstrap": n_bootstrap},
        "raw_bootstrap_bytes": n_genes * n_bootstrap * 2 * int(int(n_samples * 0.2 + 1e-9) * 0.8 + 1e-9) * 4,
        "compression": {"filter": compression, "level": compression_level, "strategy": deflate_strategy},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "node": platform.node()},
        "rows": rows,
    }
    Path(out_json).parent.mkdir(parents=True, exist_ok=True)
    Path(out_json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out_json}")


def _print_row(row: dict, header: bool) -> None:
    if header:
        print(f"{'batch':>6} {'used':>6} {'wall s':>7} {'cpu s':>7} {'peak MiB':>9} {'est MiB':>8} "
              f"{'est/peak':>8} {'file GB':>8} {'load':>5}")
    print(f"{row['batch_size']:>6} {row['batch_size_used']:>6} {row['wall_s']:>7.1f} {row['cpu_s']:>7.1f} "
          f"{row['peak_rss_bytes'] / 2**20:>9.1f} {row['estimate_bytes'] / 2**20:>8.1f} "
          f"{row['estimate_over_measured']:>8.3f} {row['file_bytes'] / 1e9:>8.3f} "
          f"{row['load_avg_1min_before']:>5.2f}", flush=True)


if __name__ == "__main__":
    main()
