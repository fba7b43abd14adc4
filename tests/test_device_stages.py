"""The compute backend wired into stages 02a, 02b and 07: identical outputs on every device.

The GPU path is torch's code path; here it runs on torch's CPU build (``TorchBackend("cpu")``,
which gathers 02b's pairs "on the device" as CUDA does), and the tests marked ``gpu`` run
the same comparisons on CUDA where a GPU is seen (bench/gpu_check.sh). Also: 02b's fused
host kernel gives the same bits for any row block and numba thread count, ``--device gpu``
without CUDA is one line and exit 2 in every stage, and a small device limit shrinks the
planned tile without changing the output.
"""

from __future__ import annotations

import h5py
import numba
import numpy as np
import pytest
from scipy import stats
from util_stage02 import assert_same_tree, h5_tree, planted_matrix, write_inputs

from dcoex.backend import DEVICE_WORKSPACE_BYTES, Backend, NumpyBackend, TorchBackend
from dcoex.stages.s02a_base_correlations.cli import run_base, tile_device_bytes
from dcoex.stages.s02b_bootstrap_edges import kernels, science
from dcoex.stages.s02b_bootstrap_edges.cli import run_bootstrap
from dcoex.stages.s02b_bootstrap_edges.science import EdgeLayout, positions_in_group, replicate_deltas
from dcoex.stages.s07_permutation_null.cli import run_null
from hpc.cli import run_command
from memfit.device import DeviceLimit, detect_device_limit

torch = pytest.importorskip("torch")

DEVICES = [pytest.param("cpu", id="torch-cpu"),
           pytest.param("cuda", id="torch-cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
               not torch.cuda.is_available(), reason="no CUDA GPU")])]


class FakeGpu(TorchBackend):
    """torch's CPU path posing as a GPU with ``free`` bytes of free memory (no GPU here)."""

    def __init__(self, free: int) -> None:
        super().__init__("cpu")
        self.device = "gpu"
        self._free = free

    def device_limit(self) -> DeviceLimit | None:
        return detect_device_limit(probe=lambda: (self._free, 2 * self._free), environ={}, safety=1.0)


def _module_data(k_group: int, kr: int, n_boot: int, seed: int):
    """A dense module (core product), scattered edges (gathers), ties and a gene constant in
    many resamples; edges in a shuffled order."""
    rng = np.random.default_rng(seed)
    g, s = 90, 2 * k_group + 10
    x = rng.standard_normal((g, s))
    low, high = np.arange(0, k_group), np.arange(k_group + 5, 2 * k_group + 5)
    x[:60, high] += 2 * rng.standard_normal(k_group)
    x[3] = np.round(x[3])
    x[7] = 0.0
    x[7, low[:3]] = 1.0
    low_boot = low[rng.integers(0, k_group, (n_boot, kr))]
    high_boot = high[rng.integers(0, k_group, (n_boot, kr))]
    iu, ju = np.triu_indices(60, 1)
    gi = np.concatenate([iu, [60, 61, 5, 7, 70]])
    gj = np.concatenate([ju, [88, 89, 80, 75, 71]])
    order = rng.permutation(gi.size)
    args = (x[:, low], x[:, high], positions_in_group(low_boot, low), positions_in_group(high_boot, high))
    return x, low_boot, high_boot, gi[order], gj[order], args


@pytest.mark.parametrize("k_group,kr", [(20, 16), (320, 290)], ids=["float32", "float64"])
@pytest.mark.parametrize("device", DEVICES)
def test_02b_replicates_identical_on_every_backend_row_block_and_thread_count(monkeypatch, k_group, kr, device):
    x, low_boot, high_boot, gi, gj, args = _module_data(k_group, kr, n_boot=6, seed=k_group)
    genes = np.unique(np.concatenate([gi, gj]))
    layout = EdgeLayout(np.searchsorted(genes, gi), np.searchsorted(genes, gj), genes.size)
    assert layout.core_edges.size > 1000 and layout.rest_edges.size > 0
    want = replicate_deltas(*args, gene_i=gi, gene_j=gj).copy()
    ref = np.empty(want.shape)
    for b in range(low_boot.shape[0]):  # scipy's average ranks, numpy's Pearson
        with np.errstate(invalid="ignore", divide="ignore"):
            r_low = np.corrcoef(stats.rankdata(x[:, low_boot[b]], axis=1))
            r_high = np.corrcoef(stats.rankdata(x[:, high_boot[b]], axis=1))
        ref[:, b] = r_high[gi, gj] - r_low[gi, gj]
    assert np.isnan(ref).any()
    np.testing.assert_allclose(want, ref, atol=3e-6, equal_nan=True)
    got = {"torch": replicate_deltas(*args, gene_i=gi, gene_j=gj, backend=TorchBackend(device)).copy()}
    monkeypatch.setattr(science, "CORE_BLOCK_BYTES", 3 * 60 * 8)  # a few core rows per product
    for threads in (1, 2):
        kernels.set_threads(threads)
        got[f"{threads} thread(s), small row blocks"] = replicate_deltas(*args, gene_i=gi, gene_j=gj).copy()
    kernels.set_threads(numba.config.NUMBA_NUM_THREADS)
    for label, deltas in got.items():
        assert deltas.tobytes() == want.tobytes(), label


def test_02b_two_numba_threads_give_the_bits_of_one():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread here")
    *_, gi, gj, args = _module_data(20, 16, n_boot=40, seed=3)
    out = {}
    for threads in (1, 2):
        assert kernels.set_threads(threads) == threads
        out[threads] = replicate_deltas(*args, gene_i=gi, gene_j=gj).copy()
    kernels.set_threads(numba.config.NUMBA_NUM_THREADS)
    assert out[1].tobytes() == out[2].tobytes()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    x, _ = planted_matrix(n_genes=30, n_samples=80, seed=6, module_size=5)
    folder = tmp_path_factory.mktemp("device_stages")
    expr, idx = write_inputs(folder, x, n_bootstrap=12)
    return folder, expr, idx


def _base(folder, expr, idx, name: str, backend: Backend | str) -> dict:
    return run_base(str(expr), str(idx), str(folder / name), fdr_alpha=0.5, batch_size="auto", exact_q=False,
                    selection={"gene_range": "0:4"}, device=backend)


def _trees(folder, name: str) -> dict:
    return {p.name: h5_tree(p) for p in sorted((folder / name).glob("*.h5"))}


def _same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b) and a
    for name in a:
        assert_same_tree(a[name], b[name])


@pytest.mark.parametrize("device", DEVICES)
def test_02a_02b_and_07_outputs_are_identical_with_the_torch_backend(small_run, device):
    folder, expr, idx = small_run
    backend = TorchBackend(device)
    _base(folder, expr, idx, "base_cpu", "cpu")
    _base(folder, expr, idx, f"base_{device}", backend)
    _same(_trees(folder, "base_cpu"), _trees(folder, f"base_{device}"))
    boots = {}
    for label, dev in (("cpu", "cpu"), (device, backend)):
        run_bootstrap(str(expr), str(idx), str(folder / "base_cpu"), str(folder / f"boot_{label}"),
                      edge_selection="sig_differential", ci_alpha=0.05, fdr_alpha=None, n_bootstrap=None,
                      batch_size=7, store_replicates=True, selection={"gene_range": "0:4"}, device=dev)
        boots[label] = _trees(folder, f"boot_{label}")
    _same(boots["cpu"], boots[device])
    assert sum(int(t["meta@n_sig_edges"]) for t in boots["cpu"].values()) > 20
    values = {"n_permutations": 3, "perms_per_task": 2, "fdr_alpha": 0.5, "seed": 5}
    run_null(expr, idx, folder / "null_cpu", values=values)
    run_null(expr, idx, folder / f"null_{device}", values=values, backend=backend)
    _same(_trees(folder, "null_cpu"), _trees(folder, f"null_{device}"))


def test_a_small_device_limit_shrinks_the_02a_tile_not_the_output(small_run):
    folder, expr, idx = small_run
    host = _base(folder, expr, idx, "base_fit_cpu", NumpyBackend())
    with h5py.File(idx, "r") as f:
        k_low, k_high = f["indices/low"].shape[1], f["indices/high"].shape[1]
    room = sum(tile_device_bytes(30, k_low=k_low, k_high=k_high, tile_rows=5).values())
    fitted = _base(folder, expr, idx, "base_fit_gpu", FakeGpu(DEVICE_WORKSPACE_BYTES + room + 3))
    assert host["tile_rows"] == 29 and fitted["tile_rows"] == 5
    _same(_trees(folder, "base_fit_cpu"), _trees(folder, "base_fit_gpu"))


@pytest.mark.parametrize("stage", ["02a", "02b", "07"])
def test_device_gpu_without_cuda_is_one_line_and_exit_2(small_run, monkeypatch, capsys, stage):
    folder, expr, idx = small_run
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = folder / f"gpu_{stage}"
    if stage == "02a":
        from dcoex.stages.s02a_base_correlations.cli import main
        args = ["--expr-h5", expr, "--indices-h5", idx, "--out-dir", out, "--gene-index", 0]
    elif stage == "02b":
        from dcoex.stages.s02b_bootstrap_edges.cli import main
        _base(folder, expr, idx, "base_for_gpu", "cpu")
        args = ["--expr-h5", expr, "--indices-h5", idx, "--base-dir", folder / "base_for_gpu", "--out-dir", out,
                "--gene-index", 0]
    else:
        from dcoex.stages.s07_permutation_null.cli import main
        args = ["--expr-h5", expr, "--indices-h5", idx, "--out-dir", out, "--n-permutations", 2]
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        run_command(main, [str(a) for a in [*args, "--device", "gpu"]], prog=stage)
    err = capsys.readouterr().err
    assert done.value.code == 2 and "no CUDA GPU" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not list(out.glob("*.h5"))


@pytest.mark.parametrize("n_boot", [7, 129, 1000, 9000])
def test_02b_statistics_have_numpys_bits_on_one_and_two_threads(n_boot):
    """kernels.row_moments sums in numpy's pairwise order: mean and sd equal numpy's float64
    sums of the finite values bit for bit, and the statistics do not depend on the threads."""
    rng = np.random.default_rng(n_boot)
    by_replicate = (rng.standard_normal((n_boot, 300)) * rng.choice([1e-4, 0.1, 1.0], 300)).astype(np.float32)
    by_replicate[rng.random(by_replicate.shape) < 0.03] = np.nan
    by_replicate[:, 4] = np.nan
    deltas, base = by_replicate.T, rng.standard_normal(300).astype(np.float32)
    got = {}
    for threads in (1, 2):
        kernels.set_threads(threads)
        got[threads] = science.boot_stats(deltas, base, 0.05)
    kernels.set_threads(numba.config.NUMBA_NUM_THREADS)
    for name in science.BootStats.__dataclass_fields__:
        assert getattr(got[1], name).tobytes() == getattr(got[2], name).tobytes(), name
    rows = np.ascontiguousarray(deltas)
    finite = np.isfinite(rows)
    n = finite.sum(axis=1)
    mean = np.where(finite, rows, 0).sum(axis=1, dtype=np.float64) / np.maximum(n, 1)
    centred = np.where(finite, rows - mean[:, None].astype(np.float32), 0)
    sd = np.sqrt(np.square(centred).sum(axis=1, dtype=np.float64) / np.maximum(n - 1, 1))
    ok = n >= 2
    assert np.array_equal(got[1].delta_mean[ok], mean[ok].astype(np.float32))
    assert np.array_equal(got[1].delta_std[ok], sd[ok].astype(np.float32))
    assert np.isnan(got[1].delta_mean[4]) and got[1].n_finite[4] == 0
    for e in np.flatnonzero(ok)[:20]:  # numpy's percentile of the finite replicates
        values = rows[e][finite[e]].astype(np.float64)
        assert got[1].ci_low[e] == np.float32(np.percentile(values, 2.5))
        assert got[1].ci_high[e] == np.float32(np.percentile(values, 97.5))
