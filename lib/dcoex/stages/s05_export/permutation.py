"""Readers of the optional permutation results (stages 07 and 08) that stage 05 draws.

Permutation null (stage 07), ``permutation_null.h5``:

| path | content |
|---|---|
| ``null/values`` | float (P, G, M): permutation × gene × metric |
| ``null/values`` attr ``metrics`` | the M metric names (rewiring_hubs.tsv column names) |
| ``null/values`` attr ``gene_names``, else dataset ``null/gene_names`` | the G gene names |

P-values (stage 08), ``rewiring_hubs_with_pvals.tsv``: the rewiring_hubs.tsv columns plus, per
metric m, ``m_pval`` and ``m_qval`` (BH q-value). A value that is empty or not a number is
missing.
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
        g, m = self.gene_names.index(gene), self.metrics.index(metric)
        with h5py.File(self.path, "r") as f:
            return f["null/values"][:, g, m].astype(np.float64)


def read_null(path: Path) -> NullValues | None:
    """The null's layout (not its values), or None when ``path`` does not exist; InputError
    (one line) when it exists but does not hold the layout above."""
    if not Path(path).is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            ds = f["null/values"]
            metrics = decode_strings(np.atleast_1d(ds.attrs["metrics"]))
            raw = ds.attrs["gene_names"] if "gene_names" in ds.attrs else f["null/gene_names"][()]
            genes = decode_strings(np.atleast_1d(raw))
            shape = ds.shape
    except (OSError, KeyError) as exc:
        raise InputError(f"{path}: not a permutation null file (expected null/values with attrs metrics, "
                         f"gene_names) ({exc})") from None
    if len(shape) != 3 or shape[1] != len(genes) or shape[2] != len(metrics):
        raise InputError(f"{path}: null/values has shape {shape}, expected (permutations, {len(genes)} genes, "
                         f"{len(metrics)} metrics)")
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
        p_col, q_col = f"{metric}_pval", f"{metric}_qval"
        if p_col not in fields and q_col not in fields:
            return None
        pval, qval = {}, {}
        for row in reader:
            pval[row["gene_id"]] = _number(row.get(p_col))
            qval[row["gene_id"]] = _number(row.get(q_col))
    return HubPvalues(metric, pval, qval)
