"""The pipeline's stages: ids, modules, outputs and the command line of each."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

STAGE_ORDER = ("00", "01", "02a", "02b", "03", "03b")
#: Per-gene stages form one chain with per-task dependencies (task i after task i).
PER_GENE_CHAIN = ("02a", "02b", "03")


@dataclass(frozen=True)
class StageSpec:
    """One stage: its id, module under ``dcoex.stages``, output (file or folder)."""

    stage: str
    module: str
    output: str  # relative to the run's out dir
    per_gene: bool
    title: str

    def output_path(self, out_dir: Path) -> Path:
        return out_dir / self.output


STAGES = {
    "00": StageSpec("00", "s00_convert", "expression.h5", False, "convert TSV to HDF5"),
    "01": StageSpec("01", "s01_bootstrap_indices", "bootstrap_indices.h5", False, "groups + bootstrap indices"),
    "02a": StageSpec("02a", "s02a_base_correlations", "base_correlations", True, "base correlations"),
    "02b": StageSpec("02b", "s02b_bootstrap_edges", "bootstrap_significant", True, "bootstrap significant edges"),
    "03": StageSpec("03", "s03_network", "networks", True, "differential network"),
    "03b": StageSpec("03b", "s03b_collect", "differential_network_summary.h5", False, "collect networks"),
}
HUBS_TSV = "rewiring_hubs.tsv"


def stage_options(stage: str) -> set[str] | None:
    """Long option names the stage's click command accepts, or None if it cannot be imported."""
    try:
        module = importlib.import_module(f"dcoex.stages.{STAGES[stage].module}.cli")
        command = module.main
    except Exception:  # noqa: BLE001 - a stage still being written, or broken: reported by the caller
        return None
    names: set[str] = set()
    for param in getattr(command, "params", []):
        names.update(o for o in getattr(param, "opts", []) if o.startswith("--"))
    return names


def stage_defaults(stage: str) -> dict[str, object]:
    """Defaults of the stage's click options, by parameter name (what it uses when not told)."""
    module = importlib.import_module(f"dcoex.stages.{STAGES[stage].module}.cli")
    return {p.name: p.default for p in module.main.params}


def stage_argv(stage: str, out_dir: Path, expr_h5: Path, params: dict, accepted: set[str] | None) -> list[str]:
    """The stage's command-line arguments (after ``-m dcoex.stages.<module>``).

    Optional flags the stage does not accept (``accepted``) are left out; the required
    ones are always given so a mismatch fails loudly in the job.
    """
    spec_dir = {s: STAGES[s].output_path(out_dir) for s in STAGES}
    indices = spec_dir["01"]
    required: list[tuple[str, object]] = []
    optional: list[tuple[str, object]] = []
    if stage == "00":
        required = [("--expr-tsv", params["expr_tsv"]), ("--out-h5", expr_h5)]
    elif stage == "01":
        required = [("--in-h5", expr_h5), ("--out-h5", indices)]
        optional = [
            ("--low-frac", params["low_frac"]), ("--high-frac", params["high_frac"]),
            ("--n-bootstrap", params["n_bootstrap"]), ("--bootstrap-frac", params["bootstrap_frac"]),
            ("--seed", params["seed"]), ("--batch-size", params["batch_size"]),
            ("--threads", params.get("slots")),
        ]
    elif stage == "02a":
        required = [("--expr-h5", expr_h5), ("--indices-h5", indices), ("--out-dir", spec_dir["02a"])]
        optional = [("--fdr-alpha", params["fdr_alpha"]), ("--batch-size", params["batch_size"])]
    elif stage == "02b":
        required = [("--expr-h5", expr_h5), ("--indices-h5", indices), ("--base-dir", spec_dir["02a"]),
                    ("--out-dir", spec_dir["02b"])]
        optional = [("--edge-selection", params["edge_selection"]), ("--fdr-alpha", params["fdr_alpha"]),
                    ("--n-bootstrap", params["n_bootstrap"]), ("--batch-size", params["batch_size"])]
    elif stage == "03":
        required = [("--base-dir", spec_dir["02a"]), ("--boot-dir", spec_dir["02b"]), ("--out-dir", spec_dir["03"])]
        optional = [("--expr-h5", expr_h5)]
    elif stage == "03b":
        required = [("--networks-dir", spec_dir["03"]), ("--out-h5", spec_dir["03b"]),
                    ("--out-focus-tsv", out_dir / HUBS_TSV)]
        optional = [("--gene-list", params.get("gene_list_file"))]
    argv: list[str] = []
    for flag, value in required:
        argv += [flag, str(value)]
    for flag, value in optional:
        if value is not None and (accepted is None or flag in accepted):
            argv += [flag, str(value)]
    if STAGES[stage].per_gene:
        argv += ["--genes-per-task", str(params["genes_per_task"])]
        if params.get("gene_list_file"):
            argv += ["--gene-list", str(params["gene_list_file"])]
        if params.get("force"):
            argv.append("--force")
    if accepted is None or "--quiet" in accepted:
        argv.append("--quiet")
    return argv
