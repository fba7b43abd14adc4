"""Stage 01: groups and bootstrap indices (docs/design.md §4.1), batch invariance, bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from dcoex.expression_store import content_sha256, write_expression
from dcoex.stages.s01_bootstrap_indices.cli import main
from hpc.cli import run_command

ROOT = Path(__file__).resolve().parents[1]
SHIM = ROOT / "src" / "scripts" / "01subset" / "01get_extreme_pop_bootstrap.py"
DATASETS = ("indices/low", "indices/high", "indices/low_boot", "indices/high_boot")


def _store(path: Path, n_genes=130, n_samples=40, seed=3, ties=True) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(n_genes, n_samples)).astype(np.float32)
    if ties:  # rounded values: many ties, so the tie rule matters
        matrix[::3] = np.round(matrix[::3], 0)
    genes = [f"g{i}" for i in range(n_genes)]
    samples = [f"s{j}" for j in range(n_samples)]
    write_expression(path, matrix, genes, samples)
    return path, matrix


def _run(args, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        run_command(main, [str(a) for a in args])
    return exited.value.code, capsys.readouterr().err


def _read(path: Path) -> dict:
    with h5py.File(path) as f:
        data = {name: f[name][()] for name in DATASETS}
        data["meta"] = dict(f["meta"].attrs)
        data["chunks"] = {name: f[name].chunks for name in DATASETS}
        data["dtypes"] = {name: f[name].dtype for name in DATASETS}
    return data


def _reference_gene(row: np.ndarray, gene: int, *, seed: int, n_boot: int, low_frac=0.2, high_frac=0.2, boot_frac=0.8):
    """docs/design.md §4.1 written out independently: stable sort, per-gene SeedSequence draws."""
    n_samples = row.shape[0]
    k_low, k_high = int(np.floor(n_samples * low_frac + 1e-9)), int(np.floor(n_samples * high_frac + 1e-9))
    kr_low, kr_high = int(np.floor(k_low * boot_frac + 1e-9)), int(np.floor(k_high * boot_frac + 1e-9))
    # stable ascending order, ties by sample index: sort on (value, index) pairs
    order = sorted(range(n_samples), key=lambda s: (float(row[s]), s))
    low = np.array(sorted(order[:k_low]), dtype=np.int32)
    high = np.array(sorted(order[n_samples - k_high:]), dtype=np.int32)
    seq = np.random.SeedSequence(seed, spawn_key=(gene,))
    gen = np.random.Generator(np.random.PCG64(seq))
    low_pos = gen.integers(0, k_low, size=(n_boot, kr_low), dtype=np.int32)
    high_pos = gen.integers(0, k_high, size=(n_boot, kr_high), dtype=np.int32)
    low_boot = np.array([[low[p] for p in rep] for rep in low_pos], dtype=np.int32)
    high_boot = np.array([[high[p] for p in rep] for rep in high_pos], dtype=np.int32)
    return low, high, low_boot, high_boot


@pytest.fixture(scope="module")
def batch_outputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("s01")
    store, matrix = _store(folder / "expression.h5")
    outputs = {}
    for batch in ("1", "7", "100", "all"):
        out = folder / f"bi_{batch}.h5"
        with pytest.raises(SystemExit) as exited:
            run_command(main, ["--in-h5", str(store), "--out-h5", str(out), "--n-bootstrap", "25",
                               "--batch-size", batch, "--seed", "11", "--quiet"])
        assert exited.value.code == 0
        outputs[batch] = _read(out)
    return store, matrix, outputs


def test_batch_size_invariance(batch_outputs):
    _, _, outputs = batch_outputs
    reference = outputs["all"]
    for batch in ("1", "7", "100"):
        for name in DATASETS:
            np.testing.assert_array_equal(outputs[batch][name], reference[name], err_msg=f"{name} batch {batch}")
    assert reference["meta"]["processing_mode"] == "vectorized"
    assert outputs["7"]["meta"]["processing_mode"] == "batch_7"
    assert outputs["100"]["meta"]["processing_mode"] == "batch_100"
    assert outputs["1"]["meta"]["processing_mode"] == "batch_1"


def test_layout_and_meta(batch_outputs):
    store, matrix, outputs = batch_outputs
    data = outputs["all"]
    n_genes, n_samples = matrix.shape  # 130 x 40: k = 8, k_r = 6
    assert data["indices/low"].shape == (n_genes, 8) and data["indices/high"].shape == (n_genes, 8)
    assert data["indices/low_boot"].shape == (n_genes, 25, 6)
    assert data["indices/high_boot"].shape == (n_genes, 25, 6)
    assert all(dt == np.int32 for dt in data["dtypes"].values())
    assert data["chunks"]["indices/low_boot"] == (1, 25, 6)
    assert data["chunks"]["indices/low"] == (1, 8)
    meta = data["meta"]
    assert meta["seed"] == 11 and meta["n_bootstrap"] == 25
    assert meta["low_frac"] == 0.2 and meta["high_frac"] == 0.2 and meta["bootstrap_frac"] == 0.8
    assert "SeedSequence" in meta["rng_scheme"] and "PCG64" in meta["rng_scheme"]
    genes = [f"g{i}" for i in range(n_genes)]
    samples = [f"s{j}" for j in range(n_samples)]
    assert meta["expr_content_sha256"] == content_sha256(matrix, genes, samples)
    assert (np.diff(data["indices/low"], axis=1) > 0).all()  # ascending, distinct
    assert (np.diff(data["indices/high"], axis=1) > 0).all()


@pytest.mark.parametrize("gene", [0, 3, 77, 129])
def test_independent_rederivation_of_one_gene(batch_outputs, gene):
    _, matrix, outputs = batch_outputs
    data = outputs["7"]
    low, high, low_boot, high_boot = _reference_gene(matrix[gene], gene, seed=11, n_boot=25)
    np.testing.assert_array_equal(data["indices/low"][gene], low)
    np.testing.assert_array_equal(data["indices/high"][gene], high)
    np.testing.assert_array_equal(data["indices/low_boot"][gene], low_boot)
    np.testing.assert_array_equal(data["indices/high_boot"][gene], high_boot)


def test_groups_are_the_extremes(batch_outputs):
    _, matrix, outputs = batch_outputs
    data = outputs["all"]
    for g in range(matrix.shape[0]):
        row = matrix[g]
        low, high = data["indices/low"][g], data["indices/high"][g]
        rest_low = np.setdiff1d(np.arange(row.size), low)
        rest_high = np.setdiff1d(np.arange(row.size), high)
        assert row[low].max() <= row[rest_low].min()
        assert row[high].min() >= row[rest_high].max()
        assert np.isin(data["indices/low_boot"][g], low).all()
        assert np.isin(data["indices/high_boot"][g], high).all()


@pytest.mark.parametrize("extra", [
    ["--threads", "1"], ["--threads", "3", "--batch-size", "5"], ["--compression", "none"],
    ["--compression", "lzf"], ["--deflate-strategy", "rle"], ["--deflate-strategy", "default", "--compression-level", "4"],
])
def test_threads_and_filters_do_not_change_content(batch_outputs, tmp_path, capsys, extra):
    store, _, outputs = batch_outputs
    out = tmp_path / "x.h5"
    code, err = _run(["--in-h5", store, "--out-h5", out, "--n-bootstrap", "25", "--seed", "11", "--quiet", *extra], capsys)
    assert code == 0, err
    data = _read(out)
    for name in DATASETS:
        np.testing.assert_array_equal(data[name], outputs["all"][name])


def test_tsv_input_matches_h5_input(batch_outputs, tmp_path, capsys):
    _, matrix, outputs = batch_outputs
    tsv = tmp_path / "e.tsv"
    lines = ["gene\t" + "\t".join(f"s{j}" for j in range(matrix.shape[1]))]
    lines += [f"g{i}\t" + "\t".join(repr(float(v)) for v in row) for i, row in enumerate(matrix)]
    tsv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "t.h5"
    code, err = _run(["--in-tsv", tsv, "--out-h5", out, "--n-bootstrap", "25", "--seed", "11", "--quiet"], capsys)
    assert code == 0, err
    data = _read(out)
    for name in DATASETS:
        np.testing.assert_array_equal(data[name], outputs["all"][name])
    assert data["meta"]["expr_content_sha256"] == outputs["all"]["meta"]["expr_content_sha256"]


def test_seed_changes_bootstrap_not_groups(batch_outputs, tmp_path, capsys):
    store, _, outputs = batch_outputs
    out = tmp_path / "s.h5"
    assert _run(["--in-h5", store, "--out-h5", out, "--n-bootstrap", "25", "--seed", "12", "--quiet"], capsys)[0] == 0
    data = _read(out)
    np.testing.assert_array_equal(data["indices/low"], outputs["all"]["indices/low"])
    assert not np.array_equal(data["indices/low_boot"], outputs["all"]["indices/low_boot"])


def test_shim_runs_as_file_and_writes_memory_record(batch_outputs, tmp_path):
    store, _, _ = batch_outputs
    out = tmp_path / "new" / "bi.h5"
    done = subprocess.run([sys.executable, str(SHIM), "--in-h5", str(store), "--out-h5", str(out),
                           "--n-bootstrap", "5"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert out.exists() and Path(str(out) + ".memory.json").exists()
    with h5py.File(out) as f:
        assert f["memfit"].attrs["peak_rss_bytes"] > 0 and f["memfit"].attrs["estimate_bytes"] > 0


def test_group_size_floor_has_epsilon_guard():
    import math
    from fractions import Fraction

    from dcoex.stages.s01_bootstrap_indices.science import floor_fraction, group_sizes

    assert 100 * 0.29 < 29 and floor_fraction(100, 0.29) == 29  # 28.999999999999996
    for n in (10, 37, 100, 938, 1000, 12345):
        for frac in ("0.1", "0.15", "0.2", "0.25", "0.29", "0.3", "0.33", "0.5", "0.8"):
            assert floor_fraction(n, float(frac)) == math.floor(Fraction(frac) * n), (n, frac)
    sizes = group_sizes(938, 0.2, 0.2, 0.8)
    assert (sizes.k_low, sizes.k_high, sizes.kr_low, sizes.kr_high) == (187, 187, 149, 149)
