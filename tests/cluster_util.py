"""Helpers for tests that need the real SLURM / SGE test clusters (tests/cluster/*_up.sh).

``require_cluster("slurm")`` skips the test with the reason the cluster is not running
(read from clusters_up.sh's status file) — or fails it under ``CI=true``, where the
clusters must run. The ``slurm_cluster`` / ``sge_cluster`` fixtures do the same; import
them into a test module (``from cluster_util import slurm_cluster``).
Also: a small synthetic dataset, a driver runner, and waiting for a run to finish.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STATUS_DIR = Path(os.environ.get("DCOEX_CLUSTER_STATUS_DIR", "/tmp/dcoex-clusters"))
DRIVERS = {"slurm": ROOT / "src/SLURM_scripts/run_bootstrap_pipeline.sh",
           "sge": ROOT / "src/SGE_scripts/run_bootstrap_pipeline.sh"}
_PROBES = {"slurm": (["scontrol", "ping"], ["sinfo", "-h", "-o", "%T"]),
           "sge": (["qstat", "-f"], ["qconf", "-sql"])}


def cluster_status(name: str) -> tuple[bool, str]:
    """(running, reason) for "slurm" or "sge"."""
    tool = _PROBES[name][0][0]
    if shutil.which(tool) is None:
        return False, _status_text(name) or f"{tool} not installed (run tests/cluster/clusters_up.sh as root)"
    for probe in _PROBES[name]:
        try:
            done = subprocess.run(probe, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"{' '.join(probe)}: {exc}"
        if done.returncode != 0:
            return False, _status_text(name) or f"{name} not running ({' '.join(probe)} failed)"
    if name == "slurm" and not any(s in done.stdout for s in ("idle", "mixed", "allocated")):
        return False, f"slurm node not up: {done.stdout.strip()}"
    return True, ""


def _status_text(name: str) -> str:
    path = STATUS_DIR / f"{name}.status"
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def require_cluster(name: str) -> None:
    running, reason = cluster_status(name)
    if running:
        return
    message = f"{name.upper()} test cluster not available: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI=true: the clusters must run)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    require_cluster("slurm")
    return "slurm"


@pytest.fixture(scope="session")
def sge_cluster() -> str:
    require_cluster("sge")
    return "sge"


def write_dataset(path: Path, n_genes: int = 40, n_samples: int = 60, seed: int = 1) -> Path:
    """A small genes × samples TSV: Gaussian noise plus gene pairs that co-vary only where
    a modulator gene is high (so every stage has edges to work on)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    expr = rng.normal(8.0, 1.0, size=(n_genes, n_samples))
    for modulator in (0, 1):
        high = expr[modulator] > np.quantile(expr[modulator], 0.7)
        for pair in range(4):
            i, j = 2 + 8 * modulator + 2 * pair, 3 + 8 * modulator + 2 * pair
            if j >= n_genes:
                break
            factor = rng.normal(size=n_samples) * high
            expr[i] += 2.5 * factor
            expr[j] += 2.5 * factor
    lines = ["gene_id\t" + "\t".join(f"S{s:02d}" for s in range(n_samples))]
    lines += [f"G{g:02d}\t" + "\t".join(f"{v:.5f}" for v in row) for g, row in enumerate(expr)]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_driver(scheduler: str, args: list[str], env: dict | None = None, timeout: float = 120
               ) -> subprocess.CompletedProcess:
    """Run a driver script (``scheduler`` slurm or sge) with the project's Python."""
    full_env = dict(os.environ, DCOEX_PYTHON=sys.executable, **(env or {}))
    return subprocess.run(["bash", str(DRIVERS[scheduler]), *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def wait_for_run(out_dir: Path, timeout: float = 240) -> dict:
    """Wait until the run's manifest says complete or failed; return the manifest."""
    path = Path(out_dir) / "run_manifest.json"
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            manifest = {}
        if manifest.get("status") in ("complete", "failed"):
            return manifest
        time.sleep(1)
    logs = sorted((Path(out_dir) / "logs").glob("*.log"))
    tails = "\n".join(f"--- {p.name}\n" + p.read_text(errors="replace")[-600:] for p in logs[-6:])
    raise AssertionError(f"run in {out_dir} did not finish within {timeout:.0f} s\n{tails}")


def h5_outputs(out_dir: Path) -> list[Path]:
    """Every HDF5 output of a run, relative to its folder (excluding the driver's state)."""
    return sorted(p.relative_to(out_dir) for p in Path(out_dir).rglob("*.h5") if ".dcoex" not in p.parts)


def assert_same_outputs(reference: Path, other: Path) -> None:
    """Every dataset equal (h5diff, ignoring the /memfit measurement group) and the same TSV."""
    ref_files, other_files = h5_outputs(reference), h5_outputs(other)
    assert ref_files == other_files
    assert len(ref_files) > 3
    h5diff = shutil.which("h5diff")
    for rel in ref_files:
        if h5diff:
            done = subprocess.run([h5diff, "--exclude-path", "/memfit", str(reference / rel), str(other / rel)],
                                  capture_output=True, text=True)
            assert done.returncode == 0, f"{rel} differs:\n{done.stdout[-2000:]}{done.stderr[-500:]}"
        else:
            _compare_h5(reference / rel, other / rel)
    assert (reference / "rewiring_hubs.tsv").read_bytes() == (other / "rewiring_hubs.tsv").read_bytes()


def _compare_h5(a: Path, b: Path) -> None:
    import h5py
    import numpy as np

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names_a, names_b = [], []
        fa.visit(lambda n: names_a.append(n) if not n.startswith("memfit") else None)
        fb.visit(lambda n: names_b.append(n) if not n.startswith("memfit") else None)
        assert sorted(names_a) == sorted(names_b), a
        for n in names_a:
            if isinstance(fa[n], h5py.Dataset):
                np.testing.assert_array_equal(fa[n][()], fb[n][()], err_msg=f"{a}:{n}")
