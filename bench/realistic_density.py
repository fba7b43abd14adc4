"""Differential edge densities of a real matrix and of the realistic generator at the same shape.

    bash bench/data/export_bladderbatch.sh            # once: bladderbatch.tsv (22,283 x 57) in bench/work
    python bench/realistic_density.py [--n-probes 3000] [--n-ref 16] [--seed 1] [--whole]
        [--issue-shape] [--work-dir DIR] [--out bench/results/realistic_density.json]

Inputs and intermediate files go under bench/work (git-ignored); DIR defaults to its realistic_density folder.

For each dataset the stages run as users run them, through their CLIs: stage 00 (TSV -> expression.h5),
stage 01 (groups; --n-bootstrap 1 since 02a reads only the groups) and stage 02a for ``--n-ref``
reference genes drawn at random, at fdr_alpha 0.05 and 0.7. The differential edge count of a gene is
its 02a file's ``meta`` attribute ``n_sig_differential``; its density is that count over all
N(N-1)/2 pairs. Each 02a output is deleted once read (at alpha 0.7 they are large).

Datasets:
- ``real_subset``: a random subset of ``--n-probes`` probes of the real matrix (all 57 samples);
- ``generated``: ``python -m dcoex.realistic`` (default parameters) at the same shape;
- ``real_whole`` / ``generated_whole`` (``--whole``): all 22,283 probes, alpha 0.05 only, 4 genes;
- ``generated_issue_shape`` (``--issue-shape``): 2,000 genes x 128 samples at k = 25, to set beside
  the densities issue 11 quotes for a real 12,625 x 128 matrix at k = 25.

Groups: --low-frac = --high-frac = 0.2, so k = floor(57 * 0.2) = 11 (>= 10) for the 57-sample sets.
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
ALPHAS = (0.05, 0.7)
FRAC = 0.2
GENES_PER_CALL = 4
# Densities issue 11 quotes for a real 12,625 x 128 microarray set at k = 25 (one reference gene per run).
ISSUE_QUOTED = {"n_genes": 12625, "n_samples": 128, "k": 25, "n_pairs": 12625 * 12624 // 2,
                "alpha_0.05_edges": [44617, 132540], "alpha_0.7_edges": [24707294]}


def _python(args: list[str], env: dict) -> None:
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def _subset(real_tsv: Path, out: Path, n_probes: int, seed: int) -> None:
    """Write ``n_probes`` random rows (original order) of ``real_tsv`` to ``out``."""
    with open(real_tsv, encoding="utf-8") as handle:
        header, *rows = handle.read().splitlines()
    keep = sorted(random.Random(seed).sample(range(len(rows)), n_probes))
    out.write_text("\n".join([header] + [rows[i] for i in keep]) + "\n")


def _prepare(tsv: Path, folder: Path, env: dict) -> tuple[Path, Path]:
    expr, idx = folder / "expression.h5", folder / "bootstrap_indices.h5"
    if not expr.exists():
        _python(["-m", "dcoex.stages.s00_convert", "--expr-tsv", str(tsv), "--out-h5", str(expr),
                 "--compression", "none", "--quiet"], env)
    if not idx.exists():
        _python(["-m", "dcoex.stages.s01_bootstrap_indices", "--in-h5", str(expr), "--out-h5", str(idx),
                 "--low-frac", str(FRAC), "--high-frac", str(FRAC), "--n-bootstrap", "1", "--quiet"], env)
    return expr, idx


def _densities(name: str, tsv: Path, folder: Path, *, n_ref: int, alphas: tuple[float, ...], seed: int,
               env: dict) -> dict:
    """Run 00, 01 and 02a; return per-gene edge counts and their summary per alpha."""
    import h5py

    expr, idx = _prepare(tsv, folder, env)
    with h5py.File(expr, "r") as f:
        n_genes, n_samples = int(f.attrs["n_genes"]), int(f.attrs["n_samples"])
    genes = sorted(random.Random(seed + 1).sample(range(n_genes), n_ref))
    width = max(4, len(str(n_genes - 1)))
    result: dict = {"dataset": name, "n_genes": n_genes, "n_samples": n_samples, "n_pairs": n_genes * (n_genes - 1) // 2,
                    "reference_genes": genes, "alphas": {}}
    for alpha in alphas:
        out = folder / f"base_{alpha}"
        per_gene = []
        start = time.monotonic()
        for first in range(0, len(genes), GENES_PER_CALL):
            batch = genes[first : first + GENES_PER_CALL]
            _python(["-m", "dcoex.stages.s02a_base_correlations", "--expr-h5", str(expr), "--indices-h5", str(idx),
                     "--out-dir", str(out), "--fdr-alpha", str(alpha), *[f"--gene-index={g}" for g in batch],
                     "--force", "--quiet"], env)
            for g in batch:
                (path,) = out.glob(f"{g:0{width}d}_*.h5")
                with h5py.File(path, "r") as f:
                    meta = f["meta"].attrs
                    per_gene.append({"gene": g, "name": str(meta["gene_name"]), "k_low": int(meta["k_low"]),
                                     "k_high": int(meta["k_high"]),
                                     "n_sig_differential": int(meta["n_sig_differential"]),
                                     "n_tests": int(meta["n_tests"]), "n_tests_diff": int(meta["n_tests_diff"])})
                path.unlink()
        fractions = [row["n_sig_differential"] / row["n_tests"] for row in per_gene]
        counts = [row["n_sig_differential"] for row in per_gene]
        result["alphas"][str(alpha)] = {
            "per_gene": per_gene, "wall_s": round(time.monotonic() - start, 1),
            "fraction": {"min": min(fractions), "median": statistics.median(fractions), "max": max(fractions)},
            "edges": {"min": min(counts), "median": statistics.median(counts), "max": max(counts)},
        }
        row = result["alphas"][str(alpha)]
        print(_line(name, n_genes=n_genes, n_samples=n_samples, k=per_gene[0]["k_low"], alpha=alpha, row=row), flush=True)
    return result


def _line(name: str, *, n_genes: int, n_samples: int, k: int, alpha: float, row: dict) -> str:
    f, e = row["fraction"], row["edges"]
    return (f"| {name} | {n_genes} x {n_samples} | {k} | {alpha} | {len(row['per_gene'])} | "
            f"{100 * f['min']:.4f} / {100 * f['median']:.4f} / {100 * f['max']:.4f} | "
            f"{e['min']:,} / {e['median']:,.0f} / {e['max']:,} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real-tsv", default=str(WORK / "bladderbatch.tsv"))
    parser.add_argument("--work-dir", default=str(WORK / "realistic_density"))
    parser.add_argument("--out", default=str(REPO / "bench/results/realistic_density.json"))
    parser.add_argument("--n-probes", type=int, default=3000, help="random probes of the real matrix")
    parser.add_argument("--n-ref", type=int, default=16, help="reference genes per dataset")
    parser.add_argument("--seed", type=int, default=1, help="probe subset, reference genes and generator seed")
    parser.add_argument("--whole", action="store_true", help="also the whole real matrix (alpha 0.05, 4 genes)")
    parser.add_argument("--issue-shape", action="store_true", help="also generated 2,000 x 128 (k = 25)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    real = Path(args.real_tsv)
    if not real.exists():
        subprocess.run(["bash", str(REPO / "bench/data/export_bladderbatch.sh"), str(real)], check=True)
    work = Path(args.work_dir)
    env = dict(os.environ, PYTHONPATH=str(REPO / "lib") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               MEMFIT_MEM_LIMIT=os.environ.get("MEMFIT_MEM_LIMIT", "16G"), OPENBLAS_NUM_THREADS=str(args.threads),
               OMP_NUM_THREADS=str(args.threads), NSLOTS=str(args.threads))
    with open(real, encoding="utf-8") as handle:
        n_samples = len(handle.readline().rstrip("\n").split("\t")) - 1
        n_probes_total = sum(1 for _ in handle)
    jobs = []
    sub = work / f"real_{args.n_probes}"
    sub.mkdir(parents=True, exist_ok=True)
    if not (sub / "expr.tsv").exists():
        _subset(real, sub / "expr.tsv", args.n_probes, args.seed)
    jobs.append(("real_subset", sub / "expr.tsv", sub, args.n_ref, ALPHAS))
    jobs.append(("generated", _generate(work, args.n_probes, n_samples, args.seed, env), None, args.n_ref, ALPHAS))
    if args.issue_shape:
        jobs.append(("generated_issue_shape", _generate(work, 2000, 128, args.seed, env), None, args.n_ref, ALPHAS))
    if args.whole:
        jobs.append(("real_whole", real, work / "real_whole", 4, (0.05,)))
        jobs.append(("generated_whole", _generate(work, n_probes_total, n_samples, args.seed, env), None, 4, (0.05,)))
    print("| dataset | genes x samples | k | alpha | ref genes | differential edges, % of pairs (min / median / max) "
          "| edges (min / median / max) |\n|---|---|---|---|---|---|---|", flush=True)
    results = []
    for name, tsv, folder, n_ref, alphas in jobs:
        folder = folder or tsv.parent
        folder.mkdir(parents=True, exist_ok=True)
        results.append(_densities(name, tsv, folder, n_ref=n_ref, alphas=alphas, seed=args.seed, env=env))
    from dataclasses import asdict

    from dcoex.realistic import RealisticParams

    defaults = asdict(RealisticParams(2, 10)) | {"n_genes": None, "n_samples": None, "seed": args.seed}
    out = {"real_source": "r-bioc-bladderbatch (bladderEset, RMA log2)", "low_frac": FRAC, "high_frac": FRAC,
           "generator_params": defaults, "issue_quoted_real": ISSUE_QUOTED, "datasets": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


def _generate(work: Path, n_genes: int, n_samples: int, seed: int, env: dict) -> Path:
    folder = work / f"generated_{n_genes}x{n_samples}_seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    tsv = folder / "expr.tsv"
    if not tsv.exists():
        _python(["-m", "dcoex.realistic", "--n-genes", str(n_genes), "--n-samples", str(n_samples), "--seed", str(seed),
                 "--out", str(tsv)], env)
    return tsv


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "lib"))
    main()
