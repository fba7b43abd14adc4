"""Which reference genes a per-gene task processes, and its per-gene file names."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Sequence

from hpc.errors import InputError

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def index_width(n_genes: int) -> int:
    """Zero-padding of gene indices in file names: max(4, digits of N-1)."""
    return max(4, len(str(max(n_genes - 1, 0))))


def gene_file_name(gene_index: int, gene_name: str, n_genes: int) -> str:
    """``{gi}_{gene}.h5`` with gi zero-padded; unsafe characters of the name become '_'."""
    return f"{gene_index:0{index_width(n_genes)}d}_{_UNSAFE.sub('_', gene_name)}.h5"


def gene_file_path(directory: str | os.PathLike, gene_index: int, gene_name: str, n_genes: int) -> Path:
    return Path(directory) / gene_file_name(gene_index, gene_name, n_genes)


def task_id_from_env(environ: Mapping[str, str] | None = None) -> int | None:
    """The 1-based array task id from SGE_TASK_ID or SLURM_ARRAY_TASK_ID, if set."""
    env = os.environ if environ is None else environ
    for name in ("SGE_TASK_ID", "SLURM_ARRAY_TASK_ID"):
        value = env.get(name, "")
        if value.isdigit():
            return int(value)
    return None


def read_gene_list(path: str | os.PathLike, gene_names: Sequence[str]) -> list[int]:
    """Gene indices from a file of names or 0-based indices, one per line (order kept)."""
    lookup = {name: i for i, name in enumerate(gene_names)}
    try:
        tokens = [t.strip() for t in Path(path).read_text().splitlines() if t.strip()]
    except OSError as exc:
        raise InputError(f"{path}: cannot read gene list ({exc.strerror})") from None
    indices, unknown = [], []
    for token in tokens:
        if token in lookup:
            indices.append(lookup[token])
        elif token.isdigit() and int(token) < len(gene_names):
            indices.append(int(token))
        else:
            unknown.append(token)
    if unknown:
        shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise InputError(f"{path}: {len(unknown)} unknown gene(s): {shown}")
    return sorted(set(indices))


def select_genes(
    n_genes: int,
    gene_index: Sequence[int] | int | None = None,
    gene_range: str | None = None,
    genes_per_task: int | None = None,
    task_id: int | None = None,
    gene_list: Sequence[int] | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[int]:
    """Resolve the reference genes of this task (0-based, ascending).

    Exactly one of ``gene_index`` (one or several), ``gene_range`` ("a:b", half-open) or
    ``genes_per_task`` (with ``task_id`` or the scheduler's array task id, 1-based)
    must be given. ``gene_list`` restricts the universe that tasks are cut from.
    """
    if isinstance(gene_index, int):
        gene_index = [gene_index]
    given = sum(x is not None and x != () and x != [] for x in (gene_index, gene_range, genes_per_task))
    if given != 1:
        raise InputError("give exactly one of --gene-index, --gene-range or --genes-per-task")
    universe = list(gene_list) if gene_list is not None else list(range(n_genes))
    if gene_index:
        bad = [i for i in gene_index if not 0 <= i < n_genes]
        if bad:
            raise InputError(f"gene index {bad[0]} out of range 0..{n_genes - 1}")
        return sorted(set(int(i) for i in gene_index))
    if gene_range is not None:
        match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", gene_range)
        if not match:
            raise InputError(f"--gene-range {gene_range!r}: expected a:b (0-based, end excluded)")
        start, stop = int(match.group(1)), int(match.group(2))
        if not 0 <= start < stop <= n_genes:
            raise InputError(f"--gene-range {gene_range}: must satisfy 0 <= a < b <= {n_genes}")
        return list(range(start, stop))
    assert genes_per_task is not None
    if genes_per_task < 1:
        raise InputError(f"--genes-per-task must be >= 1, got {genes_per_task}")
    if task_id is None:
        task_id = task_id_from_env(environ)
    if task_id is None:
        raise InputError("--genes-per-task needs --task-id or SGE_TASK_ID/SLURM_ARRAY_TASK_ID")
    n_tasks = -(-len(universe) // genes_per_task)
    if not 1 <= task_id <= n_tasks:
        raise InputError(f"task id {task_id} out of range 1..{n_tasks} ({len(universe)} genes, {genes_per_task} per task)")
    return universe[(task_id - 1) * genes_per_task : task_id * genes_per_task]


def n_tasks(n_genes: int, genes_per_task: int) -> int:
    """Number of array tasks covering ``n_genes`` at ``genes_per_task``."""
    return -(-n_genes // genes_per_task)
