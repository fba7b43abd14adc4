"""Stage 02a on realistic-density data (dcoex.realistic: broad, overlapping co-expression, many
differential pairs at alpha 0.7) against a naive dense reference: scipy's spearmanr, Student-t
and normal survival functions, Fisher z with numpy's arctanh and statsmodels' fdr_bh over each
whole family. Also the streamed output (any chunk size, any tile size, many collection passes)
and the edge-file forms (sparse / bitmap) read back through dcoex.edge_files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from dcoex.edge_files import BASE_EDGE_DTYPES, BaseEdgeWriter, QTable, iter_base_edges, read_base_edges
from dcoex.ranks import IntegerRanks
from dcoex.realistic import make_realistic
from dcoex.stages.s01_bootstrap_indices.science import extreme_groups
from dcoex.stages.s02a_base_correlations.science import EDGE_FIELDS, base_correlations, differential_edges

N_GENES, N_SAMPLES, K = 300, 128, 25


@pytest.fixture(scope="module")
def data():
    x = make_realistic(N_GENES, N_SAMPLES, seed=4).astype(np.float32)
    low, high = extreme_groups(x, K, K)
    return x, low, high


def _reference(x_low: np.ndarray, x_high: np.ndarray, alpha: float) -> dict:
    """Naive dense 02a from scipy's spearmanr (float64)."""
    iu, ju = np.triu_indices(x_low.shape[0], 1)
    out = {"pair": np.arange(iu.size)}
    for name, xg in (("low", x_low), ("high", x_high)):
        r = stats.spearmanr(xg, axis=1).statistic[iu, ju]
        p = _t_p(r)
        out[f"r_{name}"], out[f"p_{name}"] = r, p
        out[f"q_{name}"] = multipletests(p, method="fdr_bh")[1]
    out["p_diff"] = _z_p(out["r_low"], out["r_high"])
    out["q_diff"] = multipletests(out["p_diff"], method="fdr_bh")[1]
    return out


def _t_p(r: np.ndarray) -> np.ndarray:
    rr = np.clip(np.asarray(r, dtype=np.float64), -1, 1)
    t = rr * np.sqrt((K - 2) / np.maximum(1 - rr * rr, np.finfo(np.float32).eps))
    return 2 * stats.t.sf(np.abs(t), K - 2)


def _z_p(r_low: np.ndarray, r_high: np.ndarray) -> np.ndarray:
    zl, zh = (np.arctanh(np.clip(np.asarray(r, dtype=np.float64), -0.9999, 0.9999)) for r in (r_low, r_high))
    return 2 * stats.norm.sf(np.abs((zh - zl) / np.sqrt(2 / (K - 3))))


@pytest.mark.parametrize("alpha", [0.05, 0.7])
@pytest.mark.parametrize("gene", [0, 7])
def test_realistic_edges_match_naive_reference(data, alpha, gene):
    x, low, high = data
    ref = _reference(x[:, low[gene]], x[:, high[gene]], alpha)
    res = base_correlations(x[:, low[gene]], x[:, high[gene]], alpha, tile_rows=37, window_items=500)
    e, attrs = res.edges, res.attrs
    sig = np.nonzero(ref["q_diff"] < alpha)[0]
    assert sig.size > (10_000 if alpha == 0.7 else 10)  # realistic density: ~1/3 of the pairs at 0.7
    np.testing.assert_array_equal(e["pair_index"], sig)
    for fam in ("low", "high"):
        np.testing.assert_allclose(e[f"r_{fam}"], ref[f"r_{fam}"][sig], atol=2e-7, rtol=0)
        # p: scipy at the stored float32 r; near scipy's p at scipy's float64 r
        np.testing.assert_allclose(e[f"p_{fam}"], _t_p(e[f"r_{fam}"]), rtol=1e-12)
        np.testing.assert_allclose(e[f"p_{fam}"], ref[f"p_{fam}"][sig], rtol=1e-4)
        np.testing.assert_array_equal(e[f"sig_{fam}"], ref[f"q_{fam}"][sig] < alpha)
        assert attrs[f"n_sig_{fam}"] == np.sum(ref[f"q_{fam}"] < alpha)
    np.testing.assert_allclose(e["p_diff"], _z_p(e["r_low"], e["r_high"]), rtol=1e-12)
    np.testing.assert_allclose(e["p_diff"], ref["p_diff"][sig], rtol=1e-4)
    for fam in ("low", "high", "diff"):
        want = ref[f"q_{fam}"][sig]
        below = want < alpha
        np.testing.assert_allclose(e[f"q_{fam}"][below], want[below], rtol=1e-4)
        assert np.all(np.isnan(e[f"q_{fam}"][~below]))
    assert attrs["n_sig_differential"] == sig.size


def test_exact_q_on_realistic_data(data):
    x, low, high = data
    ref = _reference(x[:, low[3]], x[:, high[3]], 0.3)
    res = base_correlations(x[:, low[3]], x[:, high[3]], 0.3, tile_rows=64, exact_q=True, window_items=2000)
    sig = res.edges["pair_index"]
    for fam in ("low", "high", "diff"):
        np.testing.assert_allclose(res.edges[f"q_{fam}"], ref[f"q_{fam}"][sig], rtol=1e-4)


def test_stream_is_the_same_for_any_tile_and_chunk(data):
    x, low, high = data
    whole = base_correlations(x[:, low[7]], x[:, high[7]], 0.7, tile_rows=299)
    chunks: list[dict] = []
    attrs = differential_edges(x[:, low[7]], x[:, high[7]], 0.7, tile_rows=5, sink=chunks.append, chunk_edges=1000,
                               window_items=333)
    assert attrs == whole.attrs
    assert all(len(c["pair_index"]) == 1000 for c in chunks[:-1]) and 0 < len(chunks[-1]["pair_index"]) <= 1000
    for name in EDGE_FIELDS:
        np.testing.assert_array_equal(np.concatenate([c[name] for c in chunks]), whole.edges[name], err_msg=name)


@pytest.mark.parametrize(("alpha", "exact_q"), [(0.05, False), (0.7, False), (0.05, True)])
def test_edge_file_round_trip(data, tmp_path, alpha, exact_q):
    """Written in chunks and read back (whole and in chunks), the columns equal the stage's
    (q's from the stored q tables); alpha 0.05 gives the sparse form, 0.7 the bitmap form with
    the r's from the groups' stored ranks and a differential q table; with exact q's that table (every test) is longer than the edges:
    q_diff per edge."""
    x, low, high = data
    res = base_correlations(x[:, low[0]], x[:, high[0]], alpha, tile_rows=50, exact_q=exact_q)
    tables: dict = {}

    def held(given: dict) -> None:  # the differential table's scratch file closes on return
        for name, table in given.items():
            pieces = list(table.pieces())
            tables[name] = QTable.of(*(np.concatenate([p[i] for p in pieces]) for i in (0, 1)))

    differential_edges(x[:, low[0]], x[:, high[0]], alpha, tile_rows=50, exact_q=exact_q, sink=lambda c: None,
                       on_tables=held)
    path = tmp_path / "edges.h5"
    n = res.edges["pair_index"].size
    with h5py.File(path, "w") as f:
        writer = BaseEdgeWriter(f, n_genes=N_GENES, n_edges=n, tables=tables,
                                ranks=(IntegerRanks(x[:, low[0]]), IntegerRanks(x[:, high[0]])))
        for start in range(0, n, 777):
            writer.append({k: v[start : start + 777] for k, v in res.edges.items()})
        writer.close(res.attrs, [f"g{i}" for i in range(N_GENES)])
        assert writer.form == ("bitmap" if alpha == 0.7 else "sparse")
        assert writer.r_form == ("ranks" if alpha == 0.7 else "float")  # dense: r's from the stored ranks
        assert writer.q_diff_form == ("column" if 2 * tables["diff"].size > n else "table")
        if alpha == 0.7 or exact_q:  # dense: few q runs per edge; exact: every test in the table
            assert writer.q_diff_form == ("column" if exact_q else "table")
        assert ("q_diff" in f["edges"]) == (writer.q_diff_form == "column") and "q_low" not in f["edges"] and "q_high" not in f["edges"]
    meta, edges = read_base_edges(path)
    assert meta["edge_form"] == writer.form and meta["q_diff_form"] == writer.q_diff_form
    for name, dtype in BASE_EDGE_DTYPES.items():
        assert edges[name].dtype == dtype
        np.testing.assert_array_equal(edges[name], res.edges[name], err_msg=name)
    chunks = list(iter_base_edges(path, chunk_edges=123))
    assert all(c["pair_index"].size == 123 for c in chunks[:-1])
    for name in BASE_EDGE_DTYPES:
        np.testing.assert_array_equal(np.concatenate([c[name] for c in chunks]), res.edges[name], err_msg=name)
    some = ("gene_j", "sig_high", "q_diff")  # a subset: only those come back, with the same values
    chunks = list(iter_base_edges(path, chunk_edges=500, columns=some))
    assert all(tuple(c) == some for c in chunks)
    for name in some:
        np.testing.assert_array_equal(np.concatenate([c[name] for c in chunks]), res.edges[name], err_msg=name)
    with pytest.raises(ValueError, match="unknown 02a edge columns"):
        next(iter_base_edges(path, chunk_edges=10, columns=("r_low", "rho")))


def test_peak_rss_within_the_estimate(tmp_path):
    """The stage as a command on realistic data: its measured peak RSS (memfit sidecar) is
    within -5 % / +25 % of its estimate at alpha 0.05 and 0.7 (the estimate has no edge term)."""
    import json

    from util_stage02 import SCRIPT_02A, run_script, write_inputs

    x = make_realistic(1500, 128, seed=2).astype(np.float32)
    expr, idx = write_inputs(tmp_path, x, n_bootstrap=2)
    ratios = {}
    for alpha in (0.05, 0.7):
        out = tmp_path / f"base_{alpha}"
        done = run_script(SCRIPT_02A, "--expr-h5", expr, "--indices-h5", idx, "--out-dir", out, "--fdr-alpha", alpha,
                          "--gene-index", 0, "--quiet")
        assert done.returncode == 0, done.stderr
        record = json.loads(next((out / "memory").glob("02a.*.memory.json")).read_text())
        with h5py.File(next(out.glob("*.h5")), "r") as f:
            assert f["meta"].attrs["n_sig_differential"] > (50_000 if alpha == 0.7 else 0)
        ratios[alpha] = record["estimate_bytes"] / record["peak_rss_bytes"]
    assert all(0.95 <= r <= 1.25 for r in ratios.values()), ratios


def test_reader_w_is_the_kernels_w_bit_for_bit():
    """dcoex.stats.w_statistic (numpy, what readers derive q_diff from) equals the kernels' w
    exactly, on random r's, the clip edges and the grid of Spearman values at k = 25."""
    from dcoex.stages.s02a_base_correlations.kernels import _w_stat
    from dcoex.stats import FISHER_CLIP, w_statistic

    rng = np.random.default_rng(5)
    grid = (1 - 6 * np.arange(0, 2601, 7) / (25 * (25**2 - 1))).astype(np.float32)
    r_low = np.concatenate([rng.uniform(-1, 1, 20_000), grid, [1.0, -1.0, 0.99995, -0.99995, 0.0]]).astype(np.float32)
    r_high = np.concatenate([rng.uniform(-1, 1, 20_000), grid[::-1], [-1.0, 1.0, 0.3, 0.99999, 0.0]]).astype(np.float32)
    want = np.array([_w_stat(a, b, FISHER_CLIP) for a, b in zip(r_low, r_high)])
    got = w_statistic(r_low, r_high)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, want)


def _with_ties(x: np.ndarray, every: int) -> np.ndarray:
    """Every ``every``-th gene rounded to 1 decimal: ties in both groups (the rest have none)."""
    x = x.copy()
    x[::every] = np.round(x[::every], 1)
    return x


def test_ties_in_some_genes_match_naive_reference(data):
    """Pairs of tie-free genes are counted exactly by their integer rank product, pairs with a
    tied gene are binned and collected: together still scipy + statsmodels (alpha 0.7: dense)."""
    from dcoex.ranks import IntegerRanks
    from dcoex.stages.s02a_base_correlations.science import tie_free

    x, low, high = data
    x = _with_ties(x, 7)
    xl, xh = x[:, low[2]], x[:, high[2]]
    flags = tie_free(IntegerRanks(xl))
    assert 0 < (~flags).sum() < flags.sum()  # both kinds of pairs exist
    ref = _reference(xl, xh, 0.7)
    res = base_correlations(xl, xh, 0.7, tile_rows=41, window_items=700)
    sig = np.nonzero(ref["q_diff"] < 0.7)[0]
    np.testing.assert_array_equal(res.edges["pair_index"], sig)
    for fam in ("low", "high", "diff"):
        want = ref[f"q_{fam}"][sig]
        below = want < 0.7
        np.testing.assert_allclose(res.edges[f"q_{fam}"][below], want[below], rtol=1e-4)
        assert np.all(np.isnan(res.edges[f"q_{fam}"][~below]))
        if fam != "diff":
            assert res.attrs[f"n_sig_{fam}"] == np.sum(ref[f"q_{fam}"] < 0.7)


def test_same_output_for_any_thread_count(data):
    """numba's thread count (parts of the histogram, collection and emission) changes no bit:
    edges, r, q, cuts and counts, with several collection passes and q-table slices."""
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one CPU: numba cannot run two threads here")
    x, low, high = data
    x = _with_ties(x, 11)
    before = numba.get_num_threads()
    runs = []
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            runs.append(base_correlations(x[:, low[5]], x[:, high[5]], 0.7, tile_rows=23, window_items=400))
    finally:
        numba.set_num_threads(before)
    one, two = runs
    assert one.attrs == two.attrs
    assert one.edges["pair_index"].size > 5_000
    for name in EDGE_FIELDS:
        np.testing.assert_array_equal(one.edges[name], two.edges[name], err_msg=name)


def test_stage_threads_follow_the_allocation():
    """dcoex.threads.blas_threads (the stage's BLAS limit from the task's CPU slots) sets
    numba's threads too, and restores them."""
    import numba

    from dcoex.threads import blas_threads

    before = numba.get_num_threads()
    with blas_threads(1) as threads:
        assert threads == 1 and numba.get_num_threads() == 1
    assert numba.get_num_threads() == before


@pytest.mark.parametrize(("n_samples", "alpha", "q_diff_form"), [(128, 0.7, "table"), (300, 0.7, None),
                                                                 (600, 0.7, "column"), (600, 0.05, "column")])
def test_file_bytes_within_the_prediction(tmp_path, n_samples, alpha, q_diff_form):
    """The stage's file on realistic data against ``output_bytes`` from its edge count and k:
    never below, at most 3× above (small files: the group tables' bound). The q tables grow with k (k = 25: a differential table;
    k = 60: a long one; k = 120: q_diff per edge and group tables of ~10⁵ entries), which an
    edge-only model under-predicted by up to 2×."""
    from util_stage02 import SCRIPT_02A, run_script, write_inputs

    from dcoex.stages.s02a_base_correlations.estimator import output_bytes

    x = make_realistic(1000, n_samples, seed=2).astype(np.float32)
    expr, idx = write_inputs(tmp_path, x, n_bootstrap=2)
    out = tmp_path / "base"
    done = run_script(SCRIPT_02A, "--expr-h5", expr, "--indices-h5", idx, "--out-dir", out, "--fdr-alpha", alpha,
                      "--gene-index", 0, "--quiet")
    assert done.returncode == 0, done.stderr
    path = next(out.glob("*.h5"))
    with h5py.File(path, "r") as f:
        meta = f["meta"].attrs
        edges, k_low, k_high, form = (int(meta["n_sig_differential"]), int(meta["k_low"]), int(meta["k_high"]),
                                      str(meta["q_diff_form"]))
    assert edges > 10_000
    assert form == (q_diff_form or form)
    ratio = output_bytes(1000, edges, k_low=k_low, k_high=k_high) / path.stat().st_size
    assert 1.0 <= ratio <= 3.0, (ratio, edges, form)
