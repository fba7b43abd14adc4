"""Gene selection for per-gene tasks, file naming, and atomic outputs."""

from __future__ import annotations

import os

import pytest

from dcoex.genes import gene_file_name, n_tasks, read_gene_list, select_genes
from hpc.atomic import atomic_output, ensure_writable_dir
from hpc.errors import InputError


def test_tasks_cover_every_gene_once():
    n, per = 23, 5
    seen = []
    for task in range(1, n_tasks(n, per) + 1):
        seen += select_genes(n, genes_per_task=per, task_id=task)
    assert seen == list(range(n))


def test_task_id_from_scheduler_env():
    assert select_genes(10, genes_per_task=3, environ={"SGE_TASK_ID": "2"}) == [3, 4, 5]
    assert select_genes(10, genes_per_task=3, environ={"SLURM_ARRAY_TASK_ID": "4"}) == [9]
    with pytest.raises(InputError):
        select_genes(10, genes_per_task=3, environ={"SGE_TASK_ID": "undefined"})


def test_index_range_and_errors():
    assert select_genes(10, gene_index=[4, 2, 4]) == [2, 4]
    assert select_genes(10, gene_range="3:6") == [3, 4, 5]
    for kwargs in ({"gene_index": [10]}, {"gene_range": "5:5"}, {"gene_range": "x"}, {},
                   {"gene_index": [1], "gene_range": "1:2"}, {"genes_per_task": 0, "task_id": 1},
                   {"genes_per_task": 3, "task_id": 5}):
        with pytest.raises(InputError):
            select_genes(10, **kwargs)


def test_gene_list_universe(tmp_path):
    names = [f"g{i}" for i in range(8)]
    path = tmp_path / "subset.txt"
    path.write_text("g5\n2\ng7\n")
    universe = read_gene_list(path, names)
    assert universe == [2, 5, 7]
    assert select_genes(8, genes_per_task=2, task_id=2, gene_list=universe) == [7]
    path.write_text("g5\nnope\n")
    with pytest.raises(InputError, match="nope"):
        read_gene_list(path, names)


def test_file_name_padding():
    assert gene_file_name(7, "ACT/B", 100) == "0007_ACT_B.h5"
    assert gene_file_name(7, "x", 123456) == "000007_x.h5"


def test_atomic_output_renames_or_removes(tmp_path):
    final = tmp_path / "sub" / "out.txt"
    with atomic_output(final) as tmp:
        tmp.write_text("done")
        assert not final.exists()
    assert final.read_text() == "done"
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "bad.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]


def test_unwritable_folder(tmp_path):
    """A folder that cannot be created (its parent is a file) fails, even for root."""
    blocker = tmp_path / "afile"
    blocker.write_text("")
    with pytest.raises(InputError, match="cannot create output folder"):
        ensure_writable_dir(blocker / "out")
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(InputError, match="not writable"):
            ensure_writable_dir(locked)
