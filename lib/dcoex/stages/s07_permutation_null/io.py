"""Stage 07 part files ``permutation_null/perm_<first>-<last>.h5`` (layout: docs/stage07.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dcoex.h5io import decode_strings, filter_options, open_h5_input, read_meta, write_attrs, write_dataset
from dcoex.provenance import Provenance, read_provenance
from dcoex.stages.contract import MissingUpstream
from dcoex.stages.s07_permutation_null.contract import part_name, part_ranges
from dcoex.stages.s07_permutation_null.science import METRICS
from dcoex.stages.upstream import FileUpstream
from hpc.errors import InputError

#: Chunk of a null dataset: permutations × genes.
CHUNK_PERMS = 64
CHUNK_GENES = 2048


def null_dataset(group: h5py.Group, name: str, values: np.ndarray) -> h5py.Dataset:
    """``group[name]`` = a (permutations, genes) float64 null matrix, chunked and always
    compressed (shuffle + gzip: mostly zeros and NaN), whatever its size."""
    shape = values.shape
    chunks = (max(1, min(shape[0], CHUNK_PERMS)), max(1, min(shape[1], CHUNK_GENES)))
    return group.create_dataset(name, data=values, chunks=chunks, **filter_options("gzip"))


def write_part(f: h5py.File, *, meta: Mapping[str, Any], gene_names: Sequence[str], null: Mapping[str, np.ndarray],
               per_permutation: Mapping[str, np.ndarray]) -> None:
    """``meta`` attrs, ``gene_names``, ``metrics`` (names, in order), ``null/<metric>``
    (n_part × N float64) and ``permutation/<count>`` (one value per permutation)."""
    write_attrs(f.create_group("meta"), meta)
    write_dataset(f, "gene_names", np.asarray(list(gene_names), dtype=object))
    write_dataset(f, "metrics", np.asarray(METRICS, dtype=object))
    group = f.create_group("null")
    for name in METRICS:
        null_dataset(group, name, null[name])
    perm = f.create_group("permutation")
    for name, values in per_permutation.items():
        write_dataset(perm, name, values)


def read_part(path: Path, metric: str) -> np.ndarray:
    """The null matrix of one metric of one part (n_part × N float64)."""
    with open_h5_input(path, "permutation null part") as f:
        return np.asarray(f["null"][metric][...], dtype=np.float64)


def part_meta(path: Path) -> dict[str, Any]:
    with open_h5_input(path, "permutation null part") as f:
        meta = read_meta(f["meta"])
        meta["metrics"] = decode_strings(f["metrics"][...])
        return meta


def part_paths(null_dir: Path, n_permutations: int, perms_per_task: int) -> list[Path]:
    """The part files of a split of ``n_permutations`` into tasks of ``perms_per_task``."""
    return [Path(null_dir) / part_name(a, b) for a, b in part_ranges(n_permutations, perms_per_task)]


class NullUpstream(FileUpstream):
    """FileUpstream that also knows stage 07's parts: ``provenance("07", u)`` reads part u."""

    def __init__(self, *, null_dir: Path, n_permutations: int, perms_per_task: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.parts = part_paths(null_dir, n_permutations, perms_per_task)

    def provenance(self, stage: str, gene: int | None) -> Provenance:
        if stage != "07":
            return super().provenance(stage, gene)
        assert gene is not None
        path = self.parts[gene]
        if not path.is_file():
            raise MissingUpstream(f"{path}: missing (run stage 07 task {gene + 1})")
        recorded = read_provenance(path)
        if recorded is None:
            raise InputError(f"{path}: not a readable stage-07 part (no provenance)")
        return recorded
