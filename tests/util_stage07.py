"""Test helpers for stages 07/08: a tiny run (00 → 03b) built in process, and 07/08 on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dcoex.stages.s00_convert.cli import convert
from dcoex.stages.s01_bootstrap_indices.cli import run_indices
from dcoex.stages.s02a_base_correlations.cli import run_base
from dcoex.stages.s02b_bootstrap_edges.cli import run_bootstrap
from dcoex.stages.s03_network.build import NetworkOptions
from dcoex.stages.s03_network.cli import run_network
from dcoex.stages.s03b_collect.cli import run_collect
from dcoex.stages.s07_permutation_null.cli import run_null
from dcoex.stages.s08_permutation_pvalues.cli import run_pvalues
from dcoex.synthetic import SyntheticData, write_tsv


def build_run(out: Path, matrix: np.ndarray, *, fdr_alpha: float, n_bootstrap: int = 20, seed: int = 5,
              ci_filter: bool = True) -> Path:
    """Stages 00 → 03b on ``matrix`` (genes × samples) in ``out``; returns ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    n, s = matrix.shape
    data = SyntheticData(np.asarray(matrix, np.float32), [f"G{i}" for i in range(n)], [f"S{j}" for j in range(s)], [])
    write_tsv(out / "expr.tsv", data)
    convert(out / "expr.tsv", out / "expression.h5", compression="gzip", compression_level=None, block_rows=64)
    run_indices(out / "bootstrap_indices.h5", in_h5=str(out / "expression.h5"), low_frac=0.2, high_frac=0.2,
                n_bootstrap=n_bootstrap, bootstrap_frac=0.8, seed=seed, batch_size="auto", compression="gzip",
                compression_level=1, deflate_strategy="default")
    everyone = {"gene_range": f"0:{n}"}
    run_base(str(out / "expression.h5"), str(out / "bootstrap_indices.h5"), str(out / "base_correlations"),
             fdr_alpha=fdr_alpha, batch_size="auto", exact_q=False, selection=everyone)
    run_bootstrap(str(out / "expression.h5"), str(out / "bootstrap_indices.h5"), str(out / "base_correlations"),
                  str(out / "bootstrap_significant"), edge_selection="sig_differential", ci_alpha=0.05,
                  fdr_alpha=None, n_bootstrap=None, batch_size="auto", store_replicates=False, selection=everyone)
    run_network(out / "base_correlations", out / "bootstrap_significant", out / "networks",
                options=NetworkOptions(ci_filter=ci_filter), gene_selection=everyone)
    run_collect(out / "networks", out / "differential_network_summary.h5", out_focus_tsv=out / "rewiring_hubs.tsv")
    return out


def null_values(out: Path, *, n_permutations: int, perms_per_task: int, fdr_alpha: float, seed: int = 5,
                null_dir: str = "permutation_null", task_id: int | None = None, force: bool = False) -> dict[str, Any]:
    """Stage 07 on a built run."""
    values = {"n_permutations": n_permutations, "perms_per_task": perms_per_task, "fdr_alpha": fdr_alpha, "seed": seed}
    return run_null(out / "expression.h5", out / "bootstrap_indices.h5", out / null_dir, values=values,
                    task_id=task_id, force=force)


def pvalues(out: Path, *, n_permutations: int, perms_per_task: int, null_dir: str = "permutation_null",
            tag: str = "", force: bool = False) -> dict[str, Any]:
    """Stage 08 on a built run with its null."""
    return run_pvalues(summary_h5=out / "differential_network_summary.h5", hubs_tsv=out / "rewiring_hubs.tsv",
                       base_dir=out / "base_correlations", null_dir=out / null_dir,
                       out_h5=out / f"permutation_pvalues{tag}.h5", out_tsv=out / f"rewiring_hubs_with_pvals{tag}.tsv",
                       values={"n_permutations": n_permutations, "perms_per_task": perms_per_task}, force=force)
