"""Stage 07 contract: the permutation null of the hub metrics, one part file per array task.

Part u holds permutations [u·K, min((u+1)·K, P)) (K = ``--perms-per-task``); its content
depends on that range, the seed, the tests and edge rules of the run, the expression and the
group sizes (expression digest + ``low_frac``/``high_frac``), never on the reference genes'
groups, the bootstrap or the task split. So ``--n-bootstrap`` does not touch it, and a larger
``--n-permutations`` keeps every complete part already computed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from dcoex.provenance import Provenance, digest_of
from dcoex.stages.contract import StageContract, Upstream
from dcoex.stages.params import (
    BATCH_SIZE,
    CORR_THRESHOLD,
    DEVICE,
    EDGE_SELECTION,
    FDR_ALPHA,
    MIN_EFFECT,
    N_PERMUTATIONS,
    PERMS_PER_TASK,
    SEED,
)

OUTPUT = "permutation_null"


def part_ranges(n_permutations: int, perms_per_task: int) -> list[tuple[int, int]]:
    """[first, stop) of every part (array task t = index + 1)."""
    p, k = int(n_permutations), int(perms_per_task)
    return [(a, min(a + k, p)) for a in range(0, p, k)]


def part_name(first: int, stop: int) -> str:
    """File name of the part holding permutations [first, stop)."""
    return f"perm_{first:07d}-{stop - 1:07d}.h5"


def _parts(values: Mapping[str, Any]) -> list[str]:
    p = N_PERMUTATIONS.value(values.get("n_permutations"))
    k = PERMS_PER_TASK.value(values.get("perms_per_task"))
    return [part_name(a, b) for a, b in part_ranges(p, k)]


def sizes_digest(indices: Provenance) -> str:
    """Digest of what fixes k_L and k_H: the expression (its S) and the two fractions."""
    return digest_of("01.sizes", indices.inputs["expression"], indices.params["low_frac"], indices.params["high_frac"])


def _inputs(values: Mapping[str, Any], upstream: Upstream, unit: int | None) -> dict[str, str]:
    assert unit is not None
    p = N_PERMUTATIONS.value(values.get("n_permutations"))
    k = PERMS_PER_TASK.value(values.get("perms_per_task"))
    first, stop = part_ranges(p, k)[unit]
    return {"expression": upstream.provenance("00", None).digest,
            "group_sizes": sizes_digest(upstream.provenance("01", None)),
            "permutations": f"{first}-{stop - 1}"}


def n_parts(values: Mapping[str, Any]) -> int:
    """Array tasks of stage 07 for these values."""
    p = N_PERMUTATIONS.value(values.get("n_permutations"))
    return math.ceil(p / PERMS_PER_TASK.value(values.get("perms_per_task")))


CONTRACT = StageContract(
    stage="07", package="s07_permutation_null", title="permutation null", output=OUTPUT, per_gene=False,
    upstream=("00", "01"),
    params=(N_PERMUTATIONS, PERMS_PER_TASK, SEED, FDR_ALPHA, EDGE_SELECTION, MIN_EFFECT, CORR_THRESHOLD, BATCH_SIZE,
            DEVICE),
    format="dcoex.permutation_null", format_version=1, inputs_of=_inputs, parts=_parts, optional=True,
)
