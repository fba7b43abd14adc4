"""Test helpers of stages 02a/02b: small inputs in the stage-00/01 layouts, naive references."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from scipy import stats

from dcoex.expression_store import write_expression
from dcoex.provenance import write_provenance
from dcoex.stages import stage_contract
from dcoex.stages.s01_bootstrap_indices.science import RNG_SCHEME, bootstrap_indices, extreme_groups, group_sizes
from dcoex.stages.upstream import FileUpstream

REPO = Path(__file__).resolve().parents[1]
SCRIPT_02A = REPO / "src/scripts/02corr/02a_calc_base_correlations.py"
SCRIPT_02B = REPO / "src/scripts/02corr/02b_bootstrap_significant_edges.py"


def write_inputs(
    folder: Path,
    matrix: np.ndarray,
    *,
    n_bootstrap: int = 40,
    low_frac: float = 0.2,
    high_frac: float = 0.2,
    bootstrap_frac: float = 0.8,
    seed: int = 7,
    compress: bool = False,
) -> tuple[Path, Path]:
    """Write expression.h5 and bootstrap_indices.h5 (stage 00/01 layouts) for ``matrix``;
    ``compress`` gzips the index datasets (one chunk per gene)."""
    folder.mkdir(parents=True, exist_ok=True)
    n, s = matrix.shape
    expr_path, idx_path = folder / "expression.h5", folder / "bootstrap_indices.h5"
    names = [f"g{i}" for i in range(n)]
    sha = write_expression(expr_path, matrix.astype(np.float32), names, [f"s{j}" for j in range(s)], compression="none")
    sizes = group_sizes(s, low_frac, high_frac, bootstrap_frac)
    low, high = extreme_groups(matrix.astype(np.float32), sizes.k_low, sizes.k_high)
    gz = {"compression": "gzip", "shuffle": True} if compress else {}
    with h5py.File(idx_path, "w") as f:
        f.create_dataset("indices/low", data=low, chunks=(1, sizes.k_low), **gz)
        f.create_dataset("indices/high", data=high, chunks=(1, sizes.k_high), **gz)
        lb = f.create_dataset("indices/low_boot", (n, n_bootstrap, sizes.kr_low), np.int32,
                              chunks=(1, n_bootstrap, sizes.kr_low), **gz)
        hb = f.create_dataset("indices/high_boot", (n, n_bootstrap, sizes.kr_high), np.int32,
                              chunks=(1, n_bootstrap, sizes.kr_high), **gz)
        for g in range(n):
            lb[g], hb[g] = bootstrap_indices(low[g], high[g], seed=seed, gene_index=g, n_bootstrap=n_bootstrap,
                                             kr_low=sizes.kr_low, kr_high=sizes.kr_high)
        f.require_group("meta").attrs.update({
            "low_frac": low_frac, "high_frac": high_frac, "n_bootstrap": n_bootstrap,
            "bootstrap_frac": bootstrap_frac, "seed": seed, "processing_mode": "test",
            "rng_scheme": RNG_SCHEME, "expr_content_sha256": sha, "n_genes": n, "n_samples": s,
        })
        # the stage-01 layout includes its provenance (docs/design.md §7)
        values = {"low_frac": low_frac, "high_frac": high_frac, "n_bootstrap": n_bootstrap,
                  "bootstrap_frac": bootstrap_frac, "seed": seed}
        write_provenance(f, stage_contract("01").wanted(values, FileUpstream(files={"00": expr_path})))
    return expr_path, idx_path


def run_script(script: Path, *args: object) -> subprocess.CompletedProcess:
    """Run a stage script with the test interpreter on this checkout's ``lib`` (not whatever
    the interpreter's site-packages point at); returns the completed process."""
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "lib"),
                               "MEMFIT_MEM_LIMIT": "4G", "OPENBLAS_NUM_THREADS": "1"})


@dataclass
class Done:
    """Exit code and stderr of an in-process stage run."""

    returncode: int
    stderr: str


def run_inproc(script: Path, *args: object, mem_limit: str = "4G") -> Done:
    """Run a stage's click command in this process through hpc.cli.run_command (fast)."""
    from hpc.cli import run_command

    if script == SCRIPT_02A:
        from dcoex.stages.s02a_base_correlations.cli import main
    else:
        from dcoex.stages.s02b_bootstrap_edges.cli import main
    err = io.StringIO()
    old = os.environ.get("MEMFIT_MEM_LIMIT")
    os.environ["MEMFIT_MEM_LIMIT"] = mem_limit
    try:
        with contextlib.redirect_stderr(err):
            try:
                run_command(main, [str(a) for a in args])
            except SystemExit as exc:
                code = int(exc.code or 0)
    finally:
        if old is None:
            del os.environ["MEMFIT_MEM_LIMIT"]
        else:
            os.environ["MEMFIT_MEM_LIMIT"] = old
    return Done(code, err.getvalue())


def spearman_matrix(x: np.ndarray) -> np.ndarray:
    """scipy's Spearman r of every pair of rows (NaN for constant rows)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = stats.spearmanr(x, axis=1).statistic
    r = np.atleast_2d(r)
    const = np.array([np.all(row == row[0]) for row in x])
    r[const, :] = np.nan
    r[:, const] = np.nan
    return r


def h5_tree(path: Path, skip: str = "memfit") -> dict:
    """Every dataset and attribute of an HDF5 file except the ``skip`` group: {path: value}."""
    out: dict = {}
    with h5py.File(path, "r") as f:
        for key, value in f.attrs.items():
            out[f"/@{key}"] = value

        def visit(name: str, obj) -> None:
            if name.split("/")[0] == skip:
                return
            for key, value in obj.attrs.items():
                out[f"{name}@{key}"] = value
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]

        f.visititems(visit)
    return out


def assert_same_tree(a: dict, b: dict) -> None:
    """Equal keys and values (NaN equal to NaN)."""
    assert sorted(a) == sorted(b)
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, np.ndarray) and x.dtype.kind in "fc":
            assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True), key
        elif isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y), key
        else:
            assert x == y, key


def planted_matrix(n_genes: int = 40, n_samples: int = 80, seed: int = 3, module_size: int = 4) -> tuple[np.ndarray, object]:
    """Synthetic data (dcoex.synthetic) plus ties: rows 0-3 rounded (many ties) and gene 5 zero
    in 40% of samples with gene 6 zero on the same samples (both constant in LOW of gene 5)."""
    from dcoex.synthetic import make_synthetic

    data = make_synthetic(n_genes, n_samples, seed, n_modulators=2, module_size=module_size, strength=1.5)
    x = data.matrix.astype(np.float64)
    x[:4] = np.round(x[:4])
    zeros = np.random.default_rng(seed).permutation(n_samples)[: int(0.4 * n_samples)]
    for g in (5, 6):
        x[g] = np.abs(x[g]) + 0.5
        x[g, zeros] = 0.0
    return x.astype(np.float32), data


def reference_base(x: np.ndarray, low: np.ndarray, high: np.ndarray, alpha: float) -> dict:
    """Naive dense 02a: spearmanr r, scipy p, statsmodels BH over the valid pairs of each family."""
    from statsmodels.stats.multitest import multipletests

    n = x.shape[0]
    iu, ju = np.triu_indices(n, 1)
    r_low = spearman_matrix(x[:, low])[iu, ju]
    r_high = spearman_matrix(x[:, high])[iu, ju]
    k_low, k_high = low.size, high.size
    out = {"r_low": r_low, "r_high": r_high, "i": iu, "j": ju}
    for name, r, k in (("low", r_low, k_low), ("high", r_high, k_high)):
        ok = ~np.isnan(r)
        rr = np.clip(r[ok], -1, 1)
        t = rr * np.sqrt((k - 2) / np.maximum(1 - rr * rr, np.finfo(np.float32).eps))
        p = np.full(r.shape, np.nan)
        p[ok] = 2 * stats.t.sf(np.abs(t), k - 2)
        q = np.full(r.shape, np.nan)
        if ok.any():
            q[ok] = multipletests(p[ok], method="fdr_bh")[1]
        out[f"p_{name}"], out[f"q_{name}"] = p, q
    ok = ~np.isnan(r_low) & ~np.isnan(r_high)
    z = (np.arctanh(np.clip(r_high, -0.9999, 0.9999)) - np.arctanh(np.clip(r_low, -0.9999, 0.9999))) / np.sqrt(
        1 / (k_low - 3) + 1 / (k_high - 3))
    p = np.full(r_low.shape, np.nan)
    p[ok] = 2 * stats.norm.sf(np.abs(z[ok]))
    q = np.full(r_low.shape, np.nan)
    if ok.any():
        q[ok] = multipletests(p[ok], method="fdr_bh")[1]
    out["p_diff"], out["q_diff"] = p, q
    out["sig_diff"] = np.nonzero(q < alpha)[0]
    return out


def read_edges(path: Path, base_path: Path | None = None) -> tuple[dict, dict]:
    """(meta attrs, {dataset path: array}) of a 02a/02b file, /memfit excluded. Every name
    of a dataset is listed (hard links too: ``visititems`` would give each object once); a
    02a file also gets every edge column read_base_edges gives (derived ones included) under
    edges/; a 02b file, given its 02a file ``base_path``, the columns iter_boot_edges joins under
    the format-2 names (edges/pair_index, gene_i, gene_j, base/delta, r_low, r_high, boot/bias,
    pval/bootstrap_pval)."""
    with h5py.File(path, "r") as f:
        meta = dict(f["meta"].attrs)
        names: list[str] = []
        f.visit_links(names.append)
        data = {name: f[name][()] for name in names
                if isinstance(f[name], h5py.Dataset) and not name.startswith("memfit")}
        base = any(name in f for name in ("edges/r_low", "edges/d_low", "ranks"))  # a 02a file, any r form
    if base:  # a 02a file: the columns it derives on read (dcoex.edge_files) under edges/
        from dcoex.edge_files import read_base_edges

        data.update({f"edges/{name}": col for name, col in read_base_edges(path)[1].items()})
    elif base_path is not None:
        from dcoex.edge_files import BASE_EDGE_DTYPES, BOOT_EDGE_DTYPES, iter_boot_edges

        chunks = list(iter_boot_edges(base_path, path, chunk_edges=1 << 40))
        where = {"pair_index": "edges/pair_index", "gene_i": "edges/gene_i", "gene_j": "edges/gene_j",
                 "delta": "base/delta", "r_low": "base/r_low", "r_high": "base/r_high", "bias": "boot/bias",
                 "bootstrap_pval": "pval/bootstrap_pval"}
        dtypes = {**BASE_EDGE_DTYPES, **BOOT_EDGE_DTYPES}
        for name, target in where.items():
            data[target] = np.concatenate([c[name] for c in chunks]) if chunks else np.empty(0, dtypes[name])
    return meta, data


def corrupt_chunk(path: Path, dataset: str, gene: int) -> None:
    """Overwrite the stored bytes of one gene's chunk of ``dataset`` with garbage."""
    with h5py.File(path, "r") as f:
        dset = f[dataset]
        info = dset.id.get_chunk_info_by_coord((gene,) + (0,) * (dset.ndim - 1))
    with open(path, "r+b") as handle:
        handle.seek(info.byte_offset)
        handle.write((b"\xff\x00garbage" * (info.size // 9 + 1))[: info.size])


def no_temporaries(folder: Path) -> bool:
    """True if no hidden temporary output is left in ``folder``."""
    return not [p for p in folder.rglob(".*tmp*")]


def stored_edge_count(f: h5py.File) -> int:
    """The edges an open 02a file stores, from its edge table (not the count attributes): the
    length of its per-edge r or rank-product column, or the set bits of its pair bitmap."""
    for name in ("edges/r_low", "edges/d_low"):
        if name in f:
            return int(f[name].shape[0])
    return int(np.unpackbits(f["edges/pair_bitmap"][()]).sum())
