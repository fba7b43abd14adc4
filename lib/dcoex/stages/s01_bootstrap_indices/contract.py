"""Stage 01 contract: extreme groups and bootstrap indices of every gene.

Two per-gene digests derive from this file's provenance without reading it: the LOW/HIGH
groups of gene g depend only on the expression and the two fractions (no randomness); its
bootstrap draws on everything 01 records.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dcoex.provenance import Provenance, digest_of
from dcoex.stages.contract import Param, StageContract, Upstream
from dcoex.stages.params import BATCH_SIZE, BOOTSTRAP_FRAC, HIGH_FRAC, LOW_FRAC, N_BOOTSTRAP, SEED, choice, whole

COMPRESSION = Param("compression", "gzip", "Filter of the bootstrap datasets (with shuffle): gzip, lzf or none.",
                    choice("--compression", ("gzip", "lzf", "none")), content=False, driver=False, metavar="C")
COMPRESSION_LEVEL = Param("compression_level", 1, "gzip level, 1-9 (with --deflate-strategy default).",
                          whole("--compression-level", low=1, high=9), content=False, driver=False, metavar="N")
DEFLATE_STRATEGY = Param("deflate_strategy", "planes", "How gzip chunks are deflated: planes, rle or default.",
                         choice("--deflate-strategy", ("planes", "rle", "default")), content=False, driver=False,
                         metavar="S")
THREADS = Param("threads", None, "Compression threads [default: the CPUs available].",
                whole("--threads", low=1, high=64), content=False, driver=False, metavar="N")


def groups_digest(indices: Provenance, gene: int) -> str:
    """Digest of LOW_g/HIGH_g (expression and fractions only)."""
    return digest_of("01.groups", indices.inputs["expression"], indices.params["low_frac"],
                     indices.params["high_frac"], int(gene))


def boot_digest(indices: Provenance, gene: int) -> str:
    """Digest of gene g's bootstrap resamples (everything stage 01 records)."""
    return digest_of("01.boot", indices.digest, int(gene))


def _inputs(values: Mapping[str, Any], upstream: Upstream, gene: int | None) -> dict[str, str]:
    return {"expression": upstream.provenance("00", None).digest}


CONTRACT = StageContract(
    stage="01", package="s01_bootstrap_indices", title="groups + bootstrap indices", output="bootstrap_indices.h5",
    per_gene=False, upstream=("00",),
    params=(LOW_FRAC, HIGH_FRAC, N_BOOTSTRAP, BOOTSTRAP_FRAC, SEED, BATCH_SIZE, COMPRESSION, COMPRESSION_LEVEL,
            DEFLATE_STRATEGY, THREADS),
    format="dcoex.bootstrap_indices", format_version=1, inputs_of=_inputs,
)
