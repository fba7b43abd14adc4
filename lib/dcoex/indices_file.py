"""Read ``bootstrap_indices.h5`` (stage 01) one reference gene at a time."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from dcoex.h5io import attr_value, open_h5_input
from hpc.errors import InputError

_DATASETS = ("indices/low", "indices/high", "indices/low_boot", "indices/high_boot")


class IndicesFile:
    """An open ``bootstrap_indices.h5`` (read-only); InputError for a file that is not one."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._file = open_h5_input(self.path, "bootstrap indices file")
        try:
            missing = [name for name in _DATASETS if name not in self._file]
            if missing or "meta" not in self._file:
                raise InputError(f"{self.path}: not a bootstrap indices file: missing {', '.join(missing) or 'meta'}")
            meta = self._file["meta"].attrs
            self.meta = {key: meta[key] for key in meta}
            self.n_genes = int(self._file["indices/low"].shape[0])
            self.k_low = int(self._file["indices/low"].shape[1])
            self.k_high = int(self._file["indices/high"].shape[1])
            self.n_bootstrap = int(self._file["indices/low_boot"].shape[1])
            self.kr_low = int(self._file["indices/low_boot"].shape[2])
            self.kr_high = int(self._file["indices/high_boot"].shape[2])
            for name in _DATASETS:
                if self._file[name].shape[0] != self.n_genes:
                    raise InputError(f"{self.path}: /{name} has {self._file[name].shape[0]} genes, /indices/low {self.n_genes}")
        except InputError:
            self._file.close()
            raise

    @property
    def expr_sha(self) -> str:
        return str(attr_value(self.meta.get("expr_content_sha256", "")))

    def check_expression(self, n_genes: int, n_samples: int, expr_sha: str, expr_path: object) -> None:
        """InputError unless this file was made from that expression store."""
        if self.expr_sha and self.expr_sha != expr_sha:
            raise InputError(
                f"{self.path}: made from a different expression file (expr sha {self.expr_sha[:12]}…, "
                f"{expr_path} has {expr_sha[:12]}…); rerun stage 01 on it"
            )
        if self.n_genes != n_genes:
            raise InputError(f"{self.path}: covers {self.n_genes} genes, {expr_path} has {n_genes}; rerun stage 01")
        if "n_samples" in self.meta and int(self.meta["n_samples"]) != n_samples:
            raise InputError(f"{self.path}: made for {int(self.meta['n_samples'])} samples, {expr_path} has {n_samples}")

    def groups(self, gene: int) -> tuple[np.ndarray, np.ndarray]:
        """LOW and HIGH sample indices of reference gene ``gene`` (int64, ascending)."""
        low = np.asarray(self._file["indices/low"][gene], dtype=np.int64)
        high = np.asarray(self._file["indices/high"][gene], dtype=np.int64)
        return low, high

    def boot(self, gene: int) -> tuple[np.ndarray, np.ndarray]:
        """Bootstrap sample indices of ``gene``: (B, k_rL) and (B, k_rH) int64."""
        low = np.asarray(self._file["indices/low_boot"][gene], dtype=np.int64)
        high = np.asarray(self._file["indices/high_boot"][gene], dtype=np.int64)
        return low, high

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> IndicesFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_groups(low: np.ndarray, high: np.ndarray, n_samples: int, gene: int) -> None:
    """ValueError unless groups are ascending, in range, disjoint and >= 4 samples."""
    for name, group in (("low", low), ("high", high)):
        if group.size < 4:
            raise ValueError(f"{name} group of gene {gene} has {group.size} samples (< 4)")
        if group.min() < 0 or group.max() >= n_samples or np.any(np.diff(group) <= 0):
            raise ValueError(f"{name} group of gene {gene} is not ascending sample indices in 0..{n_samples - 1}")
    if np.intersect1d(low, high).size:
        raise ValueError(f"LOW and HIGH groups of gene {gene} overlap")


def groups_sha(low: np.ndarray, high: np.ndarray) -> str:
    """sha256 of the two groups (int32 little-endian, LOW then HIGH)."""
    sha = hashlib.sha256()
    for group in (low, high):
        sha.update(np.ascontiguousarray(group, dtype="<i4").tobytes())
    return sha.hexdigest()
