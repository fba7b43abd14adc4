"""The pipeline's stages as the driver sees them: their contracts, in order, and the command
line of each (paths from the run's layout, parameters from the contract)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dcoex.stages import STAGE_PACKAGES, stage_contract
from dcoex.stages.contract import StageContract
from dcoex.stages.s03b_collect.contract import HUBS_TSV
from dcoex.stages.s04_focus_topology.contract import FOCUS_TSV
from dcoex.stages.s08_permutation_pvalues.contract import PVALS_TSV

STAGE_ORDER = tuple(STAGE_PACKAGES)
#: Per-gene stages form one chain with per-task dependencies (task i after task i).
PER_GENE_CHAIN = ("02a", "02b", "03")
STAGES: dict[str, StageContract] = {s: stage_contract(s) for s in STAGE_ORDER}


def is_array(stage: str) -> bool:
    """Run as an array job: per reference gene, or over the stage's own parts (07)."""
    return STAGES[stage].per_gene or STAGES[stage].parts is not None


def dependencies(stage: str, planned: list[str]) -> list[str]:
    """The stages of ``planned`` that ``stage`` must wait for: its nearest ancestors there
    (upstream stages, transitively, that are not also ancestors of another one)."""

    def ancestors(s: str) -> set[str]:
        found: set[str] = set()
        for u in (*STAGES[s].upstream, *STAGES[s].runs_after):
            found |= {u} | ancestors(u)
        return found

    mine = [s for s in planned if s in ancestors(stage)]
    return [s for s in mine if not any(s in ancestors(other) for other in mine if other != s)]

__all__ = ["HUBS_TSV", "PER_GENE_CHAIN", "PVALS_TSV", "STAGES", "STAGE_ORDER", "dependencies", "is_array",
           "stage_argv"]


def _paths(stage: str, out_dir: Path, expr_h5: Path, params: Mapping[str, Any]) -> list[tuple[str, object]]:
    """The stage's input/output path flags in the run's layout (``out_dir``)."""
    out = {s: STAGES[s].output_path(out_dir) for s in STAGES}
    return {
        "00": [("--expr-tsv", params.get("expr_tsv")), ("--out-h5", expr_h5)],
        "01": [("--in-h5", expr_h5), ("--out-h5", out["01"])],
        "02a": [("--expr-h5", expr_h5), ("--indices-h5", out["01"]), ("--out-dir", out["02a"])],
        "02b": [("--expr-h5", expr_h5), ("--indices-h5", out["01"]), ("--base-dir", out["02a"]),
                ("--out-dir", out["02b"])],
        "03": [("--base-dir", out["02a"]), ("--boot-dir", out["02b"]), ("--out-dir", out["03"]),
               ("--expr-h5", expr_h5)],
        "03b": [("--networks-dir", out["03"]), ("--out-h5", out["03b"]), ("--out-focus-tsv", out_dir / HUBS_TSV),
                ("--gene-list", params.get("gene_list_file"))],
        "07": [("--expr-h5", expr_h5), ("--indices-h5", out["01"]), ("--out-dir", out["07"])],
        "08": [("--summary-h5", out["03b"]), ("--hubs-tsv", out_dir / HUBS_TSV), ("--base-dir", out["02a"]),
               ("--null-dir", out["07"]), ("--out-h5", out["08"]), ("--out-tsv", out_dir / PVALS_TSV)],
        "04": [("--networks-dir", out["03"]), ("--summary-h5", out["03b"]), ("--out-h5", out["04"]),
               ("--out-tsv", out_dir / FOCUS_TSV)],
        "05": [("--out-dir", out_dir)],
    }[stage]


def stage_argv(stage: str, out_dir: Path, expr_h5: Path, params: Mapping[str, Any]) -> list[str]:
    """The stage's command-line arguments (after ``-m dcoex.stages.<package>``).

    Every parameter the stage declares and the run has a value for (``params``: the driver's
    parameters by name) is passed, so a stage never falls back to a default the driver does
    not know; stage 01's compression threads are the task's slots.
    """
    contract = STAGES[stage]
    argv: list[str] = []
    for flag, value in _paths(stage, out_dir, expr_h5, params):
        if value is not None:
            argv += [flag, str(value)]
    values = dict(params)
    if stage == "01":
        values["threads"] = params.get("slots")
    for p in contract.params:
        value = values.get(p.name)
        if value is None:
            continue
        if p.switch:
            argv += [p.flag] if value else []
        else:
            argv += [p.flag, str(value)]
    if contract.per_gene:
        argv += ["--genes-per-task", str(params["genes_per_task"])]
        if params.get("gene_list_file"):
            argv += ["--gene-list", str(params["gene_list_file"])]
    if params.get("force"):
        argv.append("--force")
    argv.append("--quiet")
    return argv
