"""Stage 03 contract: the differential network of one reference gene."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dcoex.stages.contract import MissingUpstream, Param, StageContract, Upstream
from dcoex.stages.params import CORR_THRESHOLD, MIN_EFFECT, NO_CI_FILTER

ZERO_UNDEFINED = Param("zero_undefined", False,
                       "Write 0 instead of NaN for undefined ratios and means (established behaviour).",
                       lambda text: text, switch=True)


def _inputs(values: Mapping[str, Any], upstream: Upstream, gene: int | None) -> dict[str, str]:
    assert gene is not None
    try:  # a gene without 02a edges needs no 02b file
        boot = upstream.provenance("02b", gene).digest
    except MissingUpstream:
        boot = "missing"
    return {"base_correlations": upstream.provenance("02a", gene).digest, "bootstrap_edges": boot}


CONTRACT = StageContract(
    stage="03", package="s03_network", title="differential network", output="networks", per_gene=True,
    upstream=("02a", "02b"), params=(MIN_EFFECT, CORR_THRESHOLD, NO_CI_FILTER, ZERO_UNDEFINED),
    format="dcoex.network", format_version=2, inputs_of=_inputs,
)
