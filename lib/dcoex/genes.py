"""Which reference genes a per-gene task processes, and its per-gene file names."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from hpc.errors import InputError

_SAFE_NAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]*")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")
#: Longest per-gene file name (bytes, with ".h5"): the rest of the file system's 255 is left
#: for what is added to it (".{name}.tmp-PID", ".memory.json").
MAX_GENE_FILE_BYTES = 200
#: Hex digits of the SHA-256 of the gene name in a sanitised file name.
NAME_HASH_DIGITS = 12
#: How a gene list file names a gene by its 0-based index (a bare number is a gene name).
INDEX_PREFIX = "index:"


def index_width(n_genes: int) -> int:
    """Zero-padding of gene indices in file names: max(4, digits of N-1)."""
    return max(4, len(str(max(n_genes - 1, 0))))


def gene_file_name(gene_index: int, gene_name: str, n_genes: int) -> str:
    """The per-gene file name: ``{gi}_{gene}.h5``, gi zero-padded.

    A name of ASCII letters, digits and ``._+-`` (not starting with a dot) that keeps the
    file name within MAX_GENE_FILE_BYTES is used as it is. Any other name (path separators,
    control characters, non-ASCII, a leading dot, empty, too long) is written as
    ``{gi}_{sanitised}~{hash}.h5``: other characters become ``_``, the name is truncated to
    fit, and ``hash`` is the start of the SHA-256 of the full name (so the form is
    deterministic and tells different names apart).
    """
    prefix = f"{gene_index:0{index_width(n_genes)}d}_"
    if _SAFE_NAME.fullmatch(gene_name) and len(prefix) + len(gene_name) + 3 <= MAX_GENE_FILE_BYTES:
        return f"{prefix}{gene_name}.h5"
    digest = hashlib.sha256(gene_name.encode("utf-8", "surrogatepass")).hexdigest()[:NAME_HASH_DIGITS]
    room = MAX_GENE_FILE_BYTES - len(prefix) - len(digest) - len("~.h5")
    return f"{prefix}{_UNSAFE.sub('_', gene_name)[:max(room, 0)]}~{digest}.h5"


def gene_file_path(directory: str | os.PathLike, gene_index: int, gene_name: str, n_genes: int) -> Path:
    """Where the per-gene file of gene ``gene_index`` lies in ``directory`` (every reader and
    writer of per-gene files uses this)."""
    return Path(directory) / gene_file_name(gene_index, gene_name, n_genes)


def task_id_from_env(environ: Mapping[str, str] | None = None) -> int | None:
    """The 1-based array task id from SGE_TASK_ID or SLURM_ARRAY_TASK_ID, if set."""
    env = os.environ if environ is None else environ
    for name in ("SGE_TASK_ID", "SLURM_ARRAY_TASK_ID"):
        value = env.get(name, "")
        if value.isdigit():
            return int(value)
    return None


def index_entry(gene_index: int) -> str:
    """How a gene list file names a gene by its 0-based index: ``index:5``."""
    return f"{INDEX_PREFIX}{gene_index}"


def read_gene_list(path: str | os.PathLike, gene_names: Sequence[str]) -> list[int]:
    """Gene indices (0-based, ascending, unique) from a file of one entry a line.

    An entry that is a gene name is that gene (so a gene named ``100`` is never read as an
    index); ``index:N`` is the gene with 0-based index N. Anything else, a bare number
    included, is refused with the list of unknown entries.
    """
    lookup = {name: i for i, name in enumerate(gene_names)}
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read gene list ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: gene list is not UTF-8 text (byte {exc.start})") from None
    indices, unknown = [], []
    for line in text.replace("\r\n", "\n").split("\n"):
        token = line.strip()
        if not token:
            continue
        if line in lookup or token in lookup:
            indices.append(lookup[line] if line in lookup else lookup[token])
            continue
        number = token[len(INDEX_PREFIX):].strip() if token.startswith(INDEX_PREFIX) else None
        if number is not None and number.isascii() and number.isdigit() and int(number) < len(gene_names):
            indices.append(int(number))
        else:
            unknown.append(token)
    if unknown:
        shown = ", ".join(repr(t) if not t.isprintable() else t for t in unknown[:10])
        shown += " ..." if len(unknown) > 10 else ""
        hint = ""
        if any(t.isascii() and t.isdigit() for t in unknown):
            hint = f" (not gene names; write a 0-based index as {INDEX_PREFIX}N)"
        elif any(t.startswith(INDEX_PREFIX) for t in unknown):
            hint = f" (indices must be {INDEX_PREFIX}0..{INDEX_PREFIX}{len(gene_names) - 1})"
        raise InputError(f"{path}: {len(unknown)} unknown gene(s): {shown}{hint}")
    return sorted(set(indices))


def select_genes(
    n_genes: int,
    *,
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
