"""Compute backend of the exact integer-rank GEMMs: numpy on the host, or torch (CUDA).

The co-expression stages spend their arithmetic in three products of integer ranks
u = 2·rank − (k+1) (``dcoex.ranks``):

- 02a, a correlation tile: U[a:b] · U[a:]ᵀ, scaled by 1/‖u_i‖·1/‖u_j‖;
- 02b, a bootstrap replicate: (U·diag(c)) · Uᵀ with c the resample's counts per group
  position (Σ c = k_r), batched over replicates;
- the permutation null: U_p · U_pᵀ for a batch of permuted splits p.

:meth:`Backend.products` computes Σ_p left_i,p · w_p · right_j,p (batched over leading axes,
optionally only some (i, j) pairs) and :meth:`Backend.correlations` that product as float32
times scale_i times scale_j. :func:`resolve` maps ``--device auto|cpu|gpu`` to a backend
(the rule is ``hpc.device.resolve_device``, shared with label transfer): ``cpu`` → numpy,
``gpu`` → torch on CUDA (one-line InputError without one), ``auto`` → CUDA when torch sees
it, else numpy. :class:`TorchBackend` also runs on torch's CPU build, the same code path,
so its equality with numpy is tested where there is no GPU.

**Exactness.** |u| <= k−1, so each product u_i,p·u_j,p is an integer <= (k−1)² and every
partial sum of a k-term dot product — in whatever order BLAS, cuBLAS, split-K reductions
or threads add them — is an integer of magnitude <= k(k−1)². float32 holds every integer
below 2²⁴ exactly, so while k(k−1)² < 2²⁴ (k <= 256) every addition is exact and the
product is the same number on every machine; above that the callers use float64 (exact
below 2⁵³). Weighted (02b): c·u is an integer <= k_r·(k_r−1) and the partial sums are
<= Σ_p c_p·|u_i,p·u_j,p| <= k_r(k_r−1)², the same bound with k_r (``dcoex.ranks.exact_dtype``
chooses the type). Scaling is elementwise IEEE: float32(product), then × scale_i, then ×
scale_j, each correctly rounded on CPU and GPU alike. So every backend returns identical
bits (NaN is written as numpy's quiet NaN: CUDA would return its canonical NaN).

**TF32 must be off.** On Ampere and later GPUs PyTorch may run float32 GEMMs in TF32, which
rounds the inputs to 11 significant bits: ranks or weighted ranks above 2048 lose bits and
the sums stop being exact; ``set_float32_matmul_precision("medium")`` likewise allows
bfloat16 (8 bits). :class:`TorchBackend` therefore sets, process-wide and before any GEMM,
``torch.backends.cuda.matmul.allow_tf32 = False``, ``torch.backends.cudnn.allow_tf32 =
False`` and ``torch.set_float32_matmul_precision("highest")``, and checks them before each
product (another library in the process may turn them on again).

**Transfers.** Inputs are put on the device once (:meth:`Backend.put`: pinned host copy,
asynchronous upload) and sliced there (U[a:] is a view); results come back into host
buffers from :meth:`Backend.host_buffer` (pinned on CUDA, so the copy is a DMA) or are kept
on the device (``host=False``) until :meth:`Backend.to_host`. Gathering only the wanted
pairs (``pairs=``) on the device keeps the 02b transfers O(replicates × edges).

A CUDA out-of-memory error is raised as MemoryError (the stages' exit 3).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from hpc.device import resolve_device
from memfit.device import DeviceLimit, detect_device_limit
from memfit.estimate import MemoryEstimate
from memfit.units import MiB

#: Device bytes beyond the buffers of a product: cuBLAS workspace and the caching
#: allocator's rounding (2 MiB blocks).
DEVICE_WORKSPACE_BYTES = 64 * MiB
#: Host RSS that importing torch adds (measured 192 MiB, torch 2.13 CPU, on top of numpy,
#: scipy and h5py).
TORCH_IMPORT_BYTES = 224 * MiB
#: Host RSS of a CUDA context (driver, cuBLAS handles and kernels mapped in): an
#: assumption until bench/gpu_backend.py measures it on a GPU machine.
CUDA_CONTEXT_HOST_BYTES = 512 * MiB

EXACT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _np_dtype(dtype: Any) -> np.dtype:
    """The numpy dtype of a numpy or torch dtype (or of an array / tensor); ValueError if none."""
    dtype = getattr(dtype, "dtype", dtype)
    try:
        return np.dtype(str(dtype).replace("torch.", ""))
    except TypeError:
        raise ValueError(f"no numpy dtype for {dtype}") from None


def _exact_type(left_dtype: Any, right_dtype: Any) -> np.dtype:
    """The common float dtype of the factors (float32 or float64, equal); ValueError else."""
    left, right = _np_dtype(left_dtype), _np_dtype(right_dtype)
    if left != right or left not in EXACT_DTYPES:
        raise ValueError(f"exact products need equal float32 or float64 factors, got {left} and {right}")
    return left


def products_device_bytes(*, rows: int, cols: int, inner: int, dtype: Any, batch: int = 1,
                          weighted: bool = False, n_pairs: int | None = None) -> int:
    """Device bytes (an upper bound) of one ``correlations`` call whose factors are already
    on the device: the exact product (batch × rows × cols), the weighted left factor, the
    gathered pairs with their indices and scales, the float32 copy of a float64 result and
    the NaN mask; the resident factors are the caller's."""
    item = np.dtype(dtype).itemsize
    total = batch * rows * cols * item
    if weighted:
        total += batch * rows * inner * item
    kept = batch * rows * cols if n_pairs is None else batch * n_pairs
    if n_pairs is not None:
        total += kept * item + 2 * n_pairs * 8 + kept * 2 * 4
    if item != 4:
        total += kept * 4
    return int(total + kept)


def for_backend(estimate: MemoryEstimate, backend: Backend, device: Mapping[str, int]) -> MemoryEstimate:
    """A stage's host estimate run on ``backend``: plus the host RSS the backend adds
    (``backend``: torch, a CUDA context) and, on a GPU, the ``device`` components (bytes the
    stage holds there) and DEVICE_WORKSPACE_BYTES, fitted by plan_batch to the device limit."""
    components = dict(estimate.components)
    if backend.host_overhead_bytes:
        components["backend"] = backend.host_overhead_bytes
    on_device = {**device, "workspace": DEVICE_WORKSPACE_BYTES} if backend.device == "gpu" else {}
    return dataclasses.replace(estimate, components=components, device_components=on_device)


class Backend:
    """The exact products on one device (the host defaults of the helpers here). ``name``:
    "numpy", "torch-cpu" or "torch-cuda"; ``device``: "cpu" or "gpu"."""

    name = "numpy"
    device = "cpu"
    #: Host RSS the backend adds to a stage (torch, the CUDA context), bytes.
    host_overhead_bytes = 0
    #: Whether callers should gather wanted pairs on the backend (``pairs=``) rather than
    #: take whole products back: True where the product lives in another memory (a GPU).
    gathers_on_device = False

    def put(self, array: np.ndarray) -> Any:
        """``array`` on the backend's device (numpy: itself, C-contiguous; torch on the CPU: a
        tensor sharing its memory; CUDA: a pinned copy uploaded asynchronously)."""
        return np.ascontiguousarray(array)

    def host_buffer(self, shape: tuple[int, ...] | int, dtype: Any) -> np.ndarray:
        """An empty host array the backend copies results into fastest (pinned on CUDA)."""
        return np.empty(shape, dtype)

    def to_host(self, array: Any, out: np.ndarray | None = None) -> np.ndarray:
        """A backend array as a numpy array (into ``out`` when given)."""
        if out is None:
            return np.asarray(array)
        np.copyto(out, array)
        return out

    def synchronize(self) -> None:
        """Wait for queued device work (timing); nothing on the host."""

    def device_limit(self) -> DeviceLimit | None:
        """The device memory limit to fit batches to (memfit.device), None on the host."""
        return None

    def describe(self) -> str:
        return "numpy (host)"

    def products(self, left: Any, right: Any, *, weights: Any = None, pairs: tuple[Any, Any] | None = None,
                 out: np.ndarray | None = None, host: bool = True) -> Any:
        """Σ_p left[..., i, p]·weights[..., p]·right[..., j, p] for all (i, j), or for the
        ``pairs`` (rows, cols) → shape (..., E); leading axes broadcast (replicates). The
        factors are integer-valued float32/float64 arrays (numpy or this backend's) of one
        dtype within the exactness bound (module docstring); the result has their dtype, on
        the host (into ``out`` when given) or, with ``host=False``, left on the device."""
        raise NotImplementedError

    def correlations(self, left: Any, right: Any, *, scale_left: Any, scale_right: Any, weights: Any = None,
                     pairs: tuple[Any, Any] | None = None, out: np.ndarray | None = None,
                     host: bool = True) -> Any:
        """float32(products(...)) × scale_left_i × scale_right_j (float32 scales of shape
        (..., m) and (..., n)): the Pearson r of the rank rows, float32."""
        raise NotImplementedError


class NumpyBackend(Backend):
    """The products with numpy (BLAS) on the host: the reference."""

    def products(self, left: Any, right: Any, *, weights: Any = None, pairs: tuple[Any, Any] | None = None,
                 out: np.ndarray | None = None, host: bool = True) -> Any:
        dtype = _exact_type(left.dtype, right.dtype)
        lhs = left if weights is None else left * np.asarray(weights, dtype)[..., None, :]
        if pairs is None:
            return np.matmul(lhs, np.swapaxes(right, -1, -2), out=out)
        gram = np.matmul(lhs, np.swapaxes(right, -1, -2))
        picked = gram[..., np.asarray(pairs[0]), np.asarray(pairs[1])]
        return self.to_host(picked, out)

    def correlations(self, left: Any, right: Any, *, scale_left: Any, scale_right: Any, weights: Any = None,
                     pairs: tuple[Any, Any] | None = None, out: np.ndarray | None = None,
                     host: bool = True) -> Any:
        raw = self.products(left, right, weights=weights, pairs=pairs)
        r = np.empty(raw.shape, np.float32) if out is None else out
        r[...] = raw
        left_scale, right_scale = _scales(np.asarray(scale_left, np.float32), np.asarray(scale_right, np.float32),
                                          pairs, np.asarray)
        r *= left_scale
        r *= right_scale
        return r


def _scales(scale_left: Any, scale_right: Any, pairs: tuple[Any, Any] | None, index: Any) -> tuple[Any, Any]:
    """The scale factors broadcast against a product (all pairs) or gathered for ``pairs``."""
    if pairs is None:
        return scale_left[..., :, None], scale_right[..., None, :]
    return scale_left[..., index(pairs[0])], scale_right[..., index(pairs[1])]


class TorchBackend(Backend):
    """The products with PyTorch on ``cuda`` (``cuda:N``) or ``cpu`` (same code; CI).

    Creating one switches TF32 and reduced-precision float32 matmul off for the process.
    """

    def __init__(self, device: str = "cuda") -> None:
        import torch

        self._torch = torch
        self._device = torch.device(device)
        self.cuda = self._device.type == "cuda"
        if self.cuda and not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device")
        self.name = "torch-cuda" if self.cuda else "torch-cpu"
        self.gathers_on_device = True  # also on torch's CPU build: the same code path as on CUDA
        self.device = "gpu" if self.cuda else "cpu"
        self.host_overhead_bytes = TORCH_IMPORT_BYTES + (CUDA_CONTEXT_HOST_BYTES if self.cuda else 0)
        disable_tf32()

    def describe(self) -> str:
        torch = self._torch
        where = torch.cuda.get_device_name(self._device) if self.cuda else "CPU"
        return f"torch {torch.__version__} on {self._device} ({where}); TF32 off"

    def _tensor(self, array: Any) -> Any:
        if isinstance(array, self._torch.Tensor):
            return array if array.device == self._device else array.to(self._device)
        return self.put(array)

    def put(self, array: np.ndarray) -> Any:
        array = np.asarray(array)
        if not array.flags.c_contiguous or not array.flags.writeable:
            array = np.array(array, order="C")
        host = self._torch.from_numpy(array)
        if not self.cuda:
            return host
        with _cuda_memory_errors(self._torch):
            return host.pin_memory().to(self._device, non_blocking=True)

    def host_buffer(self, shape: tuple[int, ...] | int, dtype: Any) -> np.ndarray:
        if not self.cuda:
            return np.empty(shape, dtype)
        torch_dtype = self._torch.from_numpy(np.empty(0, dtype)).dtype
        return self._torch.empty(shape, dtype=torch_dtype, pin_memory=True).numpy()

    def to_host(self, array: Any, out: np.ndarray | None = None) -> np.ndarray:
        if not isinstance(array, self._torch.Tensor):
            return super().to_host(array, out)
        if out is None:
            if not self.cuda:
                return array.numpy()
            out = self.host_buffer(tuple(array.shape), _np_dtype(array))
        self._torch.from_numpy(out).copy_(array)  # pinned destination: DMA; waits for the device
        return out

    def synchronize(self) -> None:
        if self.cuda:
            self._torch.cuda.synchronize(self._device)

    def device_limit(self) -> DeviceLimit | None:
        if not self.cuda:
            return None
        index = self._device.index or 0
        return detect_device_limit(probe=lambda: tuple(int(v) for v in self._torch.cuda.mem_get_info(index)))

    def _gram(self, left: Any, right: Any, weights: Any, pairs: tuple[Any, Any] | None) -> Any:
        torch = self._torch
        _exact_type(left.dtype, right.dtype)
        check_tf32_off()
        lhs, rhs = self._tensor(left), self._tensor(right)
        if weights is not None:
            lhs = lhs * self._tensor(np.asarray(weights, _np_dtype(lhs)))[..., None, :]
        gram = torch.matmul(lhs, rhs.transpose(-1, -2))
        if pairs is not None:
            gram = gram[..., self._index(pairs[0]), self._index(pairs[1])]
        return gram

    def _index(self, idx: Any) -> Any:
        if isinstance(idx, self._torch.Tensor):
            return idx.to(self._device)
        return self._tensor(np.asarray(idx, np.int64))

    def products(self, left: Any, right: Any, *, weights: Any = None, pairs: tuple[Any, Any] | None = None,
                 out: np.ndarray | None = None, host: bool = True) -> Any:
        with _cuda_memory_errors(self._torch):
            gram = self._gram(left, right, weights, pairs)
            return self.to_host(gram, out) if host else gram

    def correlations(self, left: Any, right: Any, *, scale_left: Any, scale_right: Any, weights: Any = None,
                     pairs: tuple[Any, Any] | None = None, out: np.ndarray | None = None,
                     host: bool = True) -> Any:
        torch = self._torch
        with _cuda_memory_errors(torch):
            r = self._gram(left, right, weights, pairs).to(torch.float32)
            left_scale, right_scale = _scales(self._scale(scale_left), self._scale(scale_right), pairs, self._index)
            r *= left_scale
            r *= right_scale
            r.masked_fill_(torch.isnan(r), float("nan"))  # numpy's quiet NaN, not CUDA's canonical one
            return self.to_host(r, out) if host else r

    def _scale(self, scale: Any) -> Any:
        if isinstance(scale, self._torch.Tensor):
            return scale.to(self._device, self._torch.float32)
        return self._tensor(np.asarray(scale, np.float32))


@contextlib.contextmanager
def _cuda_memory_errors(torch: Any) -> Iterator[None]:
    """Turn torch's CUDA out-of-memory error into MemoryError (exit 3 in every stage)."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        raise MemoryError("GPU out of memory (CUDA); lower --batch-size or use --device cpu") from exc


def disable_tf32() -> None:
    """Switch off TF32 and reduced-precision float32 matmuls for the process (see the module
    docstring: integer-rank GEMMs are exact in float32 only without them)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def check_tf32_off() -> None:
    """RuntimeError if something in the process turned TF32 or reduced precision back on."""
    import torch

    if (torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32
            or torch.get_float32_matmul_precision() != "highest"):
        raise RuntimeError("TF32 / reduced-precision float32 matmul was switched on after the backend "
                           "was created: integer-rank products would not be exact")


def resolve(device: str) -> Backend:
    """The backend of ``--device``: cpu → numpy; gpu → torch on CUDA (InputError, one line,
    without a CUDA device); auto → CUDA when torch sees one, else numpy."""
    if resolve_device(device) == "gpu":
        return TorchBackend("cuda")
    return NumpyBackend()
