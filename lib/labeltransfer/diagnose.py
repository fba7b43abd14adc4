"""``diagnose``: what the files hold and what ``run`` will need, from headers only.

Prints shapes, dtype, sparsity, nnz, gene overlap, cell types below the minimum, the
predicted peak memory of every step (named components), the detected allocation and
concrete recommendations. No matrix is loaded (only a small sample of stored values is
read to check that they look like raw counts).
"""

from __future__ import annotations

import json

from hpc.device import gpu_available
from hpc.errors import InputError
from labeltransfer.estimator import STEPS, step_estimates
from labeltransfer.io import H5adHeader, read_header, sample_is_integer
from labeltransfer.prepare import filter_cell_types, intersect_genes
from memfit.allocation import Allocation, detect_allocation
from memfit.units import format_bytes

#: Estimated GPU speed-up of scVI training worth recommending above this many cells.
GPU_RECOMMEND_CELLS = 50_000


def _header_lines(role: str, header: H5adHeader, integer: bool) -> list[str]:
    return [
        f"{role}: {header.path}",
        f"  cells × genes   {header.n_obs} × {header.n_vars}",
        f"  matrix          {header.matrix_key} ({header.encoding}, {header.dtype})",
        f"  nnz             {header.nnz} (density {header.density:.4f}, sparsity {1 - header.density:.4f})",
        f"  stored size     {format_bytes(header.stored_bytes)}",
        f"  raw counts      {'yes (sampled values are non-negative integers)' if integer else 'NO: sampled values are not non-negative integers'}",
    ]


def recommendations(
    ref: H5adHeader, query: H5adHeader, *, steps: dict, peak: int, allocation: Allocation, params: dict,
    integer: tuple[bool, bool], n_hvg: int, device: str, gpu_seen: bool,
) -> list[str]:
    """Concrete advice from the shapes, the estimate and the allocation."""
    advice = []
    for role, header, ok in (("reference", ref, integer[0]), ("query", query, integer[1])):
        if header.dtype != "float32" and header.encoding != "array":
            advice.append(f"{role} values are {header.dtype}: run casts them to float32 chunk by chunk (no action needed)")
        if header.encoding == "array":
            advice.append(f"{role} matrix is stored dense: rewrite it as CSR (adata.X = scipy.sparse.csr_matrix(adata.X)) to read it faster")
        if header.encoding == "csc_matrix":
            advice.append(f"{role} matrix is CSC: run must read it whole; store it as CSR to read rows in chunks")
        if not ok:
            advice.append(f"{role} does not look like raw counts: pass --counts-layer (the layer with counts) or --allow-non-integer")
    if n_hvg <= 0 or n_hvg > 5000:
        advice.append("use --n-hvg 3000 (or 2000): scVI on all genes costs memory and time for little accuracy")
    if peak > allocation.usable_bytes:
        advice.append(
            f"the estimated peak {format_bytes(peak)} exceeds the usable {format_bytes(allocation.usable_bytes)}: "
            f"request at least {format_bytes(int(peak / allocation.safety) + 1)} (--mem), or subsample the reference"
        )
        worst = max(steps, key=lambda s: steps[s].total_bytes)
        advice.append(f"the largest step is {worst}; its biggest part is "
                      f"{max(steps[worst].components.items(), key=lambda kv: kv[1])[0]}")
    n_cells = params["n_reference"] + params["n_query"]
    if n_cells >= GPU_RECOMMEND_CELLS and device != "gpu":
        advice.append(f"{n_cells} cells: scVI trains several times faster on a GPU (--device gpu, --gpu in the submit scripts); "
                      "on CPUs, run --ensemble none skips SCANVI's classifier epochs (up to the scVI budget again, "
                      "each ~1.4x a scVI epoch)")
    if device == "gpu" and not gpu_seen:
        advice.append("--device gpu was asked but torch sees no GPU here: run will fail with exit 2 (use auto)")
    if not advice:
        advice.append("none: the run fits the allocation with the chosen options")
    return advice


def diagnose(
    reference: str,
    query: str,
    *,
    label_key: str | None = "cell_type",
    counts_layer: str | None = None,
    query_label_key: str | None = None,
    min_cells_per_type: int = 10,
    n_hvg: int = 3000,
    n_latent: int = 30,
    latent_samples: int = 10,
    batch_size: int = 128,
    device: str = "auto",
    min_common_genes: int = 200,
    as_json: bool = False,
    allocation: Allocation | None = None,
) -> str:
    """The diagnosis as text (or JSON); InputError on unreadable files or no common genes."""
    ref = read_header(reference, counts_layer, label_key, role="reference")
    qry = read_header(query, counts_layer, query_label_key, role="query")
    overlap = intersect_genes(ref.var_names, qry.var_names, min_common=1)
    low: dict[str, int] = {}
    n_kept_cells, n_classes = ref.n_obs, 0
    type_error = None
    if ref.labels is not None:
        try:
            types = filter_cell_types(ref.labels, min_cells_per_type, label_key)
            low, n_kept_cells, n_classes = types.dropped, len(types.rows), len(types.kept)
        except InputError as exc:
            type_error = str(exc)
    gpu_seen = False
    if device != "cpu":
        gpu_seen = gpu_available()
    run_device = "gpu" if device == "gpu" or (device == "auto" and gpu_seen) else "cpu"
    params = {
        "n_reference": n_kept_cells, "n_query": qry.n_obs, "n_common": overlap.n_common,
        "n_genes_reference": ref.n_vars, "n_genes_query": qry.n_vars,
        "nnz_reference": int(round(ref.nnz * n_kept_cells / max(ref.n_obs, 1))), "nnz_query": qry.nnz,
        "dense_reference": ref.encoding == "array", "dense_query": qry.encoding == "array",
        "n_hvg": n_hvg, "n_latent": n_latent, "latent_samples": latent_samples,
        "batch_size": batch_size,
        "n_classes": max(n_classes, 1), "device": run_device,
    }
    steps = step_estimates(**params)
    peak_step = max(STEPS, key=lambda s: steps[s].total_bytes)
    peak = steps[peak_step].total_bytes
    allocation = allocation or detect_allocation()
    integer = (sample_is_integer(ref), sample_is_integer(qry))
    advice = recommendations(ref, qry, steps=steps, peak=peak, allocation=allocation, params=params, integer=integer,
                             n_hvg=n_hvg, device=device, gpu_seen=gpu_seen)
    problems = []
    if overlap.n_common < min_common_genes:
        problems.append(f"only {overlap.n_common} common genes (run needs at least {min_common_genes})")
    if qry.n_obs == 0:
        problems.append("the query has no cells")
    if type_error:
        problems.append(type_error)
    if as_json:
        return json.dumps({
            "reference": ref.summary(), "query": qry.summary(), "gene_overlap": overlap.to_dict(),
            "low_count_types": low, "min_cells_per_type": min_cells_per_type, "raw_counts": list(integer),
            "device": run_device, "steps": {s: steps[s].to_dict() for s in STEPS},
            "peak_step": peak_step, "peak_bytes": peak, "allocation": allocation.to_dict(),
            "problems": problems, "recommendations": advice,
        }, indent=1)
    ov = overlap.to_dict()
    lines = _header_lines("reference", ref, integer[0]) + _header_lines("query", qry, integer[1])
    lines += [
        f"genes: {ov['n_common']} common, {ov['n_reference_only']} reference-only, {ov['n_query_only']} query-only",
    ]
    if ref.labels is not None:
        lines.append(
            f"cell types ({label_key!r}): {n_classes} kept, {len(low)} below {min_cells_per_type} cells"
            + (": " + ", ".join(f"{k} ({v})" for k, v in sorted(low.items())) if low else "")
        )
    lines.append(f"predicted peak memory per step (device {run_device}, {n_kept_cells} reference + {qry.n_obs} query cells):")
    for name in STEPS:
        est = steps[name]
        parts = ", ".join(f"{k} {format_bytes(v)}" for k, v in sorted(est.components.items(), key=lambda kv: -kv[1]))
        marker = "  <- peak" if name == peak_step else ""
        lines.append(f"  {name:<15} {format_bytes(est.total_bytes):>12}{marker}")
        lines.append(f"  {'':<15} {parts}")
    lines.append(f"predicted peak: {format_bytes(peak)} ({peak} bytes) at step {peak_step}")
    lines.append(f"allocation: {allocation.describe()}")
    verdict = "fits" if peak <= allocation.usable_bytes else "DOES NOT FIT"
    lines.append(f"verdict: {verdict}")
    for problem in problems:
        lines.append(f"problem: {problem}")
    lines.append("recommendations:")
    lines += [f"  - {a}" for a in advice]
    return "\n".join(lines)
