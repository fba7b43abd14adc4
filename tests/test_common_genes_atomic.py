"""Gene selection for per-gene tasks, file naming, and atomic outputs."""

from __future__ import annotations

import errno
import os

import pytest

from dcoex.genes import gene_file_name, n_tasks, read_gene_list, select_genes
from hpc.atomic import atomic_output, ensure_writable_dir, remove_temporaries
from hpc.errors import InputError, write_refused_message


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
    path.write_text("g5\nindex:2\ng7\n")
    universe = read_gene_list(path, names)
    assert universe == [2, 5, 7]
    assert select_genes(8, genes_per_task=2, task_id=2, gene_list=universe) == [7]
    path.write_text("g5\nnope\n")
    with pytest.raises(InputError, match="nope"):
        read_gene_list(path, names)


def test_gene_list_names_win_over_indices(tmp_path):
    """Gene names "1000".."1399": an entry is a name when it is one; an index is written
    index:N; a bare number that is no gene's name is refused (not read as an index)."""
    names = [str(1000 + i) for i in range(400)]
    path = tmp_path / "subset.txt"
    path.write_text("1005\nindex:100\n 1399 \n")
    assert read_gene_list(path, names) == sorted([names.index("1005"), 100, names.index("1399")])
    path.write_text("1005\n100\n7\nindex:400\n")
    with pytest.raises(InputError) as err:
        read_gene_list(path, names)
    message = str(err.value)
    assert "3 unknown gene(s): 100, 7, index:400" in message and "index:N" in message
    assert "\n" not in message
    path.write_bytes(b"1005\n\xff\xfe\n")
    with pytest.raises(InputError, match="not UTF-8"):
        read_gene_list(path, names)


def test_file_name_padding():
    assert gene_file_name(7, "ACTB", 100) == "0007_ACTB.h5"
    assert gene_file_name(7, "x", 123456) == "000007_x.h5"
    assert gene_file_name(12, "HLA-A.1_b+", 100) == "0012_HLA-A.1_b+.h5"


@pytest.mark.parametrize("name", ["ACT/B", "a" * 300, "é" * 200, "..", ".hidden", "", "x\x00y", "tab\there",
                                  "../../etc/passwd", "日本語", "\udcff", "a\\b", "-" * 250])
def test_file_name_is_safe_for_any_gene_name(tmp_path, name):
    """Unsafe or long names: sanitised, truncated, plus a hash of the full name; the file and
    its temporary and sidecar siblings can be created in the folder itself."""
    import hashlib
    import re

    file = gene_file_name(7, name, 100)
    assert re.fullmatch(r"0007_[A-Za-z0-9._+-]*(~[0-9a-f]{12})?\.h5", file), file
    assert len(file.encode()) <= 200
    if "~" in file:
        assert file.endswith("~" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12] + ".h5")
        assert len(name.encode("utf-8", "surrogatepass")) + 8 > 200 or not re.fullmatch(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]*", name)
    assert gene_file_name(7, name, 100) == file  # deterministic
    for sibling in (file, f".{file}.tmp-4194304", f"{file}.memory.json", f".{file}.memory.json.tmp-4194304"):
        (tmp_path / sibling).write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [file, f".{file}.tmp-4194304", f"{file}.memory.json", f".{file}.memory.json.tmp-4194304"])


def test_file_names_of_different_names_differ():
    names = ["a/b", "a_b", "a\\b", "a" * 300, "a" * 301, "a" * 299 + "b", "é", "è"]
    files = [gene_file_name(3, name, 10) for name in names]
    assert len(set(files)) == len(names)


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


def _full_disk(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_failed_rename_removes_the_temporary_and_names_the_output(tmp_path, monkeypatch):
    final = tmp_path / "out.txt"
    monkeypatch.setattr(os, "replace", _full_disk)
    with pytest.raises(OSError) as err:
        with atomic_output(final) as tmp:
            tmp.write_text("done")
    assert list(tmp_path.iterdir()) == []
    assert write_refused_message(err.value) == f"no space left on device: {final}"


def test_json_writers_leave_no_temporary_file(tmp_path, monkeypatch):
    """The manifest / status writer and memfit's sidecar writer on a full disk."""
    from hpc.manifest import write_json_atomic
    from memfit import record

    monkeypatch.setattr(os, "replace", _full_disk)
    with pytest.raises(OSError) as err:
        write_json_atomic(tmp_path / "run_manifest.json", {"a": 1})
    assert write_refused_message(err.value) == f"no space left on device: {tmp_path / 'run_manifest.json'}"
    monkeypatch.setattr(record, "memory_record", lambda *args, **kwargs: {"stage": "x"})
    with pytest.raises(OSError) as err:
        record.write_sidecar(tmp_path / "out.h5", "x", None, None, None)
    assert write_refused_message(err.value) == f"no space left on device: {tmp_path / 'out.h5.memory.json'}"
    assert list(tmp_path.iterdir()) == []


def test_refused_write_messages():
    """One line from an OSError, from HDF5's message (temporary name -> output name), through
    an InputError raised from one; None for other errors."""
    hdf5 = OSError(errno.ENOSPC, "Can't close file (file write failed: time = Sun\n, filename = "
                                 "'/out/base/.0001_G01.h5.tmp-123', file descriptor = 5, errno = 28)")
    assert write_refused_message(hdf5) == "no space left on device: /out/base/0001_G01.h5"
    assert write_refused_message(OSError(errno.EROFS, "x", "/ro/f.h5")) == "read-only file system: /ro/f.h5"
    assert write_refused_message(OSError(errno.EDQUOT, "x")) == "disk quota exceeded"
    try:
        try:
            raise OSError(errno.EACCES, "x", "/locked/out")
        except OSError:
            raise InputError("/locked: cannot create output folder") from None
    except InputError as exc:
        assert write_refused_message(exc) == "permission denied: /locked/out"
    assert write_refused_message(OSError(errno.ENOENT, "x", "/nope")) is None
    assert write_refused_message(ValueError("x")) is None


def test_remove_temporaries_of_a_dead_process(tmp_path):
    for name in ("a/.x.h5.tmp-77", "a/b/.y.json.tmp-77", "a/.x.h5.tmp-771", ".z.tmp-77", "a/x.h5", "a/.x.h5.tmp-78"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    removed = remove_temporaries(tmp_path, 77)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in removed) == [".z.tmp-77", "a/.x.h5.tmp-77",
                                                                          "a/b/.y.json.tmp-77"]
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["a/.x.h5.tmp-771", "a/.x.h5.tmp-78", "a/x.h5"]
