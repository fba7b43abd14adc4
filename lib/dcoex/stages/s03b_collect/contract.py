"""Stage 03b contract: the summary of every reference gene's network and rewiring_hubs.tsv.

Its input digest covers the reference genes collected (in order) and each one's network
digest, so a network recomputed with other parameters, or another gene list, makes it stale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dcoex.provenance import digest_of
from dcoex.stages.contract import MissingUpstream, StageContract, Upstream

HUBS_TSV = "rewiring_hubs.tsv"
#: Extra attribute of the summary's /provenance: SHA-256 of the rewiring_hubs.tsv written with it.
TSV_SHA_ATTR = "tsv_sha256"


def networks_digest(genes: Sequence[int], upstream: Upstream) -> str:
    """Digest of the collected genes and their network digests ("missing" where none)."""
    entries = []
    for g in genes:
        try:
            entries.append([int(g), upstream.provenance("03", int(g)).digest])
        except MissingUpstream:
            entries.append([int(g), "missing"])
    return digest_of("03b.networks", entries)


def _inputs(values: Mapping[str, Any], upstream: Upstream, gene: int | None) -> dict[str, str]:
    return {"networks": networks_digest(values["genes"], upstream)}


CONTRACT = StageContract(
    stage="03b", package="s03b_collect", title="collect networks", output="differential_network_summary.h5",
    per_gene=False, upstream=("03",), params=(), format="dcoex.network_summary", format_version=1,
    inputs_of=_inputs, files=(HUBS_TSV,),
)
