"""Each stage's memory estimate, computed exactly as the stage computes it (bytes).

A stage plans for ``safety × limit`` with its own estimator and refuses (exit 3) when not
even its smallest unit of work fits. So the driver calls the same estimator with the same
inputs the stage will see: group sizes from :func:`dcoex.stages.s01_bootstrap_indices.science.group_sizes`, the stage's
command-line defaults for options the driver does not pass, ``--threads`` = slots, and the
batch the stage will use:

* an explicit ``--batch-size N``: the stage keeps ``min(N, its maximum)``, so the driver
  plans for exactly that;
* ``--batch-size auto``: the stage takes the largest batch that fits its limit, so the
  request must cover at least the **minimum** (batch of 1); the driver plans for a moderate
  batch (``AUTO_*`` below), never less than the minimum.

Quantities unknown before upstream stages run (edges per reference gene for 02b and 03,
network files for 03b) are planned at their upper bound for the data shape, capped for
large data, until 02a has counted them: then ``n_edges`` (the largest |E0| of a task's genes)
replaces the bound (:mod:`dcoex.pipeline.sizing`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from dcoex.pipeline.shapes import DataShape
from dcoex.stages import get_estimator, stage_contract
from dcoex.stages.s01_bootstrap_indices.science import group_sizes
from memfit.estimate import MemoryEstimate

#: Batches the driver plans for under ``--batch-size auto`` (the stages may take more if it fits).
AUTO_BATCH_01 = 256  # genes per batch of stage 01
AUTO_TILE_ROWS_02A = 512  # gene rows per correlation tile of stage 02a
AUTO_EDGE_CHUNK_02B = 4096  # edges per chunk of stage 02b
#: Selected edges per reference gene (|E0|, held by both 02b and 03) planned for 02b and 03 when
#: N(N-1)/2 is larger, until 02a has counted them (dcoex.pipeline.sizing).
PLAN_EDGES = 200_000


@dataclass(frozen=True)
class StageEstimate:
    """``planned``: the estimate the driver plans for; ``minimum``: the smallest estimate the
    stage can run with (its batch of 1 under ``auto``; ``planned`` when the batch is fixed)."""

    planned: MemoryEstimate
    minimum: MemoryEstimate


def _batched(fn: Callable[[int], MemoryEstimate], batch: int | str | None, max_batch: int,
             auto_batch: int) -> StageEstimate:
    """As ``memfit.plan.plan_batch`` chooses: an explicit size min(N, max), else auto."""
    max_batch = max(1, max_batch)
    if isinstance(batch, int):
        fixed = fn(min(batch, max_batch))
        return StageEstimate(fixed, fixed)
    return StageEstimate(fn(min(auto_batch, max_batch)), fn(1))


def stage_estimate(stage: str, shape: DataShape, *, n_bootstrap: int, low_frac: float, high_frac: float,
                   bootstrap_frac: float, fdr_alpha: float, batch_size: int | str | None,
                   slots: int, n_edges: int | None = None, n_permutations: int = 1000,
                   perms_per_task: int = 50, focus_genes: str | None = None, n_hubs: int = 10,
                   device: str = "cpu") -> StageEstimate:
    """The estimate stage ``stage`` will compute for itself, from the data shape and the run's flags;
    ``n_edges``: the selected edges of the largest gene (02b, 03) when 02a has counted them, else
    None (planned at the bound). ``device`` gpu: the stages with a device (02a, 02b, 07) hold
    torch and a CUDA context on the host too (dcoex.backend.for_backend, as the stage adds them).

    Raises InputError (from group_sizes) when the groups would be too small.
    """
    own = _host_estimate(stage, shape, n_bootstrap=n_bootstrap, low_frac=low_frac, high_frac=high_frac,
                         bootstrap_frac=bootstrap_frac, fdr_alpha=fdr_alpha, batch_size=batch_size, slots=slots,
                         n_edges=n_edges, n_permutations=n_permutations, perms_per_task=perms_per_task,
                         focus_genes=focus_genes, n_hubs=n_hubs, device=device)
    if device != "gpu" or not any(p.name == "device" for p in stage_contract(stage).params):
        return own
    from dcoex.backend import CUDA_CONTEXT_HOST_BYTES, TORCH_IMPORT_BYTES

    def on_gpu(estimate: MemoryEstimate) -> MemoryEstimate:
        return replace(estimate, components={**estimate.components,
                                             "backend": TORCH_IMPORT_BYTES + CUDA_CONTEXT_HOST_BYTES})

    return StageEstimate(on_gpu(own.planned), on_gpu(own.minimum))


def _host_estimate(stage: str, shape: DataShape, *, n_bootstrap: int, low_frac: float, high_frac: float,
                   bootstrap_frac: float, fdr_alpha: float, batch_size: int | str | None, slots: int,
                   n_edges: int | None, n_permutations: int, perms_per_task: int, focus_genes: str | None,
                   n_hubs: int, device: str = "cpu") -> StageEstimate:
    """stage_estimate's host bytes (``device`` gpu: 02b's core products come back to a host buffer)."""
    n, s = shape.n_genes, shape.n_samples
    estimate = get_estimator(stage)
    defaults = stage_contract(stage).defaults()
    pairs = n * (n - 1) // 2
    if stage == "00":
        fixed = estimate(s, n, defaults["block_rows"], defaults["compression"])
        return StageEstimate(fixed, fixed)
    if stage == "03":
        fixed = estimate(n_genes=n, n_edges=min(pairs, PLAN_EDGES) if n_edges is None else n_edges)
        return StageEstimate(fixed, fixed)
    if stage == "03b":
        fixed = estimate(n_genes=n, n_files=n)  # at most one network file per gene
        return StageEstimate(fixed, fixed)
    focus = focus_genes.count(",") + 1 if focus_genes else n_hubs  # the run's focus genes (or its hubs)
    if stage == "04":  # at most one network file per gene
        fixed = estimate(n_genes=n, n_ref_genes=n, n_focus=focus)
        return StageEstimate(fixed, fixed)
    if stage == "05":  # edges and ego networks at the estimator's planning bounds
        fixed = estimate(n_genes=n, n_focus=focus)
        return StageEstimate(fixed, fixed)
    if stage == "08":
        fixed = estimate(n, n_permutations)  # the largest 02a file planned at stage 03's bound
        return StageEstimate(fixed, fixed)
    sizes = group_sizes(s, low_frac, high_frac, bootstrap_frac)
    if stage == "01":
        def fn(b: int) -> MemoryEstimate:
            return estimate(n_genes=n, n_samples=s, n_bootstrap=n_bootstrap, k_low=sizes.k_low,
                            k_high=sizes.k_high, kr_low=sizes.kr_low, kr_high=sizes.kr_high, batch_size=b,
                            threads=slots, input_kind="h5", compression=defaults["compression"])

        return _batched(fn, batch_size, n, AUTO_BATCH_01)
    if stage == "02a":
        from dcoex.stages.s02a_base_correlations.cli import MAX_TILE_ROWS

        def fn(rows: int) -> MemoryEstimate:
            return estimate(n, s, k_low=sizes.k_low, k_high=sizes.k_high, fdr_alpha=fdr_alpha, tile_rows=rows,
                            exact_q=defaults["exact_q"])

        return _batched(fn, batch_size, min(MAX_TILE_ROWS, n - 1), AUTO_TILE_ROWS_02A)
    if stage == "07":
        from dcoex.stages.s02a_base_correlations.cli import MAX_TILE_ROWS

        def fn(rows: int) -> MemoryEstimate:
            return estimate(n, s, k_low=sizes.k_low, k_high=sizes.k_high, fdr_alpha=fdr_alpha, tile_rows=rows,
                            perms_per_task=min(perms_per_task, n_permutations))

        return _batched(fn, batch_size, min(MAX_TILE_ROWS, n - 1), AUTO_TILE_ROWS_02A)
    if stage == "02b":
        from dcoex.stages.s02b_bootstrap_edges.estimator import max_chunk

        if n_edges is None:
            n_edges = min(pairs, PLAN_EDGES)

        def fn(chunk: int) -> MemoryEstimate:
            return estimate(n, s, n_bootstrap=n_bootstrap, k_low=sizes.k_low, k_high=sizes.k_high, kr_low=sizes.kr_low,
                            kr_high=sizes.kr_high, n_edges=n_edges, edge_chunk=chunk,
                            store_replicates=defaults["store_replicates"], gathers_on_device=device == "gpu")

        return _batched(fn, batch_size, min(max(n_edges, 1), max_chunk(n_bootstrap)), AUTO_EDGE_CHUNK_02B)
    raise KeyError(f"unknown stage {stage!r}")
