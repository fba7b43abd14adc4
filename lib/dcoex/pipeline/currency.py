"""Which outputs of a run are current, and why the others must be (re)computed.

The planner asks each stage's contract for the provenance it would record now
(:meth:`StageContract.wanted`) and compares it with what each output records
(:func:`dcoex.provenance.why_stale`): the same two functions the stages call before they
skip an output. Upstream digests are the *wanted* ones, chained down the pipeline, so a
change anywhere makes exactly the outputs computed from it stale, before anything runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcoex.expression_tsv import tsv_sha256
from dcoex.genes import gene_file_path
from dcoex.pipeline.stages import STAGES
from dcoex.provenance import Provenance, read_provenance, read_provenance_attr, why_stale
from dcoex.stages.contract import MissingUpstream
from dcoex.stages.s03b_collect.contract import TSV_SHA_ATTR
from dcoex.stages.s05_export.contract import optional_inputs_digest, why_export_stale
from dcoex.stages.upstream import FileUpstream, expression_provenance, tsv_provenance


class PlanUpstream:
    """The provenance every output of the run *will* have: wanted, not read (except inputs
    the run does not make: a given ``--expr-h5``, network files of genes outside the run)."""

    def __init__(self, *, out_dir: Path, expr_h5: Path, expr_tsv: str | None, params: Mapping[str, Any],
                 gene_names: Sequence[str], universe: Sequence[int]) -> None:
        self.out_dir, self.expr_h5, self.expr_tsv = Path(out_dir), Path(expr_h5), expr_tsv
        self.params = dict(params)
        self.gene_names = list(gene_names)
        self.universe = set(int(g) for g in universe)
        self._memo: dict[tuple[str, int | None], Provenance] = {}
        self._files = FileUpstream(dirs={"03": STAGES["03"].output_path(self.out_dir)}, gene_names=gene_names)

    def provenance(self, stage: str, gene: int | None) -> Provenance:
        key = (stage, gene)
        if key not in self._memo:
            self._memo[key] = self._wanted(stage, gene)
        return self._memo[key]

    def _wanted(self, stage: str, gene: int | None) -> Provenance:
        if stage == "tsv":
            if not self.expr_tsv:
                raise MissingUpstream("no --expr-tsv")
            return tsv_provenance(tsv_sha256(self.expr_tsv))
        if stage == "00" and not self.expr_tsv:
            return expression_provenance(self.expr_h5)
        if stage == "03" and gene is not None and gene not in self.universe:
            return self._files.provenance(stage, gene)
        values = dict(self.params)
        if stage == "03b":
            values["genes"] = collected_genes(self.out_dir, self.gene_names, self.universe)
        if stage == "05":
            values["optional"] = optional_inputs_digest(self.out_dir)
        return STAGES[stage].wanted(values, self, gene)


def collected_genes(out_dir: Path, gene_names: Sequence[str], universe: set[int]) -> list[int]:
    """The rows stage 03b will write: the run's genes and any gene with a network file."""
    folder = STAGES["03"].output_path(out_dir)
    extra: set[int] = set()
    if folder.is_dir():
        for path in folder.glob("*.h5"):
            recorded = read_provenance(path) if not path.name.startswith(".") else None
            index = _gene_of(path, gene_names) if recorded is not None else None
            if index is not None and index not in universe:
                extra.add(index)
    return sorted(universe | extra)


def _gene_of(path: Path, gene_names: Sequence[str]) -> int | None:
    """The gene index of a per-gene file named by ``gene_file_path`` (None if it is not one)."""
    head = path.name.split("_", 1)[0]
    if not head.isdigit():
        return None
    index = int(head)
    n = len(gene_names)
    ok = 0 <= index < n and gene_file_path(path.parent, index, gene_names[index], n).name == path.name
    return index if ok else None


@dataclass
class StageStatus:
    """What is stale in one stage: per gene (per-gene stages; for an array over parts, per part
    number) or the whole output, and why."""

    stage: str
    stale_genes: dict[int, str] = field(default_factory=dict)
    whole: str | None = None

    @property
    def current(self) -> bool:
        return not self.stale_genes and self.whole is None

    def why(self, n_genes: int | None = None) -> str:
        """The reasons, most frequent first: "fdr_alpha 0.05 → 0.3 (400 of 400 genes)" (parts
        for an array over parts: ``n_genes`` is then their number)."""
        if self.whole is not None:
            return self.whole
        counts = Counter(self.stale_genes.values())
        total = f" of {n_genes}" if n_genes else ""
        unit = "parts" if STAGES[self.stage].parts is not None else "genes"
        parts = [f"{reason} ({count}{total} {unit})" for reason, count in counts.most_common(3)]
        if len(counts) > 3:
            parts.append(f"{len(counts) - 3} other reasons")
        return "; ".join(parts)


def stage_status(stage: str, upstream: PlanUpstream, genes: Sequence[int]) -> StageStatus:
    """Compare ``stage``'s outputs with what it would record now."""
    contract = STAGES[stage]
    out = contract.output_path(upstream.out_dir)
    status = StageStatus(stage)
    try:
        if contract.parts is not None:  # array over its own parts: stale_genes holds stale part numbers
            for unit, name in enumerate(contract.parts(upstream.params)):
                reason = why_stale(out / name, upstream.provenance(stage, unit))
                if reason is not None:
                    status.stale_genes[unit] = reason
            return status
        if contract.per_gene:
            n = len(upstream.gene_names)
            for g in genes:
                path = gene_file_path(out, g, upstream.gene_names[g], n)
                reason = why_stale(path, upstream.provenance(stage, g))
                if reason is not None:
                    status.stale_genes[g] = reason
            return status
        path = upstream.expr_h5 if stage == "00" else out
        status.whole = (why_export_stale(path, upstream.provenance(stage, None)) if stage == "05"
                        else why_stale(path, upstream.provenance(stage, None)))
        for name in contract.files if status.whole is None else ():  # 03b, 04, 08: the TSV written with it
            tsv = upstream.out_dir / name
            recorded = read_provenance_attr(path, TSV_SHA_ATTR)
            if not tsv.is_file():
                status.whole = f"{name} missing"
            elif recorded != _file_sha256(tsv):
                status.whole = f"{name} differs from the one written with {contract.output}"
    except MissingUpstream as exc:
        status.whole = str(exc)
    return status


def _file_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
