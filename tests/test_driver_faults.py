"""Faults under ``--local``: odd gene names through every stage, a failed task among good ones,
a full disk (issue 10, point 7)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import h5py
import pytest
from cluster_util import run_driver, write_dataset

from dcoex.genes import gene_file_path
from dcoex.stages.s03_network.io import read_network_summary

ARGS = ["--n-bootstrap", "20", "--seed", "3"]
PER_GENE = {"02a": "base_correlations", "02b": "bootstrap_significant", "03": "networks"}
#: Gene names no file name can hold as they are: too long, a path, non-ASCII, dots, a control
#: character, a number (names win over indices), a leading dash.
ODD_NAMES = {3: "L" * 300, 5: "a/b", 6: "../../x", 7: "Ähnlich-β", 8: ".hidden", 9: "..", 10: "c\x01tl",
             11: "1005", 12: "-rf", 13: "é" * 130}


def _rename_genes(tsv: Path, names: dict[int, str]) -> list[str]:
    lines = tsv.read_text(encoding="utf-8").split("\n")
    for gi, name in names.items():
        cells = lines[gi + 1].split("\t")
        cells[0] = name
        lines[gi + 1] = "\t".join(cells)
    tsv.write_text("\n".join(lines), encoding="utf-8")
    return [line.split("\t")[0] for line in lines[1:] if line]


@pytest.mark.slow
def test_odd_gene_names_pass_every_stage(tmp_path):
    tsv = write_dataset(tmp_path / "expr.tsv", n_genes=16, n_samples=40)
    names = _rename_genes(tsv, ODD_NAMES)
    out = tmp_path / "run"
    done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", out, *ARGS, "--genes-per-task", "8", "--local"],
                      timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for folder in PER_GENE.values():
        files = sorted(p for p in (out / folder).iterdir() if p.suffix == ".h5")
        assert len(files) == 16, files
        for path in files:
            assert len(path.name.encode()) <= 200 and path.name.isascii() and path.name[:4].isdigit(), path.name
            gi = int(path.name[:4])
            assert path == gene_file_path(out / folder, gi, names[gi], 16)
            if folder == "networks":  # each file holds the gene its name was made from
                meta = read_network_summary(path).meta
                assert (meta["gene_index_used"], meta["gene_name"]) == (gi, names[gi])
    with h5py.File(out / "differential_network_summary.h5", "r") as f:
        assert [s.decode() for s in f["per_gene/gene_name"][()]] == names
        assert "missing" not in {s.decode() for s in f["per_gene/status"][()]}
    assert not list(out.rglob("*.tmp-*"))
    again = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", out, *ARGS, "--genes-per-task", "8", "--local"])
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr


@pytest.mark.slow
def test_local_run_carries_on_after_a_failed_task(tmp_path):
    """Gene 9's 02a output cannot be written (a folder holds its name): 02a task 3 (genes 8-11)
    fails, 02b and 03 skip task 3, every other task completes, 03b collects the rest (as the
    schedulers' finalisers do), and the failure is listed at the end; exit 1 (the stage's)."""
    tsv = write_dataset(tmp_path / "expr.tsv", n_genes=16, n_samples=40)
    out = tmp_path / "run"
    blocker = gene_file_path(out / "base_correlations", 9, "G09", 16)
    blocker.mkdir(parents=True)
    (blocker / "keep").write_text("not an HDF5 file")
    done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", out, *ARGS, "--genes-per-task", "4", "--local"],
                      timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, done.stderr
    log = out / "logs" / "02a.local.3.log"
    assert errors[0].startswith("run_bootstrap_pipeline: FAILED stage 02a task 3: exit 1 (")
    assert "gene(s) failed: 9 " in errors[0] and errors[0].endswith(f"; log {log}")
    assert "skipping stage 02b task 3/4" in done.stdout and "skipping stage 03 task 3/4" in done.stdout
    for stage in ("02b", "03"):
        for task in (1, 2, 4):
            assert f"running stage {stage} task {task}/4" in done.stdout
    done_genes = [g for g in range(16) if g not in (8, 9, 10, 11)]
    assert sorted(int(p.name[:4]) for p in (out / "networks").glob("*.h5")) == done_genes
    assert sorted(int(p.name[:4]) for p in (out / "base_correlations").glob("*.h5") if p.is_file()) \
        == sorted(done_genes + [8, 10, 11])
    with h5py.File(out / "differential_network_summary.h5", "r") as f:
        status = [s.decode() for s in f["per_gene/status"][()]]
    assert [g for g, s in enumerate(status) if s == "missing"] == [8, 9, 10, 11]
    m = json.loads((out / "run_manifest.json").read_text())
    assert m["status"] == "failed"
    assert [(f["task"], f["log"]) for f in m["stages"]["02a"]["failures"]] == [(3, str(log))]
    assert m["stages"]["02b"]["cancelled_tasks"] == [3] and m["stages"]["03"]["cancelled_tasks"] == [3]
    assert not m["stages"]["03b"].get("cancelled") and not m["stages"]["03b"]["failures"]


@pytest.mark.slow
def test_local_run_stops_after_a_failed_single_job(tmp_path):
    """Stage 00 fails (a NUL in a gene name): nothing after it runs; one line, its exit status."""
    tsv = write_dataset(tmp_path / "expr.tsv", n_genes=16, n_samples=40)
    _rename_genes(tsv, {4: "G\x0004"})
    out = tmp_path / "run"
    done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", out, *ARGS, "--local"], timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "FAILED stage 00 task 1: exit 2" in errors[0], done.stderr
    assert "line 6: gene name" in errors[0] and "NUL" in errors[0]
    assert "running stage 01" not in done.stdout and "skipping stage 03b: stage 00 failed" in done.stdout
    m = json.loads((out / "run_manifest.json").read_text())
    assert m["status"] == "failed" and all(m["stages"][s]["cancelled"] for s in ("01", "02a", "02b", "03", "03b"))


# --- a full disk -----------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (mount needs root; CI runs as root)."""
    mount = shutil.which("mount")
    if os.geteuid() != 0 or mount is None:
        pytest.skip("a full-disk test needs root to mount a small tmpfs")
    folder = tmp_path / "disk"
    folder.mkdir()
    done = subprocess.run([mount, "-t", "tmpfs", "-o", "size=3M", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def _fill(folder: Path, leave_bytes: int) -> None:
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    with open(folder / "filler", "wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, max(free - leave_bytes, 1))


@pytest.mark.slow
@pytest.mark.parametrize("before,leave", [("00,01", 40 << 10), ("00,01,02a,02b,03", 16 << 10),
                                          ("00,01", 0)])
def test_full_disk_is_one_line_exit_2_and_no_temporary_files(tmp_path, small_disk, before, leave):
    """The disk fills during 02a (or 03b, or at once): one line naming what could not be
    written, exit 2, no ``.*.tmp-PID`` file left (HDF5 may crash on a full disk: the driver
    removes what the dead task left)."""
    tsv = write_dataset(tmp_path / "expr.tsv", n_genes=16, n_samples=40)
    out = small_disk / "run"
    args = ["--expr-tsv", tsv, "--out-dir", out, *ARGS, "--genes-per-task", "8", "--local"]
    # the setup run writes less than the plan's disk figures, which include margins
    first = run_driver("slurm", [*args, "--stages", before, "--ignore-disk-check"], timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    _fill(small_disk, leave)
    # past the plan's disk check (tests/test_driver_disk.py), to the write that fails
    done = run_driver("slurm", [*args, "--ignore-disk-check"], timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"run_bootstrap_pipeline: error: no space left on device: {out}/"), lines[0]
    assert "Traceback" not in done.stderr
    assert [p for p in small_disk.rglob("*") if ".tmp-" in p.name] == []
