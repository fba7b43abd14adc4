"""Stage 02a contract: base correlations, tests and BH of one reference gene."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dcoex.stages.contract import Param, StageContract, Upstream
from dcoex.stages.params import BATCH_SIZE, DEVICE, FDR_ALPHA
from dcoex.stages.s01_bootstrap_indices.contract import groups_digest

EXACT_Q = Param("exact_q", False, "Compute every q-value exactly, also those >= alpha (more passes over the tiles; same memory).",
                lambda text: text, switch=True, driver=False)


def _inputs(values: Mapping[str, Any], upstream: Upstream, gene: int | None) -> dict[str, str]:
    assert gene is not None
    return {"expression": upstream.provenance("00", None).digest,
            "groups": groups_digest(upstream.provenance("01", None), gene)}


CONTRACT = StageContract(
    stage="02a", package="s02a_base_correlations", title="base correlations", output="base_correlations",
    per_gene=True, upstream=("00", "01"), params=(FDR_ALPHA, BATCH_SIZE, EXACT_Q, DEVICE),
    format="dcoex.base_correlations", format_version=3, inputs_of=_inputs,
)
