"""Stage 04: the focus genes' topology in every reference gene's networks (docs/stage04.md).

For reference gene g and focus gene f, over the edges of g's differential network E_g
(stage 03) that touch f: degree in the low network (edges present in LOW), in the high
network (present in HIGH) and in the diff network (all of E_g), the counts of each edge
class, the rewiring count (disappear + new + sign_change) and Σ|Δ|. Edges are read in
chunks of ``EDGE_CHUNK``, so memory does not grow with |E_g|.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from dcoex.genes import gene_file_path
from dcoex.h5io import decode_strings
from dcoex.progress import progress
from dcoex.provenance import read_provenance
from dcoex.stages.s03_network.io import iter_network_edges
from dcoex.stages.s03b_collect.contract import networks_digest
from dcoex.stages.upstream import FileUpstream
from hpc.errors import InputError

#: Per (reference gene, focus gene) quantities, in the order of the ``metrics`` axis.
METRICS: tuple[str, ...] = (
    "degree_low", "degree_high", "degree_diff", "n_disappear", "n_new", "n_sign_change", "n_strengthen",
    "n_weaken", "n_rewire", "sum_abs_delta",
)
#: Metrics that are counts (written as integers in the TSV).
INTEGER_METRICS = frozenset(METRICS[:-1])
#: Candidate edges (rows of a network's 02a/02b files) read at a time.
EDGE_CHUNK = 1 << 16
#: qual_score codes (docs/design.md §4.7) of the class counts, in METRICS order.
_CLASS_CODES = {"n_disappear": 1, "n_new": 2, "n_sign_change": 3, "n_strengthen": 4, "n_weaken": 5}
_REWIRE_CODES = (1, 2, 3)


@dataclass
class Summary:
    """What stages 04 and 05 need from differential_network_summary.h5 (stage 03b)."""

    path: Path
    gene_names: list[str]
    gene_index: np.ndarray  # int64, one row per reference gene (ascending)
    status: list[str]
    networks_digest: str  # the 03b input digest of the networks collected

    def column(self, name: str) -> np.ndarray:
        """A per_gene column (float64; missing genes NaN or -1 as 03b wrote them)."""
        with h5py.File(self.path, "r") as f:
            return f[f"per_gene/{name}"][()].astype(np.float64)


def read_summary(path: Path) -> Summary:
    """Read the 03b summary; InputError (one line) if it is missing or not one."""
    prov = read_provenance(path)
    if prov is None or prov.stage != "03b":
        raise InputError(f"{path}: not a differential_network_summary.h5 of stage 03b (run stage 03b first)")
    try:
        with h5py.File(path, "r") as f:
            names = decode_strings(f["gene_names"][()])
            index = f["per_gene/gene_index"][()].astype(np.int64)
            status = decode_strings(f["per_gene/status"][()])
    except (OSError, KeyError) as exc:
        raise InputError(f"{path}: unreadable summary ({exc})") from None
    return Summary(Path(path), names, index, status, prov.inputs.get("networks", ""))


def check_networks(summary: Summary, networks_dir: Path) -> None:
    """The network files in ``networks_dir`` are the ones the summary collected (same
    provenance digests); InputError naming both otherwise (a folder of another run, or
    networks recomputed since 03b ran)."""
    upstream = FileUpstream(dirs={"03": networks_dir}, gene_names=summary.gene_names)
    if networks_digest([int(g) for g in summary.gene_index], upstream) != summary.networks_digest:
        raise InputError(f"{networks_dir}: its network files are not those collected in {summary.path} "
                         "(another run's folder, or networks recomputed since); rerun stage 03b or give this "
                         "run's networks folder")


def hub_ranking(summary: Summary, metric: str) -> np.ndarray:
    """Gene indices of the reference genes with edges (status ok), by ``metric`` descending,
    NaN last, ties by gene index (L2L1_deg gives rewiring_hubs.tsv's order)."""
    ok = np.array([s == "ok" for s in summary.status], dtype=bool)
    values = summary.column(metric)[ok]
    genes = summary.gene_index[ok]
    key = np.where(np.isnan(values), np.inf, -values)
    return genes[np.lexsort((genes, key))]


def resolve_focus(gene_names: Sequence[str], focus_genes: str | None, ranking: np.ndarray, n_hubs: int) -> list[int]:
    """The focus genes' indices: the names given (InputError listing the unknown ones) or the
    top ``n_hubs`` of ``ranking``."""
    if not focus_genes:
        return [int(g) for g in ranking[:n_hubs]]
    lookup = {name: i for i, name in enumerate(gene_names)}
    names = focus_genes.split(",")
    unknown = [n for n in names if n not in lookup]
    if unknown:
        raise InputError(f"--focus-genes: {len(unknown)} unknown gene name(s): {', '.join(unknown)}")
    return [lookup[n] for n in names]


def incident_metrics(network: h5py.File, position: np.ndarray, n_rows: int) -> np.ndarray:
    """(n_rows, len(METRICS)) float64: for every gene v with ``position[v] >= 0``, the METRICS
    of the edges of this stage 03 file that touch v, in row ``position[v]``."""
    out = np.zeros((n_rows, len(METRICS)), dtype=np.float64)
    col = {m: k for k, m in enumerate(METRICS)}
    for edges in iter_network_edges(network, chunk_edges=EDGE_CHUNK):
        code = edges["qual_score"].astype(np.int64)
        low = edges["present_low"].astype(np.float64)
        high = edges["present_high"].astype(np.float64)
        abs_delta = np.abs(edges["delta_base"].astype(np.float64))
        rewire = np.isin(code, _REWIRE_CODES).astype(np.float64)
        for end in ("gene_i", "gene_j"):
            rows = position[edges[end]]
            hit = rows >= 0
            if not hit.any():
                continue
            r = rows[hit]

            def add(name: str, weights: np.ndarray | None, r: np.ndarray = r, hit: np.ndarray = hit) -> None:
                out[:, col[name]] += np.bincount(r, None if weights is None else weights[hit], minlength=n_rows)

            add("degree_low", low)
            add("degree_high", high)
            add("degree_diff", None)
            for name, c in _CLASS_CODES.items():
                add(name, (code == c).astype(np.float64))
            add("n_rewire", rewire)
            add("sum_abs_delta", abs_delta)
    return out


def focus_topology(summary: Summary, networks_dir: Path, focus: Sequence[int], *, quiet: bool = True
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(reference gene indices (R,), values (R, F, len(METRICS)) float64) over the reference
    genes that have a network file, ascending."""
    n = len(summary.gene_names)
    refs = np.array([g for g, s in zip(summary.gene_index, summary.status) if s != "missing"], dtype=np.int64)
    position = np.full(n, -1, dtype=np.int64)
    position[np.asarray(focus, dtype=np.int64)] = np.arange(len(focus))
    values = np.zeros((refs.size, len(focus), len(METRICS)), dtype=np.float64)
    for row, g in enumerate(progress(refs, quiet=quiet, unit="file")):
        path = gene_file_path(networks_dir, int(g), summary.gene_names[int(g)], n)
        try:
            with h5py.File(path, "r") as f:
                values[row] = incident_metrics(f, position, len(focus))
        except (OSError, KeyError) as exc:
            raise InputError(f"{path}: not a readable stage 03 network file ({exc})") from None
    return refs, values
