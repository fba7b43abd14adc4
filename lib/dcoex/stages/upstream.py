"""Input provenance read from the files on disk: what a running stage compares against."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import h5py

from dcoex.genes import gene_file_path
from dcoex.h5io import attr_value
from dcoex.provenance import Provenance, read_provenance
from dcoex.stages.contract import MissingUpstream

#: Provenance of an expression store made outside dcoex (no /provenance): its content checksum.
EXTERNAL_EXPRESSION = "external.expression"


def tsv_provenance(sha256: str) -> Provenance:
    """The pseudo-provenance of an input TSV: its content (SHA-256 of the decompressed bytes)."""
    return Provenance(stage="tsv", format="tsv", format_version=1, inputs={"sha256": sha256})


def expression_provenance(path: str | Path) -> Provenance:
    """expression.h5's provenance; for a store without one, a provenance of its content checksum."""
    recorded = read_provenance(path)
    if recorded is not None:
        return recorded
    try:
        with h5py.File(path, "r") as h5:
            sha = attr_value(h5.attrs.get("content_sha256"))
    except OSError:
        sha = None
    if not sha:
        raise MissingUpstream(f"{path}: no expression store (or no content_sha256)")
    return Provenance(stage="00", format=EXTERNAL_EXPRESSION, format_version=1, inputs={"content_sha256": str(sha)})


def external_file_provenance(stage: str, path: Path) -> Provenance:
    """The provenance of a per-gene input made outside dcoex (no /provenance): its bytes' SHA-256."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            sha.update(block)
    return Provenance(stage=stage, format=f"external.{stage}", format_version=1, inputs={"file_sha256": sha.hexdigest()})


class FileUpstream:
    """Provenance of the upstream outputs of a run's files (``dirs``: stage id → folder of a
    per-gene stage; ``files``: stage id → file of a whole stage; ``tsv_sha256`` for stage 00;
    ``known``: provenance given directly, by stage id)."""

    def __init__(self, *, files: dict[str, Path] | None = None, dirs: dict[str, Path] | None = None,
                 gene_names: Sequence[str] = (), tsv_sha256: str | None = None,
                 known: dict[str, Provenance] | None = None) -> None:
        self.files = {k: Path(v) for k, v in (files or {}).items()}
        self.dirs = {k: Path(v) for k, v in (dirs or {}).items()}
        self.gene_names = list(gene_names)
        self.tsv_sha256 = tsv_sha256
        self._whole: dict[str, Provenance] = dict(known or {})

    def provenance(self, stage: str, gene: int | None) -> Provenance:
        if stage == "tsv":
            if self.tsv_sha256 is None:
                raise MissingUpstream("the input TSV's checksum is unknown")
            return tsv_provenance(self.tsv_sha256)
        if stage in self._whole:
            return self._whole[stage]
        if stage in self.files:
            if stage not in self._whole:
                self._whole[stage] = self._read_whole(stage)
            return self._whole[stage]
        if stage in self.dirs and gene is not None:
            n = len(self.gene_names)
            path = gene_file_path(self.dirs[stage], gene, self.gene_names[gene], n)
            if not path.exists():
                raise MissingUpstream(f"{path}: missing (run stage {stage} for gene {gene})")
            return read_provenance(path) or external_file_provenance(stage, path)
        raise MissingUpstream(f"no input of stage {stage} was given")

    def _read_whole(self, stage: str) -> Provenance:
        path = self.files[stage]
        if stage == "00":
            return expression_provenance(path)
        recorded = read_provenance(path)
        if recorded is None:
            raise MissingUpstream(f"{path}: missing or without provenance (rerun stage {stage})")
        return recorded
