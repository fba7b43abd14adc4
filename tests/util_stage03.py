"""Test helpers for stages 03/03b: write 02a/02b files with h5py in the layouts fixed in
the shared brief (independent of the 02a/02b code), random edge sets, HDF5 comparison."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dcoex.genes import gene_file_path

SHA = "0" * 64


def flat_index(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    return i * (2 * n - i - 1) // 2 + (j - i - 1)


def gene_names(n: int) -> list[str]:
    return [f"G{k}" for k in range(n)]


def random_pairs(n: int, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """m distinct unordered pairs (i < j) of n genes, sorted by flat index."""
    total = n * (n - 1) // 2
    flat = np.sort(rng.choice(total, size=m, replace=False))
    starts = flat_index(np.arange(n), np.arange(n) + 1, n)
    i = np.searchsorted(starts, flat, side="right") - 1
    j = flat - starts[i] + i + 1
    return i.astype(np.int32), j.astype(np.int32)


def make_edges(gene_i, gene_j, r_low, r_high, *, sig_low=None, sig_high=None, ci_low=None,
               ci_high=None) -> dict[str, np.ndarray]:
    """An edge table; by default both groups significant and CI = delta ± 0.05."""
    gene_i = np.asarray(gene_i, dtype=np.int32)
    r_low = np.asarray(r_low, dtype=np.float32)
    r_high = np.asarray(r_high, dtype=np.float32)
    delta = (r_high - r_low).astype(np.float32)
    m = gene_i.size
    ones = np.ones(m, dtype=bool)
    return {
        "gene_i": gene_i,
        "gene_j": np.asarray(gene_j, dtype=np.int32),
        "r_low": r_low,
        "r_high": r_high,
        "delta": delta,
        "sig_low": ones.copy() if sig_low is None else np.asarray(sig_low, dtype=bool),
        "sig_high": ones.copy() if sig_high is None else np.asarray(sig_high, dtype=bool),
        "ci_low": (delta - 0.05 if ci_low is None else np.asarray(ci_low)).astype(np.float32),
        "ci_high": (delta + 0.05 if ci_high is None else np.asarray(ci_high)).astype(np.float32),
    }


def random_edges(n: int, m: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    gi, gj = random_pairs(n, m, rng)
    r_low = rng.uniform(-1, 1, m)
    r_high = rng.uniform(-1, 1, m)
    e = make_edges(gi, gj, r_low, r_high, sig_low=rng.random(m) < 0.7, sig_high=rng.random(m) < 0.7)
    straddle = rng.random(m) < 0.2
    e["ci_low"][straddle] = -0.01
    e["ci_high"][straddle] = 0.01
    return e


def write_inputs(
    base_dir: Path,
    boot_dir: Path | None,
    gi: int,
    names: list[str],
    edges: Mapping[str, np.ndarray],
    *,
    base_meta: Mapping[str, Any] | None = None,
    boot_meta: Mapping[str, Any] | None = None,
    boot_pair_index: np.ndarray | None = None,
) -> tuple[Path, Path | None]:
    """Write base_correlations/{gi}_{gene}.h5 and (unless boot_dir is None) the matching
    bootstrap_significant file. Edges are sorted by flat index here."""
    n = len(names)
    pair = flat_index(edges["gene_i"], edges["gene_j"], n)
    order = np.argsort(pair, kind="stable")
    e = {k: np.asarray(v)[order] for k, v in edges.items()}
    pair = pair[order]
    m = pair.size
    p = np.linspace(1e-6, 1e-3, m)
    base_dir.mkdir(parents=True, exist_ok=True)
    base_path = gene_file_path(base_dir, gi, names[gi], n)
    with h5py.File(base_path, "w") as f:
        meta = f.create_group("meta")
        attrs = {
            "n_genes": n, "n_tests": n * (n - 1) // 2, "n_excluded": 0, "n_const_low": 0,
            "n_const_high": 0, "k_low": 20, "k_high": 20, "fdr_alpha": 0.05, "gene_index_used": gi,
            "gene_name": names[gi], "storage_mode": "sparse", "n_sig_low": int(e["sig_low"].sum()),
            "n_sig_high": int(e["sig_high"].sum()), "n_sig_differential": m, "n_sig_edges": m,
            "expr_content_sha256": SHA,
        }
        attrs.update(base_meta or {})
        for k, v in attrs.items():
            meta.attrs[k] = v
        f.create_dataset("gene_names", data=np.asarray(names, dtype=object), dtype=h5py.string_dtype())
        g = f.create_group("edges")
        g["pair_index"] = pair.astype(np.int64)
        g["gene_i"] = e["gene_i"].astype(np.int32)
        g["gene_j"] = e["gene_j"].astype(np.int32)
        for k in ("r_low", "r_high", "delta"):
            g[k] = e[k].astype(np.float32)
        for k in ("p_low", "p_high", "p_diff", "q_low", "q_high", "q_diff"):
            g[k] = p.astype(np.float64)
        g["sig_low"] = e["sig_low"].astype(bool)
        g["sig_high"] = e["sig_high"].astype(bool)
    if boot_dir is None:
        return base_path, None
    boot_dir.mkdir(parents=True, exist_ok=True)
    boot_path = gene_file_path(boot_dir, gi, names[gi], n)
    bpair = pair if boot_pair_index is None else np.asarray(boot_pair_index, dtype=np.int64)
    mb = bpair.size
    with h5py.File(boot_path, "w") as f:
        meta = f.create_group("meta")
        attrs = {
            "n_genes": n, "n_sig_edges": mb, "n_bootstrap": 100, "edge_selection_mode": "sig_differential",
            "ci_alpha": 0.05, "fdr_alpha": 0.05, "gene_index_used": gi, "gene_name": names[gi],
            "k_low": 20, "k_high": 20, "expr_content_sha256": SHA,
        }
        attrs.update(boot_meta or {})
        for k, v in attrs.items():
            meta.attrs[k] = v
        f.create_dataset("gene_names", data=np.asarray(names, dtype=object), dtype=h5py.string_dtype())
        f["edges/pair_index"] = bpair
        pos = np.searchsorted(pair, bpair)
        subset = bool(np.all(pos < m) and np.array_equal(pair[np.minimum(pos, max(m - 1, 0))], bpair)) if m else mb == 0

        def fit(x: np.ndarray) -> np.ndarray:
            """Values of the 02b edges: the matching 02a values, or any values if not a subset."""
            return x[pos] if subset else np.resize(x, mb)

        f["edges/gene_i"] = fit(e["gene_i"]).astype(np.int32)
        f["edges/gene_j"] = fit(e["gene_j"]).astype(np.int32)
        f["base/delta"] = fit(e["delta"]).astype(np.float32)
        f["base/r_low"] = fit(e["r_low"]).astype(np.float32)
        f["base/r_high"] = fit(e["r_high"]).astype(np.float32)
        f["boot/delta_mean"] = fit(e["delta"]).astype(np.float32)
        f["boot/delta_std"] = np.full(mb, 0.02, np.float32)
        f["boot/ci_low"] = fit(e["ci_low"]).astype(np.float32)
        f["boot/ci_high"] = fit(e["ci_high"]).astype(np.float32)
        f["boot/bias"] = np.zeros(mb, np.float32)
        f["boot/n_finite"] = np.full(mb, 100, np.int32)
        f["pval/bootstrap_pval"] = np.full(mb, 0.01, np.float64)
    return base_path, boot_path


def h5_differences(a: Path, b: Path, exclude: str = "memfit") -> list[str]:
    """Paths whose datasets or attributes differ between two HDF5 files (``exclude`` skipped)."""
    diffs: list[str] = []

    def attrs_equal(x, y) -> bool:
        if set(x.keys()) != set(y.keys()):
            return False
        for k in x.keys():
            u, v = x[k], y[k]
            if not np.array_equal(np.asarray(u), np.asarray(v), equal_nan=np.asarray(u).dtype.kind == "f"):
                return False
        return True

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names_a, names_b = [], []
        fa.visit(lambda n: names_a.append(n) if not n.startswith(exclude) else None)
        fb.visit(lambda n: names_b.append(n) if not n.startswith(exclude) else None)
        if sorted(names_a) != sorted(names_b):
            diffs.append("object lists differ")
        if not attrs_equal(fa.attrs, fb.attrs):
            diffs.append("/ attrs")
        for name in names_a:
            if name not in fb:
                continue
            x, y = fa[name], fb[name]
            if not attrs_equal(x.attrs, y.attrs):
                diffs.append(f"{name} attrs")
            if isinstance(x, h5py.Dataset):
                u, v = x[()], y[()]
                kind = np.asarray(u).dtype.kind
                if np.asarray(u).shape != np.asarray(v).shape or not np.array_equal(u, v, equal_nan=kind == "f"):
                    diffs.append(name)
    return diffs


def run_cli(script: str, *args: Any, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a stage shim (path relative to the repository root) with the test's python."""
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, str(root / script), *map(str, args)], capture_output=True, text=True, timeout=300,
        env={**os.environ, **(env or {})},
    )


STAGE03 = "src/scripts/03collect/03_reconstruct_diff_network.py"
STAGE03B = "src/scripts/03collect/03b_collect_networks.py"


def network_edges(path: Path) -> dict[str, np.ndarray]:
    """Every edge column of a stage 03 file (io.NETWORK_EDGE_DTYPES) through its reader."""
    from dcoex.stages.s03_network.io import NETWORK_EDGE_DTYPES, iter_network_edges

    with h5py.File(path, "r") as f:
        chunks = list(iter_network_edges(f, chunk_edges=7))
    return {name: np.concatenate([c[name] for c in chunks]) if chunks else np.zeros(0, dtype)
            for name, dtype in NETWORK_EDGE_DTYPES.items()}
