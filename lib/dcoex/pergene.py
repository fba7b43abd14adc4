"""The loop of a per-gene stage: skip valid outputs, isolate failing genes, limit threads."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from dcoex.genes import read_gene_list, select_genes
from dcoex.progress import progress
from hpc.errors import FILESYSTEM_ERRNOS, GenesFailedError, InputError

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


def run_genes(
    genes: Sequence[int],
    output_of: Callable[[int], Path],
    is_valid: Callable[[int, Path], bool],
    process: Callable[[int, Path], None],
    finish: Callable[[dict], None],
    *,
    force: bool = False,
    quiet: bool = False,
) -> dict:
    """Process each gene (skipping valid outputs unless ``force``); a gene raising one of
    GENE_ERRORS is recorded and the loop goes on. Then ``finish(done)`` runs whatever happened
    (stop the recorder, write the sidecar), with ``done`` = {"written": [...], "skipped": [...],
    "failed": {"gene": reason}}; GenesFailedError is raised after it if any gene failed. A write
    the file system refuses (FILESYSTEM_ERRNOS: full, read-only) stops the loop: it is raised."""
    written: list[int] = []
    skipped: list[int] = []
    failures: dict[int, str] = {}
    try:
        for gene in progress(genes, quiet=quiet, unit="gene"):
            path = output_of(gene)
            if not force and path.exists() and _safe_valid(is_valid, gene, path):
                skipped.append(gene)
                continue
            try:
                process(gene, path)
            except GENE_ERRORS as exc:
                if isinstance(exc, OSError) and exc.errno in FILESYSTEM_ERRNOS:
                    raise  # the disk is full or read-only: every later gene would fail too
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                print(f"error: gene {gene}: {reason}", file=sys.stderr)
                failures[gene] = reason
                continue
            written.append(gene)
    finally:
        finish({"written": written, "skipped": skipped, "failed": {str(k): v for k, v in failures.items()}})
    done = {"written": written, "skipped": skipped, "failed": {}}
    if failures:
        raise GenesFailedError(failures, {"written": written, "skipped": skipped})
    return done


def _safe_valid(is_valid: Callable[[int, Path], bool], gene: int, path: Path) -> bool:
    try:
        return bool(is_valid(gene, path))
    except (OSError, ValueError, KeyError, InputError):
        return False
