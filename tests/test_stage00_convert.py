"""Stage 00: TSV -> expression.h5 round trip, content sha, and every bad-input case."""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from dcoex.expression_store import open_expression
from dcoex.stages.s00_convert.cli import main
from hpc.cli import run_command
from hpc.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
SHIM = ROOT / "src" / "scripts" / "00preprocess" / "00convert_expr_to_hdf5.py"


def _tsv(path: Path, genes, samples, matrix, *, index_header=True, fmt="{:.6g}") -> Path:
    lines = [("gene_id\t" if index_header else "") + "\t".join(samples)]
    for g, row in zip(genes, matrix):
        lines.append(g + "\t" + "\t".join(fmt.format(float(v)) for v in row))
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def _reference_sha(matrix: np.ndarray, genes, samples) -> str:
    sha = hashlib.sha256(np.asarray(matrix, dtype="<f4").tobytes(order="C"))
    for name in list(genes) + list(samples):
        sha.update(name.encode("utf-8") + b"\n")
    return sha.hexdigest()


def _run(args, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        run_command(main, [str(a) for a in args])
    return exited.value.code, capsys.readouterr().err


def _matrix(n_genes=37, n_samples=12, seed=0):
    rng = np.random.default_rng(seed)
    matrix = rng.normal(5, 2, size=(n_genes, n_samples)).astype(np.float32)
    genes = [f"gene{i}" for i in range(n_genes)]
    samples = [f"sample_{j}" for j in range(n_samples)]
    return matrix, genes, samples


@pytest.mark.parametrize("suffix,index_header,compression", [
    (".tsv", True, "gzip"), (".tsv.gz", True, "lzf"), (".tsv", False, "none"),
])
def test_round_trip_values_names_sha(tmp_path, capsys, suffix, index_header, compression):
    matrix, genes, samples = _matrix()
    tsv = _tsv(tmp_path / f"expr{suffix}", genes, samples, matrix, index_header=index_header, fmt="{!r}")
    out = tmp_path / "new" / "expression.h5"
    code, err = _run(["--expr-tsv", tsv, "--out-h5", out, "--compression", compression,
                      "--block-rows", 5, "--quiet"], capsys)
    assert code == 0, err
    with open_expression(out) as store:
        np.testing.assert_array_equal(store.read_all(), matrix)
        assert store.gene_names == genes and store.sample_names == samples
        assert (store.n_genes, store.n_samples) == matrix.shape
        assert store.content_sha256 == _reference_sha(matrix, genes, samples)
        np.testing.assert_array_equal(store.read_rows([5, 2, 30]), matrix[[5, 2, 30]])
    with h5py.File(out) as f:
        assert f["expr"].dtype == np.float32
        assert f.attrs["n_genes"] == 37 and f.attrs["n_samples"] == 12
        assert "memfit" in f and f["memfit"].attrs["peak_rss_bytes"] > 0
        assert f["expr"].chunks[1] == 12
    assert (out.parent / "expression.h5.memory.json").exists()


def test_sha_independent_of_compression_and_block(tmp_path, capsys):
    matrix, genes, samples = _matrix(20, 11)
    tsv = _tsv(tmp_path / "e.tsv", genes, samples, matrix)
    shas = []
    for i, (comp, block) in enumerate([("gzip", 3), ("none", 100)]):
        out = tmp_path / f"o{i}.h5"
        assert _run(["--expr-tsv", tsv, "--out-h5", out, "--compression", comp, "--block-rows", block, "--quiet"], capsys)[0] == 0
        with open_expression(out) as store:
            shas.append(store.content_sha256)
    assert shas[0] == shas[1]


def test_shim_runs_as_file(tmp_path):
    matrix, genes, samples = _matrix(5, 10)
    tsv = _tsv(tmp_path / "e.tsv", genes, samples, matrix)
    out = tmp_path / "x.h5"
    done = subprocess.run([sys.executable, str(SHIM), "--expr-tsv", str(tsv), "--out-h5", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert out.exists()


def _bad_case(tmp_path: Path, capsys, text: str | None, expect: list[str], *, n_samples: int = 10,
              out: Path | None = None) -> None:
    tsv = tmp_path / "bad.tsv"
    if text is not None:
        tsv.write_text(text)
    out = out or tmp_path / "out" / "expression.h5"
    code, err = _run(["--expr-tsv", tsv, "--out-h5", out], capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for word in expect:
        assert word in lines[0], (word, lines[0])
    if out.parent.exists():
        assert [p.name for p in out.parent.iterdir() if p.name != "bad.tsv"] == []


def _good_rows(n_genes=3, n_samples=10) -> list[str]:
    header = "gene\t" + "\t".join(f"s{j}" for j in range(n_samples))
    rows = [f"g{i}\t" + "\t".join(str(i + j) for j in range(n_samples)) for i in range(n_genes)]
    return [header] + rows


def test_bad_nul_in_a_name(tmp_path, capsys):
    """HDF5 strings end at NUL: a name holding one is refused by line, not a traceback."""
    lines = _good_rows()
    lines[2] = "g\x001" + lines[2][2:]
    _bad_case(tmp_path, capsys, "\n".join(lines) + "\n", ["bad.tsv", "line 3", "NUL", "gene name"])
    lines = _good_rows()
    lines[0] = lines[0].replace("s3", "s\x003")
    _bad_case(tmp_path, capsys, "\n".join(lines) + "\n", ["bad.tsv", "line 1", "NUL", "sample name"])


def test_bad_ragged_row(tmp_path, capsys):
    lines = _good_rows()
    lines[2] += "\t7"
    _bad_case(tmp_path, capsys, "\n".join(lines) + "\n", ["bad.tsv", "line 3", "ragged"])


def test_bad_non_numeric(tmp_path, capsys):
    lines = _good_rows()
    lines[3] = lines[3].replace("\t5\t", "\tNA\t", 1)
    _bad_case(tmp_path, capsys, "\n".join(lines) + "\n", ["bad.tsv", "line 4", "column", "'g2'", "non-numeric", "'NA'"])


@pytest.mark.parametrize("value", ["nan", "inf", "-Inf", "1e40"])
def test_bad_non_finite_names_gene_and_sample(tmp_path, capsys, value):
    lines = _good_rows()
    cells = lines[2].split("\t")
    cells[4] = value  # gene g1, sample s3
    lines[2] = "\t".join(cells)
    _bad_case(tmp_path, capsys, "\n".join(lines) + "\n", ["bad.tsv", "line 3", "'g1'", "'s3'", "NaN/inf"])


def test_bad_duplicate_gene(tmp_path, capsys):
    lines = _good_rows()
    lines[3] = lines[3].replace("g2", "g0", 1)
    _bad_case(tmp_path, capsys, "\n".join(lines) + "\n", ["bad.tsv", "line 4", "duplicate gene", "'g0'", "line 2"])


def test_bad_duplicate_sample(tmp_path, capsys):
    lines = _good_rows()
    lines[0] = lines[0].replace("s7", "s2")
    _bad_case(tmp_path, capsys, "\n".join(lines) + "\n", ["bad.tsv", "line 1", "duplicate sample", "'s2'"])


def test_bad_empty_file(tmp_path, capsys):
    _bad_case(tmp_path, capsys, "", ["bad.tsv", "empty"])


def test_bad_header_only(tmp_path, capsys):
    _bad_case(tmp_path, capsys, _good_rows()[0] + "\n", ["bad.tsv", "header only"])


def test_bad_fewer_than_10_samples(tmp_path, capsys):
    lines = _good_rows(3, 9)
    _bad_case(tmp_path, capsys, "\n".join(lines) + "\n", ["bad.tsv", "9 samples", "at least 10"])


def test_bad_missing_input(tmp_path, capsys):
    _bad_case(tmp_path, capsys, None, ["bad.tsv", "no such file"])


def test_bad_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    lines = _good_rows()
    _bad_case(tmp_path, capsys, "\n".join(lines) + "\n", ["a_file", "folder"], out=blocker / "sub" / "e.h5")
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_bad_read_only_output_folder(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        lines = _good_rows()
        _bad_case(tmp_path, capsys, "\n".join(lines) + "\n", ["ro", "not writable"], out=folder / "e.h5")
    finally:
        folder.chmod(0o755)


def test_missing_output_folder_is_created(tmp_path, capsys):
    lines = _good_rows()
    (tmp_path / "ok.tsv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "a" / "b" / "e.h5"
    code, err = _run(["--expr-tsv", tmp_path / "ok.tsv", "--out-h5", out, "--quiet"], capsys)
    assert code == 0, err and out.exists()


def test_open_expression_rejects_non_stores(tmp_path):
    text = tmp_path / "t.h5"
    text.write_text("hello")
    with pytest.raises(InputError, match="t.h5"):
        open_expression(text)
    bare = tmp_path / "bare.h5"
    with h5py.File(bare, "w") as f:
        f["gene_names"] = np.array([b"a"])
    with pytest.raises(InputError, match=r"bare\.h5.*missing dataset /expr"):
        open_expression(bare)
