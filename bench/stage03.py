"""Benchmark of stages 03 and 03b on synthetic inputs at N = 8,763 genes.

Writes synthetic 02a/02b files (h5py, the layouts of the shared brief) for a gene with
few edges and one with >= 100,000 edges, runs stage 03 on each as a separate process
(time, peak RSS from the task sidecar, estimate), then makes 8,763 small network files
and runs 03b over them. Prints a table and writes bench/results/stage03.json.
Everything is written under a temporary folder that is removed afterwards.

    .venv/bin/python bench/stage03.py [--big-edges 120000] [--scan] [--keep DIR]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from util_stage03 import STAGE03, STAGE03B, gene_names, make_edges, random_pairs, write_inputs  # noqa: E402

N_GENES = 8763


def synthetic_edges(n: int, m: int, focus: int, n_focus: int, seed: int) -> dict[str, np.ndarray]:
    """m random edges plus n_focus edges at the focus gene (duplicates removed)."""
    rng = np.random.default_rng(seed)
    gi, gj = random_pairs(n, m, rng)
    partners = rng.choice(np.delete(np.arange(n), focus), size=n_focus, replace=False)
    fi, fj = np.minimum(partners, focus), np.maximum(partners, focus)
    pairs = np.unique(np.stack([np.r_[gi, fi], np.r_[gj, fj]], axis=1), axis=0)
    k = pairs.shape[0]
    e = make_edges(pairs[:, 0], pairs[:, 1], rng.uniform(-1, 1, k), rng.uniform(-1, 1, k),
                   sig_low=rng.random(k) < 0.7, sig_high=rng.random(k) < 0.7)
    straddle = rng.random(k) < 0.1
    e["ci_low"][straddle], e["ci_high"][straddle] = -0.01, 0.01
    return e


def run(script: str, *args: object) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{script} failed: {res.stderr}")
    return wall, res


def stage03_case(work: Path, label: str, genes: list[int], names: list[str]) -> dict:
    out = work / f"net_{label}"
    wall, _ = run(STAGE03, "--base-dir", work / "base", "--boot-dir", work / "boot", "--out-dir", out,
                  *sum((["--gene-index", g] for g in genes), []), "--quiet")
    sidecar = next((out / "memory").glob("*.memory.json"))
    rec = json.loads(sidecar.read_text())
    per_gene = [v["wall_s"] for v in rec["per_gene"].values()]
    edges = [v["n_candidate_edges"] for v in rec["per_gene"].values()]
    return {
        "case": label, "n_genes_in_task": len(genes), "candidate_edges_max": max(edges),
        "edges_in_E_max": max(v["n_edges"] for v in rec["per_gene"].values()),
        "process_wall_s": round(wall, 3), "per_gene_wall_s_mean": round(float(np.mean(per_gene)), 4),
        "per_gene_wall_s_max": round(float(np.max(per_gene)), 4),
        "peak_rss_bytes": rec["peak_rss_bytes"], "estimate_bytes": rec["estimate_bytes"],
        "estimate_over_peak": round(rec["estimate_bytes"] / rec["peak_rss_bytes"], 3),
    }


def make_network_files(template: Path, dest: Path, names: list[str]) -> float:
    """Copy one stage 03 file to one file per gene, fixing its gene attributes."""
    from dcoex.genes import gene_file_path
    from dcoex.h5io import write_attrs
    from dcoex.stages.s03_network.io import SUMMARY_ATTR

    t0 = time.perf_counter()
    dest.mkdir(parents=True)
    data = template.read_bytes()
    for g, name in enumerate(names):
        path = gene_file_path(dest, g, name, len(names))
        path.write_bytes(data)
        with h5py.File(path, "r+") as f:
            meta = f["meta"].attrs
            record = json.loads(meta[SUMMARY_ATTR])
            record["meta"].update(gene_index_used=g, focus_gene=g, gene_name=name)
            record["metrics"]["L2L1_deg"] = (g % 97) / 7.0
            write_attrs(f["meta"], {"gene_index_used": g, "focus_gene": g, "gene_name": name,
                                    SUMMARY_ATTR: json.dumps(record, sort_keys=True)})
            write_attrs(f["focus_gene/metrics"], {"L2L1_deg": record["metrics"]["L2L1_deg"]})
    return time.perf_counter() - t0


@click.command()
@click.option("--big-edges", default=120_000, show_default=True, help="Random edges of the large gene.")
@click.option("--scan", is_flag=True, help="Also measure 10k, 50k, 300k and 500k edges (estimator calibration).")
@click.option("--keep", default=None, type=click.Path(file_okay=False), help="Work folder to keep (default: temporary, removed).")
def main(big_edges: int, scan: bool, keep: str | None) -> None:
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bench03-", dir=os.environ.get("TMPDIR")))
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    names = gene_names(N_GENES)
    try:
        few = synthetic_edges(N_GENES, 300, focus=0, n_focus=20, seed=1)
        write_inputs(work / "base", work / "boot", 0, names, few)
        for g in range(1, 21):
            write_inputs(work / "base", work / "boot", g, names, synthetic_edges(N_GENES, 300, g, 20, seed=g + 1))
        big = synthetic_edges(N_GENES, big_edges, focus=100, n_focus=800, seed=99)
        write_inputs(work / "base", work / "boot", 100, names, big)
        rows = [
            stage03_case(work, "few_edges", [0], names),
            stage03_case(work, "few_edges_x20", list(range(1, 21)), names),
            stage03_case(work, "big", [100], names),
        ]
        for k, (m, n_focus) in enumerate([(10_000, 50), (50_000, 300), (300_000, 3000), (500_000, 6000)] if scan else []):
            write_inputs(work / "base", work / "boot", 200 + k, names, synthetic_edges(N_GENES, m, 200 + k, n_focus, seed=k))
            rows.append(stage03_case(work, f"scan_{m // 1000}k", [200 + k], names))
        gen_s = make_network_files(next((work / "net_few_edges").glob("*.h5")), work / "net_all", names)
        wall, _ = run(STAGE03B, "--networks-dir", work / "net_all", "--out-h5", work / "summary.h5",
                      "--out-focus-tsv", work / "hubs.tsv", "--quiet")
        rec = json.loads((work / "summary.h5.memory.json").read_text())
        rows.append({
            "case": "03b_8763_files", "n_genes_in_task": N_GENES, "process_wall_s": round(wall, 3),
            "per_gene_wall_s_mean": round(rec["wall_s"] / N_GENES, 5), "peak_rss_bytes": rec["peak_rss_bytes"],
            "estimate_bytes": rec["estimate_bytes"],
            "estimate_over_peak": round(rec["estimate_bytes"] / rec["peak_rss_bytes"], 3),
            "stage_wall_s": rec["wall_s"], "file_generation_s": round(gen_s, 1),
        })
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    print(f"{'case':<16} {'edges':>8} {'proc s':>8} {'gene s':>8} {'peak MiB':>9} {'est MiB':>8} {'est/peak':>8}")
    for r in rows:
        print(f"{r['case']:<16} {r.get('candidate_edges_max', ''):>8} {r['process_wall_s']:>8} "
              f"{r['per_gene_wall_s_mean']:>8} {r['peak_rss_bytes'] / 2**20:>9.1f} "
              f"{r['estimate_bytes'] / 2**20:>8.1f} {r['estimate_over_peak']:>8}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} on {os.cpu_count()} cores")
    result = {"n_genes": N_GENES, "cases": rows, "loadavg_before": load_before, "loadavg_after": load_after,
              "cpu_count": os.cpu_count(), "python": sys.version.split()[0], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    out = ROOT / "bench" / "results" / "stage03.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
