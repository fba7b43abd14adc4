"""dcoex.backend: the exact integer-rank GEMMs give the same bits on numpy and torch.

References are independent of both backends: int64 integer products (exact by construction)
and scipy's Spearman r of the resampled columns. The torch backend runs on the CPU build
here; the same tests run on CUDA where torch sees a GPU (marker ``gpu``).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata, spearmanr

from dcoex.backend import (
    NumpyBackend,
    TorchBackend,
    check_tf32_off,
    products_device_bytes,
    resolve,
)
from dcoex.ranks import IntegerRanks, exact_dtype
from hpc.errors import InputError

torch = pytest.importorskip("torch")

CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="no CUDA GPU")])]


@pytest.fixture(params=DEVICES)
def torch_backend(request):
    return TorchBackend(request.param)


def tied_values(rng, n: int, k: int) -> np.ndarray:
    """Expression with many ties (a few levels per gene), one constant row."""
    x = rng.integers(0, 6, size=(n, k)).astype(np.float32)
    x[n // 2] = 3.0
    return x


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def int_ranks(u: np.ndarray) -> np.ndarray:
    assert np.array_equal(u, np.round(u))
    return u.astype(np.int64)


@pytest.mark.parametrize(("n", "k", "dtype"), [(57, 25, np.float32), (31, 300, np.float64)])
def test_02a_tiles_match_numpy_and_integers(torch_backend, n, k, dtype):
    ranks = IntegerRanks(tied_values(np.random.default_rng(k), n, k))
    assert ranks.dtype == dtype  # k(k-1)^2 >= 2^24 needs float64 (k = 300)
    exact = int_ranks(ranks.u)
    reference = NumpyBackend()
    u_dev = torch_backend.put(ranks.u)
    for a in range(0, n - 1, 16):
        b = min(a + 16, n - 1)
        want = (exact[a:b] @ exact[a:].T).astype(dtype)
        got_np = reference.products(ranks.u[a:b], ranks.u[a:])
        got_torch = torch_backend.products(u_dev[a:b], u_dev[a:])
        assert same_bits(got_np, want) and same_bits(got_torch, want)
        r_want = want.astype(np.float32)
        r_want *= ranks.scale[a:b, None]
        r_want *= ranks.scale[None, a:]
        r_np = reference.correlations(ranks.u[a:b], ranks.u[a:], scale_left=ranks.scale[a:b],
                                      scale_right=ranks.scale[a:])
        r_torch = torch_backend.correlations(u_dev[a:b], u_dev[a:], scale_left=ranks.scale[a:b],
                                             scale_right=ranks.scale[a:])
        assert same_bits(r_np, r_want) and same_bits(r_torch, r_want)


def test_tile_r_is_spearman(torch_backend):
    x = tied_values(np.random.default_rng(1), 12, 25)
    ranks = IntegerRanks(x)
    r = torch_backend.correlations(ranks.u, ranks.u, scale_left=ranks.scale, scale_right=ranks.scale)
    for i, j in [(0, 1), (2, 9), (4, 11)]:
        assert r[i, j] == pytest.approx(spearmanr(x[i], x[j])[0], abs=1e-6)


def resample_ranks(x: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Naive 02b inputs: u (B, g, k) = 2·rank − (k_r+1) of each value within each resample
    (undrawn positions 0) and counts (B, k)."""
    g, k = x.shape
    n_boot, kr = positions.shape
    u = np.zeros((n_boot, g, k))
    counts = np.zeros((n_boot, k))
    for b in range(n_boot):
        np.add.at(counts[b], positions[b], 1)
        for i in range(g):
            rank = rankdata(x[i, positions[b]])  # average ranks over the k_r resampled columns
            u[b, i, positions[b]] = 2 * rank - (kr + 1)
    return u, counts


@pytest.mark.parametrize(("k", "kr"), [(30, 24), (320, 260)])
def test_02b_weighted_replicates_match(torch_backend, k, kr):
    rng = np.random.default_rng(kr)
    g, n_boot = 9, 6
    x = tied_values(rng, g, k)
    positions = rng.integers(0, k, size=(n_boot, kr))
    u, counts = resample_ranks(x, positions)
    dtype = exact_dtype(kr, kr - 1)
    assert dtype == (np.float32 if kr < 256 else np.float64)
    u, counts = u.astype(dtype), counts.astype(dtype)
    # independent reference: Σ over the k_r resampled columns, integers
    cols = np.stack([int_ranks(u[b][:, positions[b]]) for b in range(n_boot)])
    want = np.einsum("bip,bjp->bij", cols, cols).astype(dtype)
    got_np = NumpyBackend().products(u, u, weights=counts)
    got_torch = torch_backend.products(u, u, weights=counts)
    assert same_bits(got_np, want) and same_bits(got_torch, want)
    # the edges 02b keeps: gathered pairs, scaled; constant-in-resample genes give NaN
    with np.errstate(divide="ignore"):
        squares = np.einsum("bii->bi", want.astype(np.float64))
        scale = np.where(squares > 0, 1 / np.sqrt(squares), np.nan).astype(np.float32)
    rows, cols_ = np.triu_indices(g, 1)
    r_np = NumpyBackend().correlations(u, u, scale_left=scale, scale_right=scale, weights=counts, pairs=(rows, cols_))
    r_torch = torch_backend.correlations(u, u, scale_left=scale, scale_right=scale, weights=counts,
                                         pairs=(rows, cols_))
    assert r_np.shape == (n_boot, rows.size)
    assert np.isnan(r_np).any()  # the constant row
    assert same_bits(r_np, r_torch)
    for b in range(n_boot):
        for e in range(rows.size):
            xi, xj = x[rows[e], positions[b]], x[cols_[e], positions[b]]
            if np.ptp(xi) == 0 or np.ptp(xj) == 0:
                assert np.isnan(r_np[b, e])
            else:
                assert r_np[b, e] == pytest.approx(spearmanr(xi, xj)[0], abs=1e-6)


def test_permutation_null_batches_match(torch_backend):
    rng = np.random.default_rng(7)
    x = tied_values(rng, 20, 60)
    n_perm, k = 5, 15
    splits = np.stack([np.sort(rng.permutation(60)[:k]) for _ in range(n_perm)])
    u = np.stack([IntegerRanks(x[:, s]).u for s in splits])  # (P, n, k)
    exact = int_ranks(u)
    want = np.matmul(exact, exact.transpose(0, 2, 1)).astype(np.float32)
    assert same_bits(NumpyBackend().products(u, u), want)
    assert same_bits(torch_backend.products(u, u), want)


def test_results_can_stay_on_the_device(torch_backend):
    u = IntegerRanks(tied_values(np.random.default_rng(3), 10, 25)).u
    kept = torch_backend.products(u, u, host=False)
    assert isinstance(kept, torch.Tensor)
    out = torch_backend.host_buffer(kept.shape, np.float32)
    assert same_bits(torch_backend.to_host(kept, out), NumpyBackend().products(u, u))


def test_factors_must_share_an_exact_dtype():
    u32 = np.zeros((3, 4), np.float32)
    for backend in (NumpyBackend(), TorchBackend("cpu")):
        with pytest.raises(ValueError, match="float32 or float64"):
            backend.products(u32, u32.astype(np.float64))
        with pytest.raises(ValueError, match="float32 or float64"):
            backend.products(u32.astype(np.float16), u32.astype(np.float16))


def test_resolve_cpu_and_auto_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert isinstance(resolve("cpu"), NumpyBackend)
    assert isinstance(resolve("auto"), NumpyBackend)
    assert resolve("cpu").device_limit() is None


def test_resolve_gpu_without_cuda_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError) as info:
        resolve("gpu")
    assert "no CUDA GPU" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(InputError, match="auto, cpu or gpu"):
        resolve("tpu")


@pytest.fixture
def restore_precision():
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
    torch.set_float32_matmul_precision(saved[2])


def test_tf32_is_off_after_creating_the_backend(restore_precision):
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("medium")
    backend = TorchBackend("cpu")
    assert torch.backends.cuda.matmul.allow_tf32 is False
    assert torch.backends.cudnn.allow_tf32 is False
    assert torch.get_float32_matmul_precision() == "highest"
    check_tf32_off()
    torch.backends.cuda.matmul.allow_tf32 = True  # another library turns it back on
    u = np.ones((2, 3), np.float32)
    with pytest.raises(RuntimeError, match="TF32"):
        backend.products(u, u)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="no CUDA GPU")
def test_resolve_gpu_is_cuda_with_tf32_off_and_a_device_limit(restore_precision):
    torch.backends.cuda.matmul.allow_tf32 = True
    backend = resolve("gpu")
    assert backend.name == "torch-cuda" and backend.device == "gpu"
    assert torch.backends.cuda.matmul.allow_tf32 is False
    limit = backend.device_limit()
    assert limit is not None and 0 < limit.limit_bytes <= limit.total_bytes


def test_cuda_out_of_memory_is_memory_error(monkeypatch):
    backend = TorchBackend("cpu")

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(torch, "matmul", out_of_memory)
    u = np.ones((2, 3), np.float32)
    with pytest.raises(MemoryError, match="GPU out of memory"):
        backend.products(u, u)


def test_device_bytes_of_a_product():
    # float64 tile 4 x 10 over 7 samples: product 320 B + float32 r 160 B + NaN mask 40 B
    assert products_device_bytes(rows=4, cols=10, inner=7, dtype=np.float64) == 320 + 160 + 40
    # float32, 3 replicates, weighted: product 480 + weighted left 336 + mask 120 (r is the product)
    weighted = products_device_bytes(rows=4, cols=10, inner=7, dtype=np.float32, batch=3, weighted=True)
    assert weighted == 3 * 40 * 4 + 3 * 4 * 7 * 4 + 3 * 40
    # 6 gathered pairs: + gathered 72, indices 96, gathered scales 144, mask 18
    gathered = products_device_bytes(rows=4, cols=10, inner=7, dtype=np.float32, batch=3, n_pairs=6)
    assert gathered == 3 * 40 * 4 + 18 * 4 + 2 * 6 * 8 + 18 * 8 + 18


def test_unexact_dtypes_are_refused_for_torch_too():
    t = torch.zeros((2, 3), dtype=torch.bfloat16)
    with pytest.raises(ValueError):
        TorchBackend("cpu").products(t, t)


def test_auto_on_a_node_without_the_nvidia_driver_does_not_import_torch():
    """``--device auto`` on a CPU node resolves to numpy without importing torch (its import
    alone is ~130 MiB of RSS that the stages' host estimates do not hold)."""
    import subprocess
    import sys

    from hpc.device import nvidia_driver_present

    if nvidia_driver_present():
        pytest.skip("the NVIDIA driver is present here")
    code = "import sys; from dcoex.backend import resolve; print(resolve('auto').name, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["numpy", "False"]
