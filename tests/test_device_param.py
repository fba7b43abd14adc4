"""The shared ``--device`` Param, and an example stage using it end to end.

The example is what a stage adds to use the backend: DEVICE in its contract's params (not
content: the digest is the same on every device), ``resolve(device)`` once per task, an
estimate that states its GPU bytes, ``plan_batch(..., device=backend.device_limit())`` and
the products through the backend. Outputs must be identical on every device.
"""

from __future__ import annotations

import click
import numpy as np
import pytest

from dcoex.backend import DEVICE_WORKSPACE_BYTES, Backend, NumpyBackend, TorchBackend, products_device_bytes, resolve
from dcoex.provenance import Provenance
from dcoex.ranks import IntegerRanks
from dcoex.stages.contract import StageContract
from dcoex.stages.params import BATCH_SIZE, DEVICE, FDR_ALPHA
from hpc.cli import run_command
from hpc.errors import InputError
from memfit.allocation import Allocation
from memfit.device import DeviceLimit, detect_device_limit
from memfit.estimate import PYTHON_BASELINE_BYTES, MemoryEstimate
from memfit.plan import plan_batch
from memfit.units import MiB


class _NoUpstream:
    def provenance(self, stage, gene):  # pragma: no cover - the example has no upstream
        raise AssertionError


EXAMPLE = StageContract(
    stage="xx", package="example", title="example", output="r.npy", per_gene=False, upstream=(),
    params=(FDR_ALPHA, BATCH_SIZE, DEVICE), format="dcoex.example", format_version=1,
    inputs_of=lambda values, upstream, gene: {"expression": "0" * 64},
)


def test_device_is_declared_once_not_content_and_validated():
    assert DEVICE.default == "cpu" and not DEVICE.content and DEVICE.driver  # the driver requests GPUs for it
    wanted = {d: EXAMPLE.wanted({"device": d}, _NoUpstream()) for d in ("cpu", "gpu", "auto")}
    assert "device" not in wanted["cpu"].params and "fdr_alpha" in wanted["cpu"].params
    assert len({w.digest for w in wanted.values()}) == 1
    assert isinstance(wanted["cpu"], Provenance)
    with pytest.raises(InputError) as info:
        DEVICE.value("tpu")
    assert str(info.value) == "--device 'tpu': expected one of auto, cpu, gpu"


def estimate(n: int, k: int, rows: int, backend: Backend) -> MemoryEstimate:
    """The example's peak: host ranks and r tile; the product's temporaries on the device
    when the backend is on a GPU, else on the host."""
    dtype = IntegerRanks(np.zeros((1, k))).dtype
    product = products_device_bytes(rows=rows, cols=n, inner=k, dtype=dtype)
    host = {"python": PYTHON_BASELINE_BYTES, "backend": backend.host_overhead_bytes,
            "ranks": n * k * np.dtype(dtype).itemsize, "r_tile": rows * n * 4}
    if backend.device == "cpu":
        return MemoryEstimate("xx", dict(host, product=product))
    device = {"ranks": n * k * np.dtype(dtype).itemsize, "product": product, "workspace": DEVICE_WORKSPACE_BYTES}
    return MemoryEstimate("xx", host, device_components=device)


def all_correlations(x: np.ndarray, backend: Backend, tile_rows: int) -> np.ndarray:
    """Spearman r of every row pair i < j (upper triangle; 0 elsewhere), tile by tile (rows
    [a, b) against [a, N))."""
    ranks = IntegerRanks(x)
    n = x.shape[0]
    r = np.zeros((n, n), np.float32)
    u = backend.put(ranks.u)
    buffer = backend.host_buffer(tile_rows * n, np.float32)
    for a in range(0, n, tile_rows):
        b = min(a + tile_rows, n)
        tile = buffer[: (b - a) * (n - a)].reshape(b - a, n - a)
        backend.correlations(u[a:b], u[a:], scale_left=ranks.scale[a:b], scale_right=ranks.scale[a:], out=tile)
        r[a:b, a:] = tile
    return np.triu(r, 1)


def run_example(x: np.ndarray, values: dict, backend: Backend, allocation: Allocation) -> tuple[np.ndarray, int]:
    """What the stage's runner does after parsing: plan tile rows for host and device, compute."""
    n, k = x.shape
    plan = plan_batch(values["batch_size"], lambda rows: estimate(n, k, rows, backend), n, allocation, what="tile",
                      device=backend.device_limit())
    return all_correlations(x, backend, plan.batch_size), plan.batch_size


@click.command()
@click.option("--out", required=True)
@EXAMPLE.click_options
def example_main(out: str, **values) -> None:
    """The example's CLI: --device resolved once (exit 2 in one line for gpu without CUDA)."""
    values = EXAMPLE.resolve(values)
    backend = resolve(values["device"])
    x = np.random.default_rng(0).integers(0, 5, size=(40, 30)).astype(np.float32)
    r, _ = run_example(x, values, backend, Allocation(4096 * MiB, "test", 1.0, True))
    np.save(out, r)


class FakeGpu(TorchBackend):
    """torch's CPU path posing as a GPU with ``free`` bytes of free memory (no GPU here)."""

    def __init__(self, free: int) -> None:
        super().__init__("cpu")
        self.device = "gpu"
        self._free = free

    def device_limit(self) -> DeviceLimit | None:
        return detect_device_limit(probe=lambda: (self._free, 2 * self._free), environ={}, safety=1.0)


def test_example_stage_outputs_are_identical_on_every_backend_and_fit():
    x = np.random.default_rng(5).integers(0, 4, size=(120, 40)).astype(np.float32)
    host = Allocation(4096 * MiB, "test", 1.0, True)
    want, rows_cpu = run_example(x, {"batch_size": "auto"}, NumpyBackend(), host)
    assert rows_cpu == 120
    naive = np.corrcoef(IntegerRanks(x).u.astype(np.float64))
    upper = np.triu_indices(120, 1)
    finite = np.isfinite(naive[upper])
    assert np.allclose(want[upper][finite], naive[upper][finite], atol=1e-6)
    got, rows_torch = run_example(x, {"batch_size": "auto"}, TorchBackend("cpu"), host)
    assert got.tobytes() == want.tobytes()
    # a GPU with room for the workspace, the ranks and 50 tile rows (and a few bytes)
    per_row = products_device_bytes(rows=1, cols=120, inner=40, dtype=np.float32)
    fake = FakeGpu(DEVICE_WORKSPACE_BYTES + 120 * 40 * 4 + 50 * per_row + 7)
    got, rows_gpu = run_example(x, {"batch_size": "auto"}, fake, host)
    assert rows_gpu == 50
    assert got.tobytes() == want.tobytes()


def test_example_cli_device_choices(tmp_path, monkeypatch, capsys):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    outputs = {}
    for device in ("cpu", "auto"):
        with pytest.raises(SystemExit) as done:
            run_command(example_main, ["--out", str(tmp_path / f"{device}.npy"), "--device", device], prog="xx")
        assert done.value.code == 0
        outputs[device] = np.load(tmp_path / f"{device}.npy")
    assert outputs["cpu"].tobytes() == outputs["auto"].tobytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        run_command(example_main, ["--out", str(tmp_path / "gpu.npy"), "--device", "gpu"], prog="xx")
    err = capsys.readouterr().err
    assert done.value.code == 2 and "no CUDA GPU" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "gpu.npy").exists()
