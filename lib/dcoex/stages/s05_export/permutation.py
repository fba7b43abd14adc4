"""Readers of the optional permutation results that stage 05 draws (stage 08's outputs).

``permutation_pvalues.h5`` (stage 08; docs/stage08.md): ``gene_names`` (N), ``metrics`` (M
names, rewiring_hubs.tsv columns) and ``null/<metric>`` float64 (P permutations, N genes).

``rewiring_hubs_with_pvals.tsv`` (stage 08): the rewiring_hubs.tsv columns plus, per tested
metric m, ``obs_m``, ``pval_m`` and ``qval_m`` (BH q-value across reference genes). A value
that is empty or not a number is missing.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from dcoex.h5io import decode_strings
from hpc.errors import InputError


@dataclass
class NullValues:
    """The permutation null of a run: ``values(gene, metric)`` reads one (P,) slice."""

    path: Path
    metrics: list[str]
    gene_names: list[str]
    n_permutations: int

    def values(self, gene: str, metric: str) -> np.ndarray:
        """The P null values of ``metric`` for ``gene`` (float64)."""
        g = self.gene_names.index(gene)
        with h5py.File(self.path, "r") as f:
            return f["null"][metric][:, g].astype(np.float64)


def read_null(path: Path) -> NullValues | None:
    """The null's layout (not its values), or None when ``path`` does not exist; InputError
    (one line) when it exists but does not hold the layout above."""
    if not Path(path).is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            metrics = decode_strings(np.atleast_1d(f["metrics"][()]))
            genes = decode_strings(np.atleast_1d(f["gene_names"][()]))
            shapes = {m: f["null"][m].shape for m in metrics}
    except (OSError, KeyError) as exc:
        raise InputError(f"{path}: not a permutation p-value file (expected gene_names, metrics and null/<metric>) "
                         f"({exc})") from None
    bad = {m: shp for m, shp in shapes.items() if len(shp) != 2 or shp[1] != len(genes)}
    if bad:
        m, shp = next(iter(bad.items()))
        raise InputError(f"{path}: null/{m} has shape {shp}, expected (permutations, {len(genes)} genes)")
    shape = (next(iter(shapes.values()))[0] if shapes else 0,)
    return NullValues(Path(path), metrics, genes, int(shape[0]))


@dataclass
class HubPvalues:
    """Per gene name, the p- and q-value of one metric (NaN where missing)."""

    metric: str
    pval: dict[str, float]
    qval: dict[str, float]

    @property
    def has_q(self) -> bool:
        return any(not math.isnan(v) for v in self.qval.values())


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def read_pvalues(path: Path, metric: str) -> HubPvalues | None:
    """``metric``'s p/q-values from stage 08's table, or None when the file does not exist or
    has neither column for that metric."""
    if not Path(path).is_file():
        return None
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        fields = reader.fieldnames or []
        if "gene_id" not in fields:
            raise InputError(f"{path}: no gene_id column")
        p_col, q_col = f"pval_{metric}", f"qval_{metric}"
        if p_col not in fields and q_col not in fields:
            return None
        pval, qval = {}, {}
        for row in reader:
            pval[row["gene_id"]] = _number(row.get(p_col))
            qval[row["gene_id"]] = _number(row.get(q_col))
    return HubPvalues(metric, pval, qval)
