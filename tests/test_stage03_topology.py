"""Global topology against networkx on random and structured networks."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
from util_stage03 import random_pairs

from dcoex.stages.s03_network import topology
from dcoex.stages.s03_network.classify import classify, presence, select_edges


def graph_cases():
    rng = np.random.default_rng(7)
    cases = []
    for n, m in [(40, 0), (40, 1), (40, 12), (60, 150), (80, 600), (30, 435)]:
        gi, gj = random_pairs(n, m, rng)
        cases.append((f"random-{n}-{m}", n, gi, gj))
    # a hub (star) on a clique plus a separate triangle: skewed degrees, several components
    edges = [(0, k) for k in range(1, 30)] + [(a, b) for a in range(1, 8) for b in range(a + 1, 8)] + [(40, 41), (41, 42), (40, 42)]
    gi, gj = np.array(edges).T
    cases.append(("hub-clique", 50, gi.astype(np.int32), gj.astype(np.int32)))
    # a 4-cycle: every degree equal, assortativity undefined
    cases.append(("cycle", 10, np.array([0, 1, 2, 0], np.int32), np.array([1, 2, 3, 3], np.int32)))
    return cases


CASES = graph_cases()


@pytest.mark.parametrize("path", ["sparse", "bits"])
@pytest.mark.parametrize("chunk", [topology.TWO_PATH_CHUNK_ENTRIES, 5])
@pytest.mark.parametrize("name,n,gi,gj", CASES, ids=[c[0] for c in CASES])
def test_topology_matches_networkx(monkeypatch, chunk, path, *, name, n, gi, gj):
    """Both triangle counts (sparse two-path products; bit adjacency, 1–2 words per row),
    whole and in small chunks, against networkx."""
    monkeypatch.setattr(topology, "TWO_PATH_CHUNK_ENTRIES", chunk)
    if path == "sparse":
        monkeypatch.setattr(topology, "bitset_bytes", lambda *_: 0)
    else:
        monkeypatch.setattr(topology, "bitset_bytes", lambda *_: 1)
        monkeypatch.setattr(topology, "WORD_NS", 0.0)
        if chunk == 5:
            monkeypatch.setattr(topology, "CHUNK_WORDS", 3)
            monkeypatch.setattr(topology, "BUILD_BITS", 200)
    attrs, deg = topology.global_topology(gi, gj, n)
    full = nx.Graph()
    full.add_nodes_from(range(n))
    full.add_edges_from(zip(gi.tolist(), gj.tolist()))
    active = nx.Graph(list(zip(gi.tolist(), gj.tolist())))
    assert deg.tolist() == [full.degree(v) for v in range(n)]
    adj = topology.adjacency(gi, gj, n)
    tri = topology.triangles(adj, deg)
    assert tri.tolist() == [nx.triangles(full, v) for v in range(n)]
    clust = nx.clustering(full)
    assert np.allclose(topology.local_clustering(deg, tri), [clust[v] for v in range(n)])
    assert attrs["n_edges"] == full.number_of_edges()
    assert attrs["n_nodes_active"] == active.number_of_nodes()
    assert attrs["density"] == pytest.approx(nx.density(full))
    assert attrs["n_triangles"] == sum(nx.triangles(full).values()) // 3
    assert attrs["transitivity"] == pytest.approx(nx.transitivity(full))
    assert attrs["n_components"] == nx.number_connected_components(active)
    largest = max((len(c) for c in nx.connected_components(active)), default=0)
    assert attrs["largest_component_size"] == largest
    if active.number_of_nodes():
        assert attrs["global_clustering"] == pytest.approx(nx.average_clustering(active))
        act = np.array([d for _, d in active.degree()], dtype=float)
        assert attrs["median_degree"] == pytest.approx(np.median(act))
        assert attrs["std_degree"] == pytest.approx(act.std())
        assert attrs["degree_p90"] == pytest.approx(np.percentile(act, 90))
        assert attrs["max_degree"] == max(d for _, d in active.degree())
    else:
        assert math.isnan(attrs["global_clustering"]) and attrs["n_components"] == 0
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = nx.degree_assortativity_coefficient(active) if active.number_of_edges() else float("nan")
    if math.isnan(expected):
        assert math.isnan(attrs["assortativity"])
    else:
        assert attrs["assortativity"] == pytest.approx(expected, abs=1e-9)


def test_undefined_values_option():
    attrs, deg = topology.global_topology(np.zeros(0, np.int32), np.zeros(0, np.int32), 5, undefined=0.0)
    assert deg.tolist() == [0] * 5
    assert attrs["median_degree"] == 0.0 and attrs["assortativity"] == 0.0 and attrs["global_clustering"] == 0.0
    attrs, _ = topology.global_topology(np.zeros(0, np.int32), np.zeros(0, np.int32), 5)
    assert math.isnan(attrs["median_degree"]) and math.isnan(attrs["power_law_exponent"])


def test_power_law_fit_against_polyfit_by_hand():
    # degree k held by round(1000 k^-2) nodes for k = 1..8: counts 1000, 250, 111, 62, 40, 28, 20, 16
    degrees = np.repeat(np.arange(1, 9), np.round(1000 * np.arange(1, 9, dtype=float) ** -2).astype(int))
    gamma, r2 = topology.power_law_fit(degrees)
    assert gamma == pytest.approx(2.0, abs=0.02) and r2 > 0.999
    assert all(math.isnan(v) for v in topology.power_law_fit(np.array([1, 2, 3])))


def test_classify_rules_by_hand():
    r_low = np.array([0.5, 0.0, 0.5, 0.3, 0.6, 0.4, 0.4, -0.5, 0.00001])
    r_high = np.array([0.1, 0.6, -0.5, 0.6, 0.3, 0.4, 0.9, -0.8, 0.7])
    sig_low = np.array([1, 1, 1, 1, 1, 1, 0, 1, 1], bool)
    sig_high = np.array([0, 1, 1, 1, 1, 1, 0, 1, 1], bool)
    pl, ph = presence(r_low, sig_low, 1e-4), presence(r_high, sig_high, 1e-4)
    assert classify(r_low, r_high, pl, ph).tolist() == [1, 2, 3, 4, 5, 0, 0, 4, 2]
    keep = select_edges(np.array([0.3, -0.3, 0.01, 0.5]), np.array([0.1, -0.5, -0.1, 0.2]),
                        np.array([0.5, -0.1, 0.1, 0.8]), 0.05, True)
    assert keep.tolist() == [True, True, False, True]
    keep = select_edges(np.array([0.3, -0.3, 0.01, 0.5]), np.array([0.1, -0.5, -0.1, 0.2]),
                        np.array([0.5, -0.1, 0.1, 0.8]), 0.4, False)
    assert keep.tolist() == [False, False, False, True]
