"""Stage 05 contract: export tables, ego networks and figures from a finished run.

Inputs: the 03b summary (which covers every network's digest) and the 04 output, plus the
optional permutation results of stages 07/08 when they lie in the run folder
(``OPTIONAL_INPUTS``): their bytes' SHA-256, or "absent", enter the digest, so a run that
gains p-values redraws its figures.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py

from dcoex.h5io import decode_strings
from dcoex.provenance import Provenance, digest_of, why_stale
from dcoex.stages.contract import StageContract, Upstream
from dcoex.stages.params import FOCUS_GENES, HUB_METRIC, N_HUBS
from dcoex.stages.s08_permutation_pvalues.contract import CONTRACT as PVALUES_CONTRACT
from dcoex.stages.s08_permutation_pvalues.contract import PVALS_TSV

#: The export folder in a run's folder, and its index (the output the driver checks).
EXPORT_DIR = "export"
INDEX_NAME = "export_index.h5"
#: Optional inputs in the run folder: stage 08's hub table with p/q-values and its HDF5 (which
#: holds the null values of stage 07).
NULL_H5 = PVALUES_CONTRACT.output
OPTIONAL_INPUTS = (PVALS_TSV, NULL_H5)


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            sha.update(block)
    return sha.hexdigest()


def optional_inputs_digest(run_dir: Path) -> str:
    """Digest of the optional inputs present in ``run_dir`` (each file's SHA-256 or "absent")."""
    entries = [[name, file_sha256(Path(run_dir) / name) if (Path(run_dir) / name).is_file() else "absent"]
               for name in OPTIONAL_INPUTS]
    return digest_of("05.optional", entries)


def why_export_stale(index: Path, wanted: Provenance) -> str | None:
    """None if the export index records ``wanted`` and every file it lists is there unchanged
    (what the stage and the planner both ask); otherwise why not."""
    reason = why_stale(index, wanted)
    if reason is not None:
        return reason
    try:
        with h5py.File(index, "r") as f:
            listed = list(zip(decode_strings(f["files"][()]), decode_strings(f["sha256"][()])))
    except (OSError, KeyError):
        return "unreadable index"
    for name, sha in listed:
        path = Path(index).parent / name
        if not path.is_file():
            return f"{EXPORT_DIR}/{name} missing"
        if file_sha256(path) != sha:
            return f"{EXPORT_DIR}/{name} changed"
    return None


def _inputs(values: Mapping[str, Any], upstream: Upstream, gene: int | None) -> dict[str, str]:
    return {"summary": upstream.provenance("03b", None).digest,
            "focus_topology": upstream.provenance("04", None).digest,
            "optional": str(values["optional"])}


CONTRACT = StageContract(
    stage="05", package="s05_export", title="export and figures", output=f"{EXPORT_DIR}/{INDEX_NAME}",
    per_gene=False, upstream=("03", "03b", "04"), runs_after=("07", "08"), params=(FOCUS_GENES, N_HUBS, HUB_METRIC),
    format="dcoex.export", format_version=1, inputs_of=_inputs,
)
