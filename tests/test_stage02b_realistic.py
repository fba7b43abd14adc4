"""Stage 02b on realistic-density data (dcoex.realistic: many edges per gene, dense and
sparse tiles) against a naive loop: numpy resamples, scipy.stats.spearmanr per replicate,
numpy mean / sd / percentile."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
from scipy import stats
from util_stage02 import SCRIPT_02A, SCRIPT_02B, read_edges, run_inproc, write_inputs

from dcoex.genes import gene_file_path
from dcoex.realistic import make_realistic
from dcoex.stages.s02b_bootstrap_edges.science import EdgeLayout

B = 24
CI_ALPHA = 0.1
TILE = 1500


def naive(x: np.ndarray, low_boot: np.ndarray, high_boot: np.ndarray, gi: np.ndarray, gj: np.ndarray) -> np.ndarray:
    """Δ^b (E, B): each replicate's resampled columns, Spearman r of all genes by scipy."""
    out = np.empty((gi.size, low_boot.shape[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b in range(low_boot.shape[0]):
            r_low = stats.spearmanr(x[:, low_boot[b]], axis=1).statistic
            r_high = stats.spearmanr(x[:, high_boot[b]], axis=1).statistic
            out[:, b] = r_high[gi, gj] - r_low[gi, gj]
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    x = make_realistic(300, 90, seed=5).astype(np.float32)
    folder = tmp_path_factory.mktemp("s02b_realistic")
    expr, idx = write_inputs(folder, x, n_bootstrap=B)
    genes = [0, 1]
    args = ["--expr-h5", expr, "--indices-h5", idx, "--gene-range", "0:2"]
    done = run_inproc(SCRIPT_02A, *args, "--out-dir", folder / "base", "--fdr-alpha", 0.7)
    assert done.returncode == 0, done.stderr
    done = run_inproc(SCRIPT_02B, *args, "--base-dir", folder / "base", "--out-dir", folder / "boot",
                      "--ci-alpha", CI_ALPHA, "--batch-size", TILE, "--store-replicates")
    assert done.returncode == 0, done.stderr
    return x, idx, genes, folder


def test_realistic_density_matches_naive_loop(run):
    x, idx, genes, folder = run
    n = x.shape[0]
    total = dense = 0
    for gene in genes:
        _, base = read_edges(gene_file_path(folder / "base", gene, f"g{gene}", n))
        meta, d = read_edges(gene_file_path(folder / "boot", gene, f"g{gene}", n),
                             gene_file_path(folder / "base", gene, f"g{gene}", n))
        gi, gj = d["edges/gene_i"].astype(np.int64), d["edges/gene_j"].astype(np.int64)
        np.testing.assert_array_equal(d["edges/pair_index"], base["edges/pair_index"])
        assert meta["n_sig_edges"] == gi.size > 3 * TILE  # several tiles
        total += gi.size
        for e0 in range(0, gi.size, TILE):  # the tiles as the stage cuts them
            tile_genes = np.unique(np.concatenate([gi[e0 : e0 + TILE], gj[e0 : e0 + TILE]]))
            layout = EdgeLayout(np.searchsorted(tile_genes, gi[e0 : e0 + TILE]),
                                np.searchsorted(tile_genes, gj[e0 : e0 + TILE]), tile_genes.size)
            dense += layout.core_edges.size
        with h5py.File(idx, "r") as f:
            low_boot, high_boot = f["indices/low_boot"][gene], f["indices/high_boot"][gene]
        ref = naive(x.astype(np.float64), low_boot, high_boot, gi, gj)
        np.testing.assert_allclose(d["boot/delta_replicates"], ref, atol=2e-6, equal_nan=True)
        base_delta = base["edges/r_high"].astype(np.float32) - base["edges/r_low"].astype(np.float32)
        np.testing.assert_array_equal(d["base/delta"], base_delta)
        finite = [row[np.isfinite(row)] for row in ref]
        want = {
            "delta_mean": [v.mean() for v in finite],
            "delta_std": [v.std(ddof=1) for v in finite],
            "ci_low": [np.percentile(v, 100 * CI_ALPHA / 2) for v in finite],
            "ci_high": [np.percentile(v, 100 * (1 - CI_ALPHA / 2)) for v in finite],
            "bias": [v.mean() - d0 for v, d0 in zip(finite, base_delta.astype(np.float64))],
        }
        for name, values in want.items():
            np.testing.assert_allclose(d[f"boot/{name}"], values, atol=1e-5, err_msg=name)
        pval = [max(2 * min(np.sum(v > 0), np.sum(v < 0)) / v.size, 1 / v.size) for v in finite]
        np.testing.assert_allclose(d["pval/bootstrap_pval"], pval, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(d["boot/n_finite"], [v.size for v in finite])
    assert 0 < dense < total  # both the core products and the gathered dot products ran


def test_band_tiles_give_every_edge_the_statistics_of_one_tile(run, monkeypatch, tmp_path):
    """A band of whole gene rows cut into 2-D tiles (its rows × runs of columns) gives every
    edge the statistics it gets in one tile, bit for bit, while each tile ranks far fewer
    genes than a tile of whole rows; the stage run in bands of several tiles writes the same
    statistics as the run above (one tile per band)."""
    from dcoex.stages.s02b_bootstrap_edges import estimator
    from dcoex.stages.s02b_bootstrap_edges.science import (
        BootStats,
        boot_stats,
        bootstrap_band,
        column_tiles,
        positions_in_group,
        replicate_deltas,
    )

    x, idx, genes, folder = run
    n = x.shape[0]
    _, base = read_edges(gene_file_path(folder / "base", 0, "g0", n))
    gi, gj = base["edges/gene_i"].astype(np.int64), base["edges/gene_j"].astype(np.int64)
    delta_base = base["edges/r_high"].astype(np.float32) - base["edges/r_low"].astype(np.float32)
    with h5py.File(idx, "r") as f:
        low, high = np.sort(f["indices/low"][0]), np.sort(f["indices/high"][0])
        pos_low = positions_in_group(f["indices/low_boot"][0], low)
        pos_high = positions_in_group(f["indices/high_boot"][0], high)
    args = (x[:, low], x[:, high], pos_low, pos_high)
    whole = boot_stats(replicate_deltas(*args, gene_i=gi, gene_j=gj), delta_base, CI_ALPHA)
    tile = 700
    tiles = column_tiles(gi, gj, tile)
    assert len(tiles) >= 4 and np.array_equal(np.sort(np.concatenate(tiles)), np.arange(gi.size))
    assert all(np.all(np.diff(at) > 0) and at.size <= tile for at in tiles)
    span = 8 * tile  # a band of 8 tiles, as the stage reads them
    ranked = max(np.unique(np.concatenate([gi[at], gj[at]])).size for at in column_tiles(gi[:span], gj[:span], tile))
    rows = max(np.unique(np.concatenate([gi[e0 : e0 + tile], gj[e0 : e0 + tile]])).size for e0 in range(0, span, tile))
    assert ranked < 0.8 * rows  # tiles of whole rows touch nearly every gene
    band = bootstrap_band(*args, gene_i=gi, gene_j=gj, delta_base=delta_base, ci_alpha=CI_ALPHA, tile_edges=tile,
                          buffer=np.empty((B, tile), np.float32), pool={})
    for name in BootStats.__dataclass_fields__:
        assert getattr(band, name).tobytes() == getattr(whole, name).tobytes(), name

    assert estimator.band_edges(400) == 400 * estimator.BAND_TILES  # bands of BAND_TILES tiles at any B
    done = run_inproc(SCRIPT_02B, "--expr-h5", folder / "expression.h5", "--indices-h5", idx, "--gene-range", "0:2",
                      "--base-dir", folder / "base", "--out-dir", tmp_path / "boot", "--ci-alpha", CI_ALPHA,
                      "--batch-size", 400)
    assert done.returncode == 0, done.stderr
    for gene in genes:
        with h5py.File(gene_file_path(folder / "boot", gene, f"g{gene}", n), "r") as one, \
                h5py.File(gene_file_path(tmp_path / "boot", gene, f"g{gene}", n), "r") as banded:
            assert banded["boot/delta_mean"].shape[0] > 3 * 400 * estimator.BAND_TILES // 4
            for name in one["boot"]:
                if name != "delta_replicates":
                    np.testing.assert_array_equal(banded[f"boot/{name}"][()], one[f"boot/{name}"][()], err_msg=name)


def test_touched_genes_bound_the_estimate(run):
    """touched_genes counts the distinct genes of a 02a file's edges (numpy's unique of the
    pairs); the 02b estimate takes it as a bound on a tile's genes, and the stage's own estimate
    (its sidecar) is made with it."""
    import json

    from dcoex.edge_files import touched_genes
    from dcoex.stages.s02b_bootstrap_edges.estimator import estimate

    x, idx, genes, folder = run
    n = x.shape[0]
    path = gene_file_path(folder / "base", 0, "g0", n)
    _, base = read_edges(path)
    assert touched_genes(path) == np.unique(np.concatenate([base["edges/gene_i"], base["edges/gene_j"]])).size
    shape = dict(n_genes=12_625, n_samples=128, n_bootstrap=1000, k_low=25, k_high=25, kr_low=20, kr_high=20,
                 n_edges=17_187, edge_chunk=17_187)
    bound, known = estimate(**shape).total_bytes, estimate(**shape, n_touched=3_000).total_bytes
    assert known < bound == estimate(**shape, n_touched=12_625).total_bytes
    record = json.loads(next((folder / "boot" / "memory").glob("02b.*.memory.json")).read_text())
    touched = {touched_genes(gene_file_path(folder / "base", g, f"g{g}", n)) for g in genes}
    assert record["estimate"]["params"]["n_touched"] in touched  # the stage's own estimate used it


def test_sorted_rank_path_equals_sign_products(monkeypatch):
    """Genes whose sign matrices do not fit are ranked from cumulative counts: same Δ bits."""
    from dcoex.stages.s02b_bootstrap_edges import estimator
    from dcoex.stages.s02b_bootstrap_edges.science import ResampleSide, positions_in_group, replicate_deltas

    rng = np.random.default_rng(3)
    x = make_realistic(120, 70, seed=2).astype(np.float32)
    x[:30] = np.round(x[:30])  # ties
    low, high = np.arange(0, 25), np.arange(40, 65)
    low_boot, high_boot = low[rng.integers(0, 25, (30, 20))], high[rng.integers(0, 25, (30, 20))]
    iu, ju = np.triu_indices(120, 1)
    pick = rng.random(iu.size) < 0.3
    args = (x[:, low], x[:, high], positions_in_group(low_boot, low), positions_in_group(high_boot, high))
    signs = replicate_deltas(*args, gene_i=iu[pick], gene_j=ju[pick]).copy()
    monkeypatch.setattr(estimator, "SIGN_WORK_BYTES", 0)
    assert ResampleSide(x[:, low], args[2]).uses_sorted_ranks
    cumulative = replicate_deltas(*args, gene_i=iu[pick], gene_j=ju[pick])
    np.testing.assert_array_equal(signs, cumulative)
    ref = naive(x.astype(np.float64), low_boot, high_boot, iu[pick], ju[pick])
    np.testing.assert_allclose(cumulative, ref, atol=2e-6, equal_nan=True)


def test_output_sizes_and_bounded_estimate(run, tmp_path):
    """output_bytes of 02b and 03 bound the files written (within 3×); 02b's memory
    estimate depends on the tile and its band, not on the gene's edge count, beyond the ranks
    of a dense 02a file (at most RANKS_READ_BYTES)."""
    from dcoex.edge_files import RANKS_READ_BYTES, base_read_bytes
    from dcoex.stages.s02b_bootstrap_edges.estimator import band_edges, estimate
    from dcoex.stages.s02b_bootstrap_edges.estimator import output_bytes as boot_bytes
    from dcoex.stages.s03_network.cli import run_network
    from dcoex.stages.s03_network.estimator import output_bytes as network_bytes

    x, idx, genes, folder = run
    n = x.shape[0]
    assert run_network(folder / "base", folder / "boot", tmp_path / "net", genes=genes)["written"] == genes
    for gene in genes:
        path = gene_file_path(folder / "boot", gene, f"g{gene}", n)
        meta, _ = read_edges(path)
        size = path.stat().st_size
        assert size <= boot_bytes(n_genes=n, n_edges=meta["n_sig_edges"], n_boot=B, store_replicates=True) <= 3 * size
        net = gene_file_path(tmp_path / "net", gene, f"g{gene}", n)
        with h5py.File(net, "r") as f:
            n_network = int(f["meta"].attrs["n_significant"])
        assert 0 < n_network and net.stat().st_size <= network_bytes(n_genes=n, n_edges=n_network) <= 3 * net.stat().st_size
    shape = dict(n_genes=12625, n_samples=128, n_bootstrap=1000, k_low=25, k_high=25, kr_low=20, kr_high=20)
    band = estimate(**shape, n_edges=band_edges(131_072), edge_chunk=131_072).total_bytes
    dense = estimate(**shape, n_edges=24_700_000, edge_chunk=131_072).total_bytes
    ranks = base_read_bytes(12625, 24_700_000, (25, 25))
    assert 0 < ranks <= RANKS_READ_BYTES and base_read_bytes(12625, band_edges(131_072), (25, 25)) == 0
    assert dense - ranks == band < 2 * 1024**3


@pytest.mark.parametrize("tile", [400, 1500, 6000])
def test_run_time_model_counts_the_genes_the_tiles_rank(run, monkeypatch, tile):
    """The run-time model's ranking term (estimator.tile_genes) bounds the genes the stage's
    tiles really rank — bands of BAND_TILES tiles of consecutive edges, cut by column_tiles,
    counted here — from above, within 3×, for the realistic genes and for sparse ones (every
    20th of their edges)."""
    from dcoex.stages.s02b_bootstrap_edges import estimator
    from dcoex.stages.s02b_bootstrap_edges.science import column_tiles

    x, idx, genes, folder = run
    n = x.shape[0]
    monkeypatch.setattr(estimator, "MAX_TILE_EDGES", tile)
    for gene in genes:
        _, base = read_edges(gene_file_path(folder / "base", gene, f"g{gene}", n))
        for step in (1, 20):
            gi = base["edges/gene_i"][::step].astype(np.int64)
            gj = base["edges/gene_j"][::step].astype(np.int64)
            band = estimator.band_edges(tile)
            ranked = sum(np.unique(np.concatenate([gi[b0 : b0 + band][at], gj[b0 : b0 + band][at]])).size
                         for b0 in range(0, gi.size, band)
                         for at in column_tiles(gi[b0 : b0 + band], gj[b0 : b0 + band], tile))
            modelled = estimator.tile_genes(n_genes=n, n_edges=gi.size, n_bootstrap=B)
            assert ranked <= modelled <= 3 * ranked, (gene, step, gi.size, ranked, modelled)


def test_sign_matrices_only_where_the_estimate_counts_them(monkeypatch):
    """A tile of few genes in a task whose planned tile bound does not fit the sign matrices
    ranks from the sorted order, as the estimator (sign_bytes at the bound) counted it."""
    from dcoex.stages.s02b_bootstrap_edges import estimator
    from dcoex.stages.s02b_bootstrap_edges.science import ResampleSide

    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 30)).astype(np.float32)
    positions = rng.integers(0, 30, size=(5, 24))
    monkeypatch.setattr(estimator, "SIGN_WORK_BYTES", 40 * 30 * 30 * 4)  # exactly 40 genes fit
    assert not ResampleSide(x, positions).uses_sorted_ranks
    assert not ResampleSide(x, positions, genes_bound=40).uses_sorted_ranks
    assert ResampleSide(x, positions, genes_bound=41).uses_sorted_ranks
    assert estimator.sign_bytes(40, 30) == 40 * 30 * 30 * 4 + 40 * 30 * 4
    assert estimator.sign_bytes(41, 30) == 41 * 30 * 24 + 41 * 30 * 4 < 40 * 30 * 30 * 4


def test_compact_precision_bounds_the_statistics_and_keeps_the_network(run):
    """--boot-precision compact: delta_mean, ci_low, ci_high within one 2^-14 step of the
    float32 run's, rounded away from zero (sign and zero exact: 03's CI filter keeps the same
    edges), delta_std within 2^-11 relative, the rest identical; about half the bytes. The
    default is not recorded in provenance (files from before the option stay current), compact is."""
    from dcoex.edge_files import iter_boot_edges
    from dcoex.provenance import read_provenance
    from dcoex.stages.s02b_bootstrap_edges.estimator import output_bytes
    from dcoex.stages.s03_network.classify import select_edges

    x, idx, genes, folder = run
    n = x.shape[0]
    args = ["--expr-h5", idx.parent / "expression.h5", "--indices-h5", idx, "--gene-range", "0:2",
            "--base-dir", folder / "base", "--ci-alpha", CI_ALPHA]
    done = run_inproc(SCRIPT_02B, *args, "--out-dir", folder / "boot_compact", "--boot-precision", "compact")
    assert done.returncode == 0, done.stderr
    step = 2.0**-14
    for gene in genes:
        base = gene_file_path(folder / "base", gene, f"g{gene}", n)
        exact, compact = (gene_file_path(folder / name, gene, f"g{gene}", n) for name in ("boot", "boot_compact"))
        got = [{k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
               for chunks in (list(iter_boot_edges(base, p, chunk_edges=5000)) for p in (exact, compact))]
        want, have = got
        assert want["delta_mean"].size > 10_000
        for name in ("delta_mean", "ci_low", "ci_high"):
            w, h = want[name].astype(np.float64), have[name].astype(np.float64)
            np.testing.assert_array_equal(np.isnan(h), np.isnan(w))
            ok = ~np.isnan(w)
            assert np.all(np.abs(h[ok] - w[ok]) <= step), name
            np.testing.assert_array_equal(np.sign(h[ok]), np.sign(w[ok]))
            assert np.all(np.abs(h[ok]) >= np.abs(w[ok])), name  # away from zero
        w, h = want["delta_std"].astype(np.float64), have["delta_std"].astype(np.float64)
        ok = ~np.isnan(w)
        assert np.all(np.abs(h[ok] - w[ok]) <= np.maximum(2.0**-11 * w[ok], 3e-8))
        for name in ("n_finite", "bootstrap_pval", "pair_index", "r_low", "r_high"):
            np.testing.assert_array_equal(have[name], want[name], err_msg=name)
        for min_effect in (0.0, 0.3):
            np.testing.assert_array_equal(
                select_edges(have["delta"], have["ci_low"], have["ci_high"], min_effect, True),
                select_edges(want["delta"], want["ci_low"], want["ci_high"], min_effect, True))
        with h5py.File(exact, "r") as f, h5py.File(compact, "r") as g:
            stats_bytes = [sum(h5[f"boot/{s}"].id.get_storage_size() for s in ("delta_mean", "delta_std", "ci_low",
                                                                                 "ci_high")) for h5 in (f, g)]
            assert g["boot/ci_low"].dtype == np.int16 and g["boot/delta_std"].dtype == np.float16
            assert g["meta"].attrs["boot_precision"] == "compact"
        assert stats_bytes[1] < 0.6 * stats_bytes[0], stats_bytes
        predicted = output_bytes(n_genes=n, n_edges=want["delta_mean"].size, n_boot=B, boot_precision="compact")
        assert compact.stat().st_size <= predicted <= 3 * compact.stat().st_size
        assert "boot_precision" not in read_provenance(exact).params
        assert read_provenance(compact).params["boot_precision"] == "compact"
