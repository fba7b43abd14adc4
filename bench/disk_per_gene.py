"""Disk per reference gene of stages 02a, 02b and 03, per dataset, on realistic data.

    python bench/disk_per_gene.py [--n-genes 12625] [--n-samples 128] [--genes 9325]
        [--alphas 0.05 0.7] [--n-bootstrap 100] [--seed 1] [--work-dir DIR] [--out FILE]
        [--boot-precision float32|compact]

Generates ``python -m dcoex.realistic`` data (docs/realistic_data.md) once under ``--work-dir``
(default ``disk_per_gene`` in bench's git-ignored work folder), runs 00 and 01 once, then 02a, 02b
and 03 through their CLIs for each reference gene and alpha, and reports each file's bytes and
each dataset's stored (compressed) bytes. The per-gene files are kept for inspection.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "work"
MODULES = {
    "00": "dcoex.stages.s00_convert", "01": "dcoex.stages.s01_bootstrap_indices",
    "02a": "dcoex.stages.s02a_base_correlations", "02b": "dcoex.stages.s02b_bootstrap_edges",
    "03": "dcoex.stages.s03_network",
}


def _run(module: str, args: list[str], env: dict) -> None:
    done = subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{module} {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def dataset_bytes(path: Path) -> dict[str, int]:
    """Stored bytes of every dataset of an HDF5 file (each object once, whatever its names)."""
    sizes: dict[str, int] = {}
    with h5py.File(path, "r") as f:
        def visit(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset):
                sizes[name] = int(obj.id.get_storage_size())
        f.visititems(visit)
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-genes", type=int, default=12625)
    parser.add_argument("--n-samples", type=int, default=128)
    parser.add_argument("--genes", type=int, nargs="+", default=[9325])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.05, 0.7])
    parser.add_argument("--n-bootstrap", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work-dir", default=str(WORK / "disk_per_gene"))
    parser.add_argument("--out", default=None, help="JSON file of the results (default: print only)")
    parser.add_argument("--boot-precision", choices=("float32", "compact"), default="float32",
                        help="02b's --boot-precision (docs/stage02b.md)")
    args = parser.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO / "lib"), MEMFIT_MEM_LIMIT=os.environ.get("MEMFIT_MEM_LIMIT", "16G"))
    tsv, expr, idx = work / "expr.tsv.gz", work / "expression.h5", work / "bootstrap_indices.h5"
    if not idx.exists():
        _run("dcoex.realistic", ["--n-genes", str(args.n_genes), "--n-samples", str(args.n_samples),
                                 "--seed", str(args.seed), "--out", str(tsv)], env)
        _run(MODULES["00"], ["--expr-tsv", str(tsv), "--out-h5", str(expr), "--force", "--quiet"], env)
        _run(MODULES["01"], ["--in-h5", str(expr), "--out-h5", str(idx), "--n-bootstrap", str(args.n_bootstrap),
                             "--force", "--quiet"], env)
    rows = []
    for alpha in args.alphas:
        for gene in args.genes:
            base, boot, net = (work / f"{s}_{alpha}" for s in ("base", "boot", "net"))
            common = ["--gene-index", str(gene), "--force", "--quiet"]
            _run(MODULES["02a"], ["--expr-h5", str(expr), "--indices-h5", str(idx), "--out-dir", str(base),
                                  "--fdr-alpha", str(alpha), *common], env)
            _run(MODULES["02b"], ["--expr-h5", str(expr), "--indices-h5", str(idx), "--base-dir", str(base),
                                  "--out-dir", str(boot), "--boot-precision", args.boot_precision, *common], env)
            _run(MODULES["03"], ["--base-dir", str(base), "--boot-dir", str(boot), "--out-dir", str(net),
                                 "--expr-h5", str(expr), *common], env)
            row: dict = {"gene": gene, "alpha": alpha, "stages": {}}
            for stage, folder in (("02a", base), ("02b", boot), ("03", net)):
                path = next(folder.glob(f"{gene:0{len(str(args.n_genes - 1))}d}_*.h5"))
                if stage == "02a":
                    with h5py.File(path, "r") as f:
                        row["edges"] = int(f["meta"].attrs["n_sig_differential"])
                row["stages"][stage] = {"file_bytes": path.stat().st_size, "datasets": dataset_bytes(path)}
            total = sum(s["file_bytes"] for s in row["stages"].values())
            row["total_mb"] = total / 1e6
            print(f"gene {gene} alpha {alpha}: {row['edges']} edges; " + ", ".join(
                f"{s} {v['file_bytes'] / 1e6:.1f} MB" for s, v in row["stages"].items()) + f"; total {total / 1e6:.1f} MB",
                flush=True)
            for stage, v in row["stages"].items():
                top = ", ".join(f"{k} {b / 1e6:.2f}" for k, b in list(v["datasets"].items())[:12])
                print(f"  {stage}: {top}", flush=True)
            rows.append(row)
    if args.out:
        Path(args.out).write_text(json.dumps({"n_genes": args.n_genes, "n_samples": args.n_samples,
                                              "n_bootstrap": args.n_bootstrap,
                                              "boot_precision": args.boot_precision, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
