"""Stage 00 memory: estimator vs measured peak RSS; memory does not scale with N x S."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from dcoex.stages import get_estimator

ROOT = Path(__file__).resolve().parents[1]
PEAK_RSS = ROOT / "bench" / "peak_rss.py"


def _write_tsv(path: Path, n_genes: int, n_samples: int) -> Path:
    rng = np.random.default_rng(0)
    with open(path, "w") as handle:
        handle.write("gene\t" + "\t".join(f"s{j}" for j in range(n_samples)) + "\n")
        for start in range(0, n_genes, 1000):
            block = rng.normal(5, 1, size=(min(1000, n_genes - start), n_samples))
            for i, row in enumerate(block):
                handle.write(f"g{start + i}\t" + "\t".join(f"{v:.4f}" for v in row) + "\n")
    return path


def _measure(tmp_path: Path, tsv: Path) -> tuple[int, dict]:
    out, record = tmp_path / f"{tsv.stem}.h5", tmp_path / f"{tsv.stem}.peak.json"
    done = subprocess.run([sys.executable, str(PEAK_RSS), str(record), "dcoex.stages.s00_convert",
                           "--expr-tsv", str(tsv), "--out-h5", str(out), "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(record.read_text())["peak_rss_bytes"], json.loads(Path(str(out) + ".memory.json").read_text())


def test_estimate_matches_measured_and_memory_does_not_follow_the_matrix(tmp_path):
    small = _write_tsv(tmp_path / "small.tsv", 300, 400)
    big = _write_tsv(tmp_path / "big.tsv", 6000, 400)  # 20x the cells
    peak_small, side_small = _measure(tmp_path, small)
    peak_big, side_big = _measure(tmp_path, big)
    for peak, side in ((peak_small, side_small), (peak_big, side_big)):
        assert 0.85 <= side["estimate_bytes"] / peak <= 1.4, (side["estimate"], peak)
    matrix_growth = (6000 - 300) * 400 * 4  # what holding the float32 matrix would add
    assert peak_big - peak_small < 0.5 * matrix_growth + 8 * 2**20
    assert get_estimator("00")(n_samples=400, n_genes=6000).total_bytes == side_big["estimate_bytes"]
