"""Stage 04 contract: the focus genes' topology across every reference gene's networks.

Its input digest is the 03b summary's digest, which covers every collected network's digest:
a recomputed network, another gene list or another summary makes it stale.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dcoex.stages.contract import StageContract, Upstream
from dcoex.stages.params import FOCUS_GENES, HUB_METRIC, N_HUBS

FOCUS_TSV = "focus_gene_topology.tsv"


def _inputs(values: Mapping[str, Any], upstream: Upstream, gene: int | None) -> dict[str, str]:
    return {"summary": upstream.provenance("03b", None).digest}


CONTRACT = StageContract(
    stage="04", package="s04_focus_topology", title="focus-gene topology", output="focus_gene_topology.h5",
    per_gene=False, upstream=("03", "03b"), params=(FOCUS_GENES, N_HUBS, HUB_METRIC),
    format="dcoex.focus_topology", format_version=1, inputs_of=_inputs, files=(FOCUS_TSV,),
)
