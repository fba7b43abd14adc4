"""Peak RSS (bytes) of the label-transfer ``run``, step by step, from shapes alone.

The run's peak is the largest step. Each step's estimate is the libraries imported by
then (measured constants), a fitted per-cell term for the scVI / UMAP machinery, plus the
arrays alive at that step.
Sparse matrices are float32 CSR: 8 bytes per stored value (value + int32 column index)
plus 8 bytes per row (int64 indptr, to be safe). nnz on the common genes is assumed
proportional to the share of genes kept; the HVG share of nnz is larger than the share of
genes (variable genes are the expressed ones): HVG_NNZ_RATIO × n_hvg / n_common, capped at 1. Constants were measured on CPython 3.11, torch 2.13 CPU, scvi-tools 1.4.2
(see bench/label_transfer.py and docs/label_transfer.md).
"""

from __future__ import annotations

from labeltransfer.novelty import DEFAULT_K, KNN_WORKING_BYTES
from memfit.estimate import MemoryEstimate
from memfit.units import MiB

STAGE = "label_transfer"
#: Libraries resident at each step (imports are lazy): numpy/scipy/h5py/pandas/anndata while
#: loading; + scanpy/numba for HVG; + torch/lightning/scvi-tools from the scVI step on;
#: + umap/pynndescent/matplotlib for the outputs. Measured with tiny data (bench/label_transfer.py).
LIBRARY_BYTES = {
    "load_reference": 130 * MiB,
    "load_query": 130 * MiB,
    "concatenate": 130 * MiB,
    "hvg": 380 * MiB,
    "scvi": 700 * MiB,
    "xgboost": 660 * MiB,
    "outputs": 920 * MiB,
}
#: Resident bytes per cell (reference + query) beyond the arrays modelled below, fitted on
#: measured runs of 3 000, 12 000 and 30 000 cells (bench/label_transfer.py memory): scVI's loaders/history and torch's cached allocations (kept after the step),
#: UMAP's neighbour graph, embedding optimisation and the scatter plots.
PER_CELL_BYTES = {"scvi": 2 * 1024, "xgboost": 4 * 1024, "outputs": 10 * 1024}
#: Bytes of stored values read per chunk while loading (labeltransfer.io.CHUNK_BYTES).
LOAD_CHUNK_BYTES = 64 * MiB
#: Host RSS of a CUDA context (torch + xgboost on a GPU); an allowance, not measured here (no GPU).
CUDA_CONTEXT_BYTES = 512 * MiB
#: Ratio of the HVG share of nnz to the HVG share of genes.
HVG_NNZ_RATIO = 1.3
#: CSR copies of the largest batch alive while seurat_v3 works on it: measured 2.83 GiB (VmHWM)
#: through HVG at 50 000 + 60 000 cells × 30 000 genes, 5 % dense (bench/label_transfer.py large),
#: 0.48 GiB above one copy.
HVG_BATCH_COPIES = 1.5
#: Dense float32 mini-batch copies alive in one scVI step (input, rates, gradients, ...).
SCVI_BATCH_COPIES = 12
CSR_BYTES_PER_NNZ = 8
CSR_BYTES_PER_ROW = 8
STEPS = ("load_reference", "load_query", "concatenate", "hvg", "scvi", "xgboost", "outputs")


def _csr(nnz: float, rows: int) -> int:
    return int(nnz * CSR_BYTES_PER_NNZ + (rows + 1) * CSR_BYTES_PER_ROW)


def step_estimates(
    n_reference: int,
    n_query: int,
    *,
    n_common: int,
    nnz_reference: int,
    nnz_query: int,
    n_genes_reference: int | None = None,
    n_genes_query: int | None = None,
    dense_reference: bool = False,
    dense_query: bool = False,
    n_hvg: int = 3000,
    n_latent: int = 30,
    latent_samples: int = 0,
    batch_size: int = 128,
    n_classes: int = 10,
    device: str = "cpu",
    unknown_k: int = DEFAULT_K,
    **_: object,
) -> dict[str, MemoryEstimate]:
    """One MemoryEstimate (named components, bytes) per step of ``run``."""
    n_genes_reference = n_genes_reference or n_common
    n_genes_query = n_genes_query or n_common
    nnz_ref = nnz_reference * n_common / max(n_genes_reference, 1)
    nnz_query_common = nnz_query * n_common / max(n_genes_query, 1)
    n_cells = n_reference + n_query
    ref = _csr(nnz_ref, n_reference)
    query = _csr(nnz_query_common, n_query)
    joint = _csr(nnz_ref + nnz_query_common, n_cells)
    n_genes = n_common if n_hvg <= 0 or n_hvg >= n_common else n_hvg
    share = 1.0 if n_genes == n_common else min(1.0, HVG_NNZ_RATIO * n_genes / n_common)
    joint_hvg = _csr((nnz_ref + nnz_query_common) * share, n_cells)
    latent = n_cells * n_latent * 4
    query_samples = latent_samples * n_query * n_latent * 4
    params = dict(
        n_reference=n_reference, n_query=n_query, n_common=n_common, nnz_reference=nnz_reference,
        nnz_query=nnz_query, n_genes_reference=n_genes_reference, n_genes_query=n_genes_query,
        dense_reference=dense_reference, dense_query=dense_query, n_hvg=n_hvg, n_latent=n_latent,
        latent_samples=latent_samples, batch_size=batch_size, n_classes=n_classes, device=device,
        unknown_k=unknown_k,
    )
    libs = {step: {"libraries": LIBRARY_BYTES[step]} for step in STEPS}
    if n_genes == n_common:
        libs["hvg"] = dict(libs["concatenate"])  # no HVG selection: scanpy is not imported
    chunk = min(LOAD_CHUNK_BYTES, _csr(max(nnz_reference, nnz_query), max(n_reference, n_query)))
    steps = {
        "load_reference": {**libs["load_reference"], "reference_csr": ref, "reference_chunks": 2 * ref,
                           "read_chunk": chunk},
        "load_query": {**libs["load_query"], "reference_csr": ref, "query_csr": query, "query_chunks": 2 * query,
                       "read_chunk": chunk},
        "concatenate": {**libs["concatenate"], "reference_csr": ref, "query_csr": query, "joint_csr": joint},
    }
    # seurat_v3 copies one batch at a time (with scipy's row-indexing temporaries), then the
    # matrix is cut to the HVGs
    hvg_work = 0 if n_genes == n_common else int(HVG_BATCH_COPIES * max(ref, query) + joint_hvg)
    steps["hvg"] = {**libs["hvg"], "joint_csr": joint, "batch_copy_and_subset": hvg_work}
    # scVI (q(z|x) encoder, decoder; Adam keeps 2 moments + grads: 4 copies of the weights)
    weights = 4 * 4 * (2 * (n_genes + 2) * 128 + 128 * 2 * n_latent + (n_latent + 2) * 128 + 4 * 128 * n_genes)
    minibatch = SCVI_BATCH_COPIES * batch_size * n_genes * 4
    if device == "gpu":  # weights and activations live on the GPU; the host keeps a CUDA context
        weights, minibatch = 0, minibatch // SCVI_BATCH_COPIES
        for step in ("scvi", "xgboost", "outputs"):
            libs[step]["cuda_context"] = CUDA_CONTEXT_BYTES
    steps["scvi"] = {
        **libs["scvi"], "per_cell": n_cells * PER_CELL_BYTES["scvi"], "joint_hvg_csr": joint_hvg,
        "model_weights": weights, "minibatch": minibatch, "latent": latent, "scvi_latent": latent,
        "query_latent_samples": query_samples,
    }
    steps["xgboost"] = {
        **libs["xgboost"], "per_cell": n_cells * PER_CELL_BYTES["xgboost"], "latent": latent, "scvi_latent": latent,
        "query_latent_samples": query_samples, "xgb_quantised": n_reference * (n_latent + n_classes) * 8, "probabilities": n_query * n_classes * 8 * 2,
        # the knn unknown rule: float32 reference copy, chunked distances, (k + 1) neighbours per cell
        "knn": n_reference * n_latent * 4 + KNN_WORKING_BYTES + n_cells * (unknown_k + 1) * 16,
    }
    steps["outputs"] = {
        **libs["outputs"], "per_cell": n_cells * PER_CELL_BYTES["outputs"], "latent": latent,
        "query_counts_csr": _csr(nnz_query, n_query) * 2, "probabilities": n_query * n_classes * 8 * 4,
    }
    return {name: MemoryEstimate(f"{STAGE}:{name}", comps, params) for name, comps in steps.items()}


def estimate(**params: object) -> MemoryEstimate:
    """Predicted peak RSS of ``run``: the largest step (its components, bytes)."""
    steps = step_estimates(**params)
    name, worst = max(steps.items(), key=lambda kv: kv[1].total_bytes)
    return MemoryEstimate(STAGE, dict(worst.components), dict(worst.params, peak_step=name))
