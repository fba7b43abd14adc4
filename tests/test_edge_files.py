"""Per-gene file helpers of dcoex.edge_files: gene names, q tables."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from dcoex.edge_files import q_from_table, write_gene_names
from dcoex.h5io import write_dataset
from dcoex.stages.s03_network.io import read_gene_names


def test_gene_names_round_trip_and_size(tmp_path):
    """Fixed-length UTF-8 names read back as written (multi-byte ones too) and take far less
    space than the variable-length strings they replace."""
    names = [f"G{i:05d}" for i in range(12_625)] + ["bé", "ü-γ", ""]
    with h5py.File(tmp_path / "fixed.h5", "w") as f:
        write_gene_names(f, names)
        assert h5py.check_string_dtype(f["gene_names"].dtype).encoding == "utf-8"
    with h5py.File(tmp_path / "vlen.h5", "w") as f:
        write_dataset(f, "gene_names", np.array(names, dtype=object))
    assert read_gene_names(tmp_path / "fixed.h5") == names == read_gene_names(tmp_path / "vlen.h5")
    fixed, vlen = ((tmp_path / n).stat().st_size for n in ("fixed.h5", "vlen.h5"))
    assert fixed < vlen / 5, (fixed, vlen)


def test_q_from_table_is_the_last_entry_at_or_below():
    """The q of a statistic is that of the last table entry <= it (naive loop), NaN below."""
    rng = np.random.default_rng(3)
    stat = np.sort(rng.uniform(0.2, 1.0, 50))
    q = np.sort(rng.uniform(0, 0.05, 50))[::-1]
    values = np.concatenate([rng.uniform(0, 1, 500), stat])
    want = [q[max(i for i in range(stat.size) if stat[i] <= v)] if v >= stat[0] else np.nan for v in values]
    np.testing.assert_array_equal(q_from_table((stat, q), values), want)
    assert np.isnan(q_from_table((np.empty(0), np.empty(0)), values)).all()


def _write_pair(tmp_path, r_low: np.ndarray, r_high: np.ndarray, *, sha_of: tuple[np.ndarray, np.ndarray],
                precision: str = "float32", mean: np.ndarray | None = None):
    """A 02a file (format 3) with the given r's and a 02b file (statistics stored at
    ``precision``; delta_mean ``mean``, default Δ + 0.05) whose base_edges_sha is that of
    ``sha_of`` (r_low, r_high) over the same pairs; returns their paths."""
    from dcoex.edge_files import BaseEdgesSha, BaseEdgeWriter, BootFileWriter, QTable

    n_genes, m = 40, r_low.size
    pair = np.arange(0, 3 * m, 3, dtype=np.int64)
    tables = {name: QTable.of(np.array([0.0]), np.array([0.01])) for name in ("low", "high", "diff")}
    meta = {"n_genes": n_genes, "k_low": 20, "k_high": 20, "cut_low": 0.0, "cut_high": 0.0}
    base, boot = tmp_path / "base.h5", tmp_path / "boot.h5"
    with h5py.File(base, "w") as f:
        writer = BaseEdgeWriter(f, n_genes=n_genes, n_edges=m, tables=tables)
        writer.append({"pair_index": pair, "r_low": r_low, "r_high": r_high, "q_diff": np.full(m, 0.01)})
        writer.close(meta, [f"g{i}" for i in range(n_genes)])
    sha = BaseEdgesSha()
    sha.update({"pair_index": pair, "r_low": sha_of[0], "r_high": sha_of[1]})
    minority = np.arange(m, dtype=np.int32) % 7
    with h5py.File(boot, "w") as f:
        writer = BootFileWriter(f, max_edges=m, precision=precision)
        writer.append({"boot/delta_mean": r_high - r_low + np.float32(0.05) if mean is None else mean,
                       "boot/delta_std": np.full(m, 0.1, np.float32),
                       "boot/ci_low": r_high - r_low - 0.2, "boot/ci_high": r_high - r_low + 0.2,
                       "boot/n_finite": np.full(m, 50, np.int32), "boot/n_minority": minority})
        writer.finish({"edge_selection_mode": "sig_differential", "base_edges_sha": sha.hexdigest()}, ["g"])
    return base, boot


def test_boot_join_derives_bias_and_pval_and_checks_the_edges(tmp_path):
    """iter_boot_edges: the 02a columns of each row, bias = mean − (r_high − r_low) and
    pval = max(2·m/n, 1/n) (naive); a 02a file with other r's than 02b was made from is one
    ValueError naming the mismatch."""
    from dcoex.edge_files import BOOT_EDGE_DTYPES, iter_boot_edges

    rng = np.random.default_rng(4)
    r_low, r_high = rng.uniform(-1, 1, 30).astype(np.float32), rng.uniform(-1, 1, 30).astype(np.float32)
    base, boot = _write_pair(tmp_path, r_low, r_high, sha_of=(r_low, r_high))
    chunks = list(iter_boot_edges(base, boot, chunk_edges=4))
    got = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    np.testing.assert_array_equal(got["r_low"], r_low)
    np.testing.assert_array_equal(got["pair_index"], np.arange(0, 90, 3))
    mean = (r_high - r_low + np.float32(0.05)).astype(np.float32)
    bias = (mean.astype(np.float64) - (r_high - r_low).astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(got["bias"], bias)
    narrow = list(iter_boot_edges(base, boot, chunk_edges=4, base_columns=("gene_i",)))
    assert set(narrow[0]) == {"pair_index", "r_low", "r_high", "delta", "gene_i", *BOOT_EDGE_DTYPES}
    for name in narrow[0]:
        np.testing.assert_array_equal(np.concatenate([c[name] for c in narrow]), got[name])
    assert np.allclose(bias, 0.05, atol=1e-6)
    minority = np.arange(30) % 7
    np.testing.assert_array_equal(got["bootstrap_pval"], [max(2 * k / 50, 1 / 50) for k in minority])
    other = r_low.copy()
    other[5] += np.float32(0.01)
    base, boot = _write_pair(tmp_path, other, r_high, sha_of=(r_low, r_high))
    with pytest.raises(ValueError, match="edge sets differ.*base_edges_sha"):
        list(iter_boot_edges(base, boot, chunk_edges=4))


@pytest.mark.parametrize("k_high", [20, 60, 200])
def test_dense_r_forms_read_back_the_stage_r_bits(tmp_path, k_high):
    """Dense edges stored as the groups' ranks (r_form "ranks": int8 ranks, int16 at k = 200)
    or as integer rank products (r_form "product": int16 at k = 20, int32 above), with per-gene
    scales, read back as the float32 r's the float form stores, bit for bit, and those are
    scipy's Spearman r; the sparse form keeps float r's."""
    from scipy.stats import spearmanr

    from dcoex.edge_files import BaseEdgeWriter, QTable, iter_base_edges
    from dcoex.ranks import IntegerRanks

    rng = np.random.default_rng(7)
    n_genes, k_low = 160, 20
    x = {"low": rng.normal(size=(n_genes, k_low)), "high": rng.normal(size=(n_genes, k_high))}
    x["high"][3] = np.round(x["high"][3])  # ties
    x["low"][5] = 1.0  # a constant gene
    upper = np.triu_indices(n_genes, 1)
    ranks = {g: IntegerRanks(v) for g, v in x.items()}
    products = {g: (rk.u.astype(np.int64) @ rk.u.astype(np.int64).T)[upper] for g, rk in ranks.items()}
    r = {g: (products[g].astype(np.float32) * rk.scale[upper[0]]) * rk.scale[upper[1]] for g, rk in ranks.items()}
    tables = {name: QTable.of(np.array([0.0]), np.array([0.01])) for name in ("low", "high", "diff")}
    meta = {"n_genes": n_genes, "k_low": k_low, "k_high": k_high, "cut_low": 0.0, "cut_high": 0.0}
    # ranks, 160 genes x (20 + k) cells of 1-2 B, against products, 4-6 B per edge
    cases = [(1, "ranks"), (20, "product"), (97, "float")]
    for keep_every, want_form in cases:
        pair = np.arange(0, upper[0].size, keep_every, dtype=np.int64)
        path = tmp_path / f"base_{keep_every}.h5"
        with h5py.File(path, "w") as f:
            writer = BaseEdgeWriter(f, n_genes=n_genes, n_edges=pair.size, tables=tables, threads=2,
                                    ranks=(ranks["low"], ranks["high"]))
            for a in range(0, pair.size, 100):
                at = pair[a : a + 100]
                writer.append({"pair_index": at, "r_low": r["low"][at], "r_high": r["high"][at],
                               "q_diff": np.full(at.size, 0.01), "d_low": products["low"][at].astype(np.float32),
                               "d_high": products["high"][at].astype(np.float32)})
            writer.close(meta, [f"g{i}" for i in range(n_genes)])
        with h5py.File(path, "r") as f:
            assert f["meta"].attrs["r_form"] == want_form
            assert ("edges/r_low" in f) == (want_form == "float") and ("edges/d_low" in f) == (want_form == "product")
            assert ("ranks" in f) == (want_form == "ranks")
            if want_form == "product":
                assert f["edges/d_low"].dtype == np.int16
                assert f["edges/d_high"].dtype == (np.int16 if k_high == 20 else np.int32)
            if want_form == "ranks":
                assert f["ranks/low"].dtype == np.int8 and f["ranks/high"].shape == (n_genes, k_high)
                assert f["ranks/high"].dtype == (np.int8 if k_high <= 128 else np.int16)
        chunks = list(iter_base_edges(path, chunk_edges=37, columns=("pair_index", "r_low", "r_high")))
        for g in ("low", "high"):
            got = np.concatenate([c[f"r_{g}"] for c in chunks])
            np.testing.assert_array_equal(got, r[g][pair])
            with np.errstate(invalid="ignore"):
                reference = np.nan_to_num(spearmanr(x[g].T).statistic[upper][pair])  # constant gene: r 0
            np.testing.assert_allclose(got, reference, rtol=0, atol=2e-6)
        narrow = list(iter_base_edges(path, chunk_edges=1000, columns=("gene_j",)))
        np.testing.assert_array_equal(np.concatenate([c["gene_j"] for c in narrow]), upper[1][pair])


def test_r_form_stores_the_smaller_of_ranks_and_products():
    """Bitmap form: the groups' ranks (genes x k cells of 1-2 B) when smaller than the rank
    products (edges x 2-4 B per group), else the products; past int32 products, and in the
    sparse form, float r's."""
    from dcoex.edge_files import r_form

    # 12,625 genes, k = 25: ranks 631 kB, products 4 B per edge
    assert r_form("bitmap", (25, 25), n_genes=12_625, n_edges=157_812) == "product"
    assert r_form("bitmap", (25, 25), n_genes=12_625, n_edges=157_813) == "ranks"
    # 8,763 genes, k = 187: int16 ranks 6.55 MB, int32 products 8 B per edge
    assert r_form("bitmap", (187, 187), n_genes=8_763, n_edges=819_341) == "ranks"
    assert r_form("bitmap", (187, 187), n_genes=8_763, n_edges=819_340) == "product"
    assert r_form("bitmap", (25, 1862), n_genes=100, n_edges=10**6) == "float"
    assert r_form("sparse", (25, 25), n_genes=100, n_edges=10) == "float"
    assert r_form("bitmap", None, n_genes=100, n_edges=4000) == "float"


def test_product_dtype_holds_every_rank_product():
    """int16 while the largest |u_i·u_j| = Σ(2·rank − k − 1)² (no ties, computed here) fits,
    then int32; past int32 the float form."""
    from dcoex.edge_files import product_dtype

    for k in (2, 25, 46, 47, 187, 1861, 1862):
        largest = sum((2 * rank - k - 1) ** 2 for rank in range(1, k + 1))
        want = np.int16 if largest <= 32767 else np.int32 if largest <= 2**31 - 1 else None
        assert product_dtype(k) is want, k
    assert product_dtype(46) is np.int16 and product_dtype(47) is np.int32 and product_dtype(1862) is None


def test_compact_codes_round_away_from_zero_and_keep_nan(tmp_path):
    """encode_quanta: ceil / floor of value / 2^-14 (naive loop here), ±2 clipped to ±32,767
    steps, NaN to the NaN code; a compact 02b column reads back as those steps (float32)."""
    import math

    from dcoex.edge_files import BOOT_NAN_CODE, encode_quanta

    values = np.array([0.0, 1e-9, -1e-9, 2.0, -2.0, np.nan, 0.5, -0.12345, 1.99, -0.0], dtype=np.float32)
    want = []
    for v in values.astype(np.float64):
        if math.isnan(v):
            want.append(BOOT_NAN_CODE)
            continue
        steps = v * 2**14
        want.append(max(-32767, min(32767, math.ceil(steps) if steps > 0 else math.floor(steps))))
    np.testing.assert_array_equal(encode_quanta(values), want)
    r = np.linspace(-0.9, 0.9, 40, dtype=np.float32)
    mean = np.where(np.arange(40) == 7, np.nan, r * np.float32(0.31)).astype(np.float32)
    base, boot = _write_pair(tmp_path, r, -r, sha_of=(r, -r), precision="compact", mean=mean)
    from dcoex.edge_files import iter_boot_edges

    got = np.concatenate([c["delta_mean"] for c in iter_boot_edges(base, boot, chunk_edges=9)])
    np.testing.assert_array_equal(got, np.where(np.isnan(mean), np.nan, encode_quanta(mean) * np.float32(2**-14)))
