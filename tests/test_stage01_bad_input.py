"""Stage 01 bad input: one line naming the problem, exit 2, no output left behind."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from dcoex.expression_store import write_expression
from dcoex.stages.s01_bootstrap_indices.cli import main
from hpc.cli import run_command


def _store(path: Path, n_genes=6, n_samples=40, nan_at=None) -> Path:
    matrix = np.random.default_rng(0).normal(size=(n_genes, n_samples)).astype(np.float32)
    if nan_at is not None:
        matrix[nan_at] = np.nan
    write_expression(path, matrix, [f"g{i}" for i in range(n_genes)], [f"s{j}" for j in range(n_samples)])
    return path


def _expect_bad(tmp_path: Path, capsys, args: list, words: list[str], out: Path | None = None) -> None:
    out = out or tmp_path / "out" / "bootstrap_indices.h5"
    with pytest.raises(SystemExit) as exited:
        run_command(main, [str(a) for a in ["--out-h5", out, "--n-bootstrap", "3", "--quiet", *args]])
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not out.exists()
    if out.parent.exists():
        assert not [p for p in out.parent.iterdir() if p.name.startswith(".bootstrap") or p.name.startswith("bootstrap")]


@pytest.mark.parametrize("flag,value", [
    ("--low-frac", "0.6"), ("--low-frac", "0"), ("--high-frac", "-0.1"), ("--high-frac", "0.51"),
])
def test_fraction_outside_range(tmp_path, capsys, flag, value):
    store = _store(tmp_path / "e.h5")
    _expect_bad(tmp_path, capsys, ["--in-h5", store, flag, value], [flag, value, "(0, 0.5]"])


@pytest.mark.parametrize("value", ["0", "1.5"])
def test_bootstrap_frac_outside_range(tmp_path, capsys, value):
    store = _store(tmp_path / "e.h5")
    _expect_bad(tmp_path, capsys, ["--in-h5", store, "--bootstrap-frac", value], ["--bootstrap-frac", "(0, 1]"])


def test_group_below_four(tmp_path, capsys):
    store = _store(tmp_path / "e.h5", n_samples=12)  # k = floor(12 * 0.2) = 2
    _expect_bad(tmp_path, capsys, ["--in-h5", store], ["e.h5", "12 samples", "k_low = 2", "at least 4"])


def test_resample_below_four(tmp_path, capsys):
    store = _store(tmp_path / "e.h5", n_samples=30)  # k = 6, k_r = floor(6 * 0.5) = 3
    _expect_bad(tmp_path, capsys, ["--in-h5", store, "--bootstrap-frac", "0.5"], ["e.h5", "k_r_low = 3", "at least 4"])


def test_n_bootstrap_below_one(tmp_path, capsys):
    store = _store(tmp_path / "e.h5")
    _expect_bad(tmp_path, capsys, ["--in-h5", store, "--n-bootstrap", "0"], ["--n-bootstrap 0", ">= 1"])


def test_in_h5_missing_expr(tmp_path, capsys):
    fake = tmp_path / "notastore.h5"
    with h5py.File(fake, "w") as f:
        f["something"] = np.zeros(3)
    _expect_bad(tmp_path, capsys, ["--in-h5", fake], ["notastore.h5", "missing dataset /expr"])


def test_in_h5_not_hdf5(tmp_path, capsys):
    fake = tmp_path / "plain.h5"
    fake.write_text("gene\ts1\n")
    _expect_bad(tmp_path, capsys, ["--in-h5", fake], ["plain.h5", "not an HDF5"])


def test_in_h5_does_not_exist(tmp_path, capsys):
    _expect_bad(tmp_path, capsys, ["--in-h5", tmp_path / "nope.h5"], ["nope.h5", "no such file"])


def test_non_finite_value_in_store(tmp_path, capsys):
    store = _store(tmp_path / "e.h5", nan_at=(4, 17))
    _expect_bad(tmp_path, capsys, ["--in-h5", store, "--batch-size", "2"], ["e.h5", "'g4'", "column 17", "non-finite"])


def test_bad_tsv_input(tmp_path, capsys):
    tsv = tmp_path / "e.tsv"
    tsv.write_text("gene\t" + "\t".join(f"s{j}" for j in range(12)) + "\ng0\t" + "\t".join(["1"] * 11) + "\n")
    _expect_bad(tmp_path, capsys, ["--in-tsv", tsv], ["e.tsv", "line 2", "ragged"])


def test_both_or_neither_input(tmp_path, capsys):
    store = _store(tmp_path / "e.h5")
    _expect_bad(tmp_path, capsys, [], ["--in-h5", "--in-tsv"])
    _expect_bad(tmp_path, capsys, ["--in-h5", store, "--in-tsv", store], ["exactly one"])


def test_bad_batch_size(tmp_path, capsys):
    store = _store(tmp_path / "e.h5")
    _expect_bad(tmp_path, capsys, ["--in-h5", store, "--batch-size", "0"], ["--batch-size", ">= 1"])
    _expect_bad(tmp_path, capsys, ["--in-h5", store, "--batch-size", "many"], ["many"])


def test_unwritable_output_folder(tmp_path, capsys):
    store = _store(tmp_path / "e.h5")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    _expect_bad(tmp_path, capsys, ["--in-h5", store], ["blocker", "folder"], out=blocker / "sub" / "bi.h5")


def test_missing_output_folder_is_created(tmp_path, capsys):
    store = _store(tmp_path / "e.h5")
    out = tmp_path / "x" / "y" / "bi.h5"
    with pytest.raises(SystemExit) as exited:
        run_command(main, ["--in-h5", str(store), "--out-h5", str(out), "--n-bootstrap", "3", "--quiet"])
    assert exited.value.code == 0 and out.exists()
