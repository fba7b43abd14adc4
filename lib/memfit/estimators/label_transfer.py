"""Peak RSS (bytes) of the label-transfer ``run``, step by step, from shapes alone.

The run's peak is the largest step. Each step's estimate is the imported libraries
(torch, scvi-tools, scanpy, xgboost: one constant) plus the arrays alive at that step.
Sparse matrices are float32 CSR: 8 bytes per stored value (value + int32 column index)
plus 8 bytes per row (int64 indptr, to be safe). nnz on the common genes is assumed
proportional to the share of genes kept; the HVG share of nnz is larger than the share of
genes (variable genes are the expressed ones): ``hvg_nnz_share`` (measured ≈ 1.3 × n_hvg / n_common,
capped at 1). Constants were measured on CPython 3.11, torch 2.13 CPU, scvi-tools 1.4.2
(see bench/label_transfer.py and docs/label_transfer.md).
"""

from __future__ import annotations

from memfit.estimate import MemoryEstimate
from memfit.units import MiB

STAGE = "label_transfer"
#: RSS after importing numpy, scipy, h5py, anndata, scanpy, torch, scvi-tools, xgboost.
IMPORTS_BYTES = 640 * MiB
#: Extra RSS of a scVI training run beyond its data (lightning trainer, autograd buffers, allocator).
SCVI_RUNTIME_BYTES = 260 * MiB
#: Extra RSS of XGBoost training (library, histogram cache) beyond the latent matrix.
XGB_RUNTIME_BYTES = 60 * MiB
#: Extra RSS of UMAP (numba-compiled code, nearest-neighbour index) beyond its graph.
UMAP_RUNTIME_BYTES = 200 * MiB
#: Bytes read per chunk while loading (labeltransfer.io.CHUNK_BYTES) times the copies alive.
LOAD_CHUNK_BYTES = 3 * 64 * MiB
#: Ratio of the HVG share of nnz to the HVG share of genes.
HVG_NNZ_RATIO = 1.3
#: Dense float32 mini-batch copies alive in one scVI step (input, rates, gradients, ...).
SCVI_BATCH_COPIES = 12
#: Per-cell float64 arrays of the seurat_v3 HVG step (clipped sums per batch).
HVG_BYTES_PER_NNZ = 8
CSR_BYTES_PER_NNZ = 8
CSR_BYTES_PER_ROW = 8
STEPS = ("load_reference", "load_query", "concatenate", "hvg", "scvi", "xgboost", "outputs")


def _csr(nnz: float, rows: int) -> int:
    return int(nnz * CSR_BYTES_PER_NNZ + (rows + 1) * CSR_BYTES_PER_ROW)


def step_estimates(
    n_reference: int,
    n_query: int,
    n_common: int,
    nnz_reference: int,
    nnz_query: int,
    n_genes_reference: int | None = None,
    n_genes_query: int | None = None,
    dense_reference: bool = False,
    dense_query: bool = False,
    n_hvg: int = 3000,
    n_latent: int = 30,
    batch_size: int = 128,
    n_classes: int = 10,
    device: str = "cpu",
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
    params = dict(
        n_reference=n_reference, n_query=n_query, n_common=n_common, nnz_reference=nnz_reference,
        nnz_query=nnz_query, n_genes_reference=n_genes_reference, n_genes_query=n_genes_query,
        dense_reference=dense_reference, dense_query=dense_query, n_hvg=n_hvg, n_latent=n_latent,
        batch_size=batch_size, n_classes=n_classes, device=device,
    )
    base = {"imports": IMPORTS_BYTES}
    chunk = min(LOAD_CHUNK_BYTES, 3 * _csr(max(nnz_reference, nnz_query), max(n_reference, n_query)))
    steps = {
        "load_reference": {**base, "reference_csr": ref, "reference_chunks": ref, "read_chunk": chunk},
        "load_query": {**base, "reference_csr": ref, "query_csr": query, "query_chunks": query, "read_chunk": chunk},
        "concatenate": {**base, "reference_csr": ref, "query_csr": query, "joint_csr": joint},
    }
    hvg_work = 0 if n_genes == n_common else int(max(nnz_ref, nnz_query_common) * HVG_BYTES_PER_NNZ + joint_hvg)
    steps["hvg"] = {**base, "joint_csr": joint, "hvg_work_and_subset": hvg_work}
    # scVI (q(z|x) encoder, decoder; Adam keeps 2 moments + grads: 4 copies of the weights)
    weights = 4 * 4 * (2 * (n_genes + 2) * 128 + 128 * 2 * n_latent + (n_latent + 2) * 128 + 4 * 128 * n_genes)
    minibatch = SCVI_BATCH_COPIES * batch_size * n_genes * 4
    if device == "gpu":
        weights, minibatch = 0, minibatch // SCVI_BATCH_COPIES
    steps["scvi"] = {
        **base, "scvi_runtime": SCVI_RUNTIME_BYTES, "joint_hvg_csr": joint_hvg, "model_weights": weights,
        "minibatch": minibatch, "latent": latent,
    }
    steps["xgboost"] = {
        **base, "scvi_runtime": SCVI_RUNTIME_BYTES, "xgb_runtime": XGB_RUNTIME_BYTES, "latent": latent,
        "xgb_quantised": n_reference * n_latent * 8, "probabilities": n_query * n_classes * 8 * 2,
    }
    steps["outputs"] = {
        **base, "scvi_runtime": SCVI_RUNTIME_BYTES, "umap_runtime": UMAP_RUNTIME_BYTES, "latent": latent,
        "umap_graph": n_cells * 15 * 8 * 4, "query_counts_csr": _csr(nnz_query, n_query) * 2,
        "probabilities": n_query * n_classes * 8 * 4,
    }
    return {name: MemoryEstimate(f"{STAGE}:{name}", comps, params) for name, comps in steps.items()}


def estimate(**params: object) -> MemoryEstimate:
    """Predicted peak RSS of ``run``: the largest step (its components, bytes)."""
    steps = step_estimates(**params)
    name, worst = max(steps.items(), key=lambda kv: kv[1].total_bytes)
    return MemoryEstimate(STAGE, dict(worst.components), dict(worst.params, peak_step=name))
