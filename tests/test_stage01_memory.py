"""Stage 01 memory: estimator vs measured peak RSS, and --batch-size auto under a limit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from dcoex.expression_store import write_expression
from dcoex.stages import get_estimator
from dcoex.stages.s01_bootstrap_indices.cli import main
from hpc.cli import run_command
from hpc.errors import EXIT_OUT_OF_MEMORY

ROOT = Path(__file__).resolve().parents[1]
PEAK_RSS = ROOT / "bench" / "peak_rss.py"


def _store(path: Path, n_genes: int, n_samples: int) -> Path:
    matrix = np.random.default_rng(1).normal(size=(n_genes, n_samples)).astype(np.float32)
    write_expression(path, matrix, [f"g{i}" for i in range(n_genes)], [f"s{j}" for j in range(n_samples)])
    return path


def _params(n_genes, n_samples, n_bootstrap, batch, threads):
    k = int(n_samples * 0.2 + 1e-9)
    kr = int(k * 0.8 + 1e-9)
    return dict(n_genes=n_genes, n_samples=n_samples, n_bootstrap=n_bootstrap, k_low=k, k_high=k,
                kr_low=kr, kr_high=kr, batch_size=batch, threads=threads)


def test_estimator_is_pure_and_monotone():
    estimate = get_estimator("01")
    small = estimate(**_params(8763, 938, 1000, 50, 2))
    large = estimate(**_params(8763, 938, 1000, 8763, 2))
    assert small.total_bytes < large.total_bytes
    assert set(small.components) >= {"python", "expr_batch", "bootstrap_pipeline"}
    assert estimate(**_params(8763, 938, 1000, 50, 2)).to_dict() == small.to_dict()
    tsv = estimate(**_params(8763, 938, 1000, 50, 2), input_kind="tsv")
    assert tsv.components["tsv_matrix"] == 2 * 8763 * 938 * 4
    # the production shape fits the targets on paper: <= 1 GB at any batch size
    assert large.total_bytes < 1e9


@pytest.mark.parametrize("n_genes,n_samples,n_bootstrap,batch,threads", [
    (300, 938, 200, "all", 2),
    (300, 938, 1000, "1", 1),
    (600, 500, 500, "60", 2),
])
def test_estimate_matches_measured_peak(tmp_path, *, n_genes, n_samples, n_bootstrap, batch, threads):
    store = _store(tmp_path / "e.h5", n_genes, n_samples)
    out = tmp_path / "bi.h5"
    record = tmp_path / "peak.json"
    done = subprocess.run(
        [sys.executable, str(PEAK_RSS), str(record), "dcoex.stages.s01_bootstrap_indices", "--in-h5", str(store),
         "--out-h5", str(out), "--n-bootstrap", str(n_bootstrap), "--batch-size", batch,
         "--threads", str(threads), "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    measured = json.loads(record.read_text())["peak_rss_bytes"]
    sidecar = json.loads(Path(str(out) + ".memory.json").read_text())
    ratio = sidecar["estimate_bytes"] / measured
    assert 0.85 <= ratio <= 1.4, (ratio, sidecar["estimate"]["components"], measured)


def test_auto_batch_fits_the_limit(tmp_path, capsys, monkeypatch):
    n_genes, n_samples, n_bootstrap = 400, 938, 20
    store = _store(tmp_path / "e.h5", n_genes, n_samples)
    estimate = get_estimator("01")
    target = 150
    limit = int(estimate(**_params(n_genes, n_samples, n_bootstrap, target, 2)).total_bytes / 0.7) + 1
    monkeypatch.setenv("MEMFIT_MEM_LIMIT", str(limit))
    monkeypatch.delenv("MEMFIT_SAFETY", raising=False)
    out = tmp_path / "bi.h5"
    with pytest.raises(SystemExit) as exited:
        run_command(main, ["--in-h5", str(store), "--out-h5", str(out), "--n-bootstrap", str(n_bootstrap),
                           "--batch-size", "auto", "--threads", "2", "--quiet"])
    assert exited.value.code == 0, capsys.readouterr().err
    sidecar = json.loads(Path(str(out) + ".memory.json").read_text())
    usable = sidecar["allocation"]["usable_bytes"]
    assert sidecar["limit_source"] == "override:MEMFIT_MEM_LIMIT" and sidecar["limit_bytes"] == limit
    chosen = sidecar["batch_size"]
    # independently: the largest batch whose estimate fits 0.7 x limit
    fitting = [b for b in range(1, n_genes + 1)
               if estimate(**_params(n_genes, n_samples, n_bootstrap, b, 2)).total_bytes <= 0.7 * limit]
    assert chosen == max(fitting) and 1 < chosen < n_genes
    assert abs(chosen - target) <= 1
    assert sidecar["estimate_bytes"] <= usable
    with h5py.File(out) as f:
        assert f["meta"].attrs["processing_mode"] == f"batch_{chosen}"


def test_explicit_batch_over_limit_warns_but_runs(tmp_path, capsys, monkeypatch):
    store = _store(tmp_path / "e.h5", 50, 100)
    monkeypatch.setenv("MEMFIT_MEM_LIMIT", "70M")
    out = tmp_path / "bi.h5"
    with pytest.raises(SystemExit) as exited:
        run_command(main, ["--in-h5", str(store), "--out-h5", str(out), "--n-bootstrap", "5",
                           "--batch-size", "all", "--quiet"])
    assert exited.value.code == 0
    assert "warning" in capsys.readouterr().err and out.exists()


def test_nothing_fits_exits_3_without_output(tmp_path, capsys, monkeypatch):
    store = _store(tmp_path / "e.h5", 50, 100)
    monkeypatch.setenv("MEMFIT_MEM_LIMIT", "20M")
    out = tmp_path / "bi.h5"
    with pytest.raises(SystemExit) as exited:
        run_command(main, ["--in-h5", str(store), "--out-h5", str(out), "--n-bootstrap", "5", "--quiet"])
    assert exited.value.code == EXIT_OUT_OF_MEMORY
    err = capsys.readouterr().err
    assert "memory estimate for stage 01" in err and "not even a batch of 1 fits" in err
    assert not out.exists() and not list(tmp_path.glob(".bi.h5*"))
