"""The loop of a per-gene stage: skip valid outputs, isolate failing genes, limit threads."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Callable, Iterator, Sequence

import h5py

from dcoex.errors import GenesFailedError, InputError
from dcoex.genes import read_gene_list, select_genes
from dcoex.progress import progress
from dcoex.stages.bootstrap_indices import default_threads

#: Errors that fail one gene (unreadable or truncated inputs, inconsistent files), not the task.
GENE_ERRORS = (OSError, ValueError, KeyError, InputError)


def resolve_genes(n_genes: int, gene_names: Sequence[str], selection: dict) -> list[int]:
    """The reference genes of this task from the gene-selection CLI options."""
    selection = dict(selection)
    if selection.get("gene_list"):
        selection["gene_list"] = read_gene_list(selection["gene_list"], gene_names)
    else:
        selection["gene_list"] = None
    genes = select_genes(n_genes, **selection)
    if not genes:
        raise InputError("no reference genes selected")
    return genes


@contextlib.contextmanager
def blas_threads(n_threads: int | None = None) -> Iterator[int]:
    """Limit BLAS/OpenMP threads to the CPUs this task may use (scheduler slots)."""
    threads = n_threads or default_threads()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it BLAS keeps its own default
        yield threads
        return
    with threadpool_limits(limits=threads):
        yield threads


def run_genes(
    genes: Sequence[int],
    output_of: Callable[[int], Path],
    is_valid: Callable[[int, Path], bool],
    process: Callable[[int, Path], None],
    force: bool = False,
    quiet: bool = False,
) -> dict[str, list[int]]:
    """Process each gene (skipping valid outputs unless ``force``); a gene raising one of
    GENE_ERRORS is recorded and the loop goes on. Raises GenesFailedError at the end if any
    gene failed; returns {"written": [...], "skipped": [...]} otherwise."""
    written, skipped, failures = [], [], {}
    for gene in progress(genes, quiet=quiet, unit="gene"):
        path = output_of(gene)
        if not force and path.exists() and _safe_valid(is_valid, gene, path):
            skipped.append(gene)
            continue
        try:
            process(gene, path)
        except GENE_ERRORS as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(f"error: gene {gene}: {reason}", file=sys.stderr)
            failures[gene] = reason
            continue
        written.append(gene)
    if failures:
        raise GenesFailedError(failures)
    return {"written": written, "skipped": skipped}


def _safe_valid(is_valid: Callable[[int, Path], bool], gene: int, path: Path) -> bool:
    try:
        return bool(is_valid(gene, path))
    except (OSError, ValueError, KeyError, InputError):
        return False


def text_attr(value: object) -> str:
    """An HDF5 string attribute as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def open_h5(path: Path, what: str) -> h5py.File:
    """Open an HDF5 file read-only; ValueError naming it if missing or unreadable."""
    if not path.exists():
        raise ValueError(f"{what} {path} is missing")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{what} {path} is unreadable or truncated ({exc})") from None
