"""Stage 02b contract: bootstrap of the selected edges of one reference gene.

``--fdr-alpha`` and ``--n-bootstrap`` only check the inputs (02a's level, 01's B): their
effect reaches 02b's output through the 02a and 01 digests, so they are not content here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dcoex.edge_files import BOOT_PRECISIONS
from dcoex.stages.contract import Param, StageContract, Upstream
from dcoex.stages.params import BATCH_SIZE, CI_ALPHA, DEVICE, EDGE_SELECTION, choice, number, whole
from dcoex.stages.s01_bootstrap_indices.contract import boot_digest

CHECK_FDR_ALPHA = Param("fdr_alpha", None, "Refuse base files made with another BH level (default: no check).",
                        number("--fdr-alpha", low=0, high=1, low_open=True), content=False, driver=False)
CHECK_N_BOOTSTRAP = Param("n_bootstrap", None, "Refuse an indices file with another B (default: no check).",
                          whole("--n-bootstrap", low=1), content=False, driver=False,
                          metavar="N")
STORE_REPLICATES = Param("store_replicates", False, "Also store every replicate's delta (B per edge; large).",
                         lambda text: text, switch=True, driver=False)

BOOT_PRECISION = Param(
    "boot_precision", "float32",
    "How delta_mean, delta_std, ci_low, ci_high are stored: float32, or compact (int16 steps of 2^-14 "
    "rounded away from zero, std as float16: about half the file; docs/stage02b.md).",
    choice("--boot-precision", BOOT_PRECISIONS), metavar="P", added=True)


def _inputs(values: Mapping[str, Any], upstream: Upstream, gene: int | None) -> dict[str, str]:
    assert gene is not None
    return {"expression": upstream.provenance("00", None).digest,
            "bootstrap": boot_digest(upstream.provenance("01", None), gene),
            "base_correlations": upstream.provenance("02a", gene).digest}


CONTRACT = StageContract(
    stage="02b", package="s02b_bootstrap_edges", title="bootstrap significant edges",
    output="bootstrap_significant", per_gene=True, upstream=("00", "01", "02a"),
    params=(EDGE_SELECTION, CI_ALPHA, CHECK_FDR_ALPHA, CHECK_N_BOOTSTRAP, BATCH_SIZE, STORE_REPLICATES, BOOT_PRECISION,
            DEVICE),
    format="dcoex.bootstrap_edges", format_version=3, inputs_of=_inputs,
)
