"""Stage 00 contract: TSV → ``expression.h5``; its digest follows the TSV's content only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dcoex.expression_tsv import DEFAULT_BLOCK_ROWS
from dcoex.stages.contract import Param, StageContract, Upstream
from dcoex.stages.params import choice, whole

COMPRESSION = Param("compression", "gzip", "Filter of /expr (with shuffle): gzip, lzf or none.",
                    choice("--compression", ("gzip", "lzf", "none")), content=False, driver=False, metavar="C")
COMPRESSION_LEVEL = Param("compression_level", 4, "gzip level, 0-9.", whole("--compression-level", low=0, high=9),
                          content=False, driver=False, metavar="N")
BLOCK_ROWS = Param("block_rows", DEFAULT_BLOCK_ROWS, "Genes parsed and written per block (memory).",
                   whole("--block-rows", low=1), content=False, driver=False, metavar="N")


def _inputs(values: Mapping[str, Any], upstream: Upstream, gene: int | None) -> dict[str, str]:
    return {"tsv": upstream.provenance("tsv", None).digest}


CONTRACT = StageContract(
    stage="00", package="s00_convert", title="convert TSV to HDF5", output="expression.h5", per_gene=False,
    upstream=(), params=(COMPRESSION, COMPRESSION_LEVEL, BLOCK_ROWS),
    format="dcoex.expression", format_version=1, inputs_of=_inputs,
)
