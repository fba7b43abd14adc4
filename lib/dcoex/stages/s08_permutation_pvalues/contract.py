"""Stage 08 contract: empirical p-values and BH q-values of the hub metrics.

Its inputs are the 03b summary (whose digest covers every network, hence every 02a file the
observed values are read from) and every part of the stage-07 null of the run's split.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dcoex.provenance import digest_of
from dcoex.stages.contract import Param, StageContract, Upstream
from dcoex.stages.params import N_PERMUTATIONS, PERMS_PER_TASK, number
from dcoex.stages.s07_permutation_null.contract import n_parts

PVALS_TSV = "rewiring_hubs_with_pvals.tsv"
PERM_ALPHA = Param("perm_alpha", 0.05, "q-value level counted by n_metrics_sig / any_sig, (0, 1].",
                   number("--perm-alpha", low=0, high=1, low_open=True), driver=False)


def _inputs(values: Mapping[str, Any], upstream: Upstream, gene: int | None) -> dict[str, str]:
    parts = [upstream.provenance("07", unit).digest for unit in range(n_parts(values))]
    return {"summary": upstream.provenance("03b", None).digest, "null": digest_of("07.parts", parts)}


CONTRACT = StageContract(
    stage="08", package="s08_permutation_pvalues", title="permutation p-values", output="permutation_pvalues.h5",
    per_gene=False, upstream=("02a", "03b", "07"), params=(N_PERMUTATIONS, PERMS_PER_TASK, PERM_ALPHA),
    format="dcoex.permutation_pvalues", format_version=1, inputs_of=_inputs, files=(PVALS_TSV,), optional=True,
)
