"""Disk: the bytes each stage will write, and whether the output folder's file system holds them.

Each stage's ``estimator.output_bytes`` predicts one output's size from shapes (00, 01, 03b) or
from a reference gene's edge count (02a, 02b, 03). Counts come from 02a's files where they are
current (their ``n_sig_differential`` / ``n_sig_edges`` attributes); before 02a has run they are
unknown, and the plan states its assumption:

* **expected**: a fraction ``expected_edge_fraction(alpha)`` of the N(N−1)/2 pairs per gene — the
  median density measured on a real microarray set (docs/realistic_data.md: 0.066 % of pairs at
  alpha 0.05, 19 % at 0.7), as the power law 0.19·(alpha/0.7)^2.14 through those two points,
  at most 1. This is what the check compares with the free space;
* **bound**: every pair stored (an upper bound no reference gene can exceed).

The 02a finaliser checks again from the real counts (:func:`check_after_02a`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dcoex.pipeline.shapes import DataShape
from dcoex.stages.s01_bootstrap_indices.science import group_sizes
from memfit.units import format_bytes

#: The power law of the expected density: fraction = FRACTION_AT_REF · (alpha / ALPHA_REF) ** EXPONENT.
ALPHA_REF = 0.7
FRACTION_AT_REF = 0.19
EXPONENT = 2.14
#: Stages whose output grows with 02a's edge counts (per reference gene).
EDGE_OUTPUT_STAGES = ("02a", "02b", "03")


def expected_edge_fraction(fdr_alpha: float) -> float:
    """The fraction of all gene pairs a reference gene is expected to store at ``fdr_alpha``."""
    return min(1.0, FRACTION_AT_REF * (float(fdr_alpha) / ALPHA_REF) ** EXPONENT)


@dataclass(frozen=True)
class StageDisk:
    """Bytes one stage will write: expected and upper bound, and what they rest on."""

    stage: str
    expected_bytes: int
    bound_bytes: int
    basis: str  # "shape", "02a edge counts", "assumed density" or a mix


def _gene_bytes(stage: str, n_genes: int, n_edges: int, params: Mapping[str, Any], k: tuple[int, int]) -> int:
    from dcoex.stages.s02a_base_correlations.estimator import output_bytes as out02a
    from dcoex.stages.s02b_bootstrap_edges.estimator import output_bytes as out02b
    from dcoex.stages.s03_network.estimator import output_bytes as out03

    if stage == "02a":
        return out02a(n_genes, n_edges, k_low=k[0], k_high=k[1])
    if stage == "02b":
        return out02b(n_genes=n_genes, n_edges=n_edges, n_boot=params["n_bootstrap"],
                      boot_precision=params.get("boot_precision", "float32"))
    return out03(n_genes=n_genes, n_edges=n_edges)


def stage_disk(stage: str, shape: DataShape, params: Mapping[str, Any], *, genes: Sequence[int],
               counts: Mapping[int, int], n_rows: int) -> StageDisk:
    """What ``stage`` will write for ``genes`` (the genes it will compute; per-gene stages),
    with ``counts`` (gene → edges 02a stored or 02b selects, where known) and ``n_rows`` (03b)."""
    n, s = shape.n_genes, shape.n_samples
    if stage == "00":
        from dcoex.stages.s00_convert.estimator import output_bytes

        size = output_bytes(n, s)
        return StageDisk(stage, size, size, "shape")
    if stage == "01":
        from dcoex.stages.s01_bootstrap_indices.estimator import output_bytes

        sizes = group_sizes(s, params["low_frac"], params["high_frac"], params["bootstrap_frac"])
        size = output_bytes(n, n_bootstrap=params["n_bootstrap"], k_low=sizes.k_low, k_high=sizes.k_high,
                            kr_low=sizes.kr_low, kr_high=sizes.kr_high)
        return StageDisk(stage, size, size, "shape")
    if stage == "03b":
        from dcoex.stages.s03b_collect.estimator import output_bytes

        size = output_bytes(n, n_rows)
        return StageDisk(stage, size, size, "shape")
    if stage in ("04", "05"):
        from dcoex.stages import get_estimator_module

        focus = params["focus_genes"].count(",") + 1 if params.get("focus_genes") else params["n_hubs"]
        module = get_estimator_module(stage)
        size = module.output_bytes(n_rows, focus) if stage == "04" else module.output_bytes(params["n_hubs"] + focus)
        return StageDisk(stage, size, size, "shape")
    if stage in ("07", "08"):
        from dcoex.stages import get_estimator_module

        size = get_estimator_module(stage).output_bytes(n, n_permutations=params["n_permutations"])
        return StageDisk(stage, size, size, "shape")
    pairs = n * (n - 1) // 2
    assumed = int(pairs * expected_edge_fraction(params["fdr_alpha"]))
    sizes = group_sizes(s, params["low_frac"], params["high_frac"], params["bootstrap_frac"])
    k = (sizes.k_low, sizes.k_high)
    expected = bound = 0
    known = 0
    for g in genes:
        count = counts.get(g)
        known += count is not None
        expected += _gene_bytes(stage, n, assumed if count is None else count, params, k)
        bound += _gene_bytes(stage, n, pairs if count is None else count, params, k)
    basis = ("02a edge counts" if known == len(genes) else "assumed density" if not known
             else f"02a edge counts ({known} genes), assumed density ({len(genes) - known})")
    return StageDisk(stage, expected, bound, basis)


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes an unprivileged user may still write on the file system of ``path`` (its nearest
    existing folder): ``statvfs`` f_bavail × f_frsize."""
    here = Path(path).absolute()
    while not here.exists() and here != here.parent:
        here = here.parent
    stat = os.statvfs(here)
    return stat.f_bavail * stat.f_frsize


def disk_refusal(needed_bytes: int, free: int, *, path: str | os.PathLike, bound_bytes: int | None = None,
                 replaced_bytes: int = 0, when: str = "") -> str | None:
    """The one-line refusal when ``needed_bytes`` do not fit in ``free`` bytes plus
    ``replaced_bytes`` (existing outputs the run rewrites), else None."""
    if needed_bytes <= free + replaced_bytes:
        return None
    bound = f"; upper bound {format_bytes(bound_bytes)}" if bound_bytes and bound_bytes > needed_bytes else ""
    replaced = f" (+ {format_bytes(replaced_bytes)} of outputs it replaces)" if replaced_bytes else ""
    return (f"not enough disk{when}: the outputs need {format_bytes(needed_bytes)} (expected{bound}) but "
            f"{path} has {format_bytes(free)} free on its file system{replaced}; free space, choose another "
            "--out-dir, lower --fdr-alpha, store 02b's statistics with --boot-precision compact (about half "
            "of 02b's bytes), or pass --ignore-disk-check")


def check_after_02a(out: Path, manifest: Mapping[str, Any], *, stages: Sequence[str],
                    free: int | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """The disk check of a run after 02a, from the real counts: what 02b, 03 and 03b (those of
    ``stages``) will still write for the genes without a 02b output yet, against ``free`` bytes
    (default: the output folder's). Returns (the record for the manifest, the refusal or None);
    (None, None) when no such stage follows."""
    from dcoex.edge_files import read_selected_count
    from dcoex.genes import gene_file_path
    from dcoex.pipeline.resize import run_shape, run_universe
    from dcoex.pipeline.stages import STAGES
    from hpc.manifest import now_iso

    later = [s for s in stages if s in ("02b", "03", "03b")]
    if not later:
        return None, None
    params = manifest["parameters"]
    shape = run_shape(out, manifest)
    universe = run_universe(out, manifest, shape) or list(range(shape.n_genes))
    base, boot = STAGES["02a"].output_path(out), STAGES["02b"].output_path(out)
    names, n = shape.gene_names, shape.n_genes
    todo = [g for g in universe if not gene_file_path(boot, g, names[g], n).is_file()]
    counts = {}
    for g in todo:
        count = read_selected_count(gene_file_path(base, g, names[g], n), params["edge_selection"])
        if count is not None:
            counts[g] = count
    parts = [stage_disk(s, shape, params, genes=todo, counts=counts, n_rows=len(universe)) for s in later]
    needed = sum(p.expected_bytes for p in parts)
    free = free_bytes(out) if free is None else free
    refusal = disk_refusal(needed, free, path=out, when=" after 02a")
    record = {"time": now_iso(), "free_bytes": free, "needed_bytes": needed, "genes_counted": len(counts),
              "genes_to_write": len(todo), "stages": {p.stage: p.expected_bytes for p in parts},
              "ok": refusal is None, "ignored": bool(refusal and params.get("ignore_disk_check"))}
    return record, refusal
