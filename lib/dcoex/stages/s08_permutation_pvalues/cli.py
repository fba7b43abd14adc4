"""Stage 08: empirical p-values and BH q-values of the hub metrics (docs/stage08.md).

Reads the 03b summary (which reference genes, the run's parameters), each gene's 02a file
(its observed value of every tested metric, computed exactly like its null: no bootstrap CI
filter), the stage-07 parts of the run's split, and writes ``permutation_pvalues.h5`` (p, q,
observed values and the whole null, P × N per metric) and ``rewiring_hubs_with_pvals.tsv``
(rewiring_hubs.tsv, its text unchanged, plus obs_/pval_/qval_ of each metric,
n_metrics_sig and any_sig), both renamed into place together.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import click
import h5py
import numpy as np

from dcoex.cli import force_option
from dcoex.edge_files import iter_base_edges
from dcoex.genes import gene_file_path
from dcoex.h5io import attr_value, decode_strings, open_h5_input, read_meta, write_attrs, write_dataset
from dcoex.progress import progress
from dcoex.provenance import Provenance, read_provenance, read_provenance_attr, why_stale, write_provenance
from dcoex.stages.contract import MissingUpstream
from dcoex.stages.s03b_collect.contract import TSV_SHA_ATTR
from dcoex.stages.s07_permutation_null.io import NullUpstream, null_dataset, part_meta, part_paths, read_part
from dcoex.stages.s07_permutation_null.science import CHUNK_EDGES, METRICS, SIDES, EdgeRules, observed_metrics
from dcoex.stages.s08_permutation_pvalues.contract import CONTRACT
from dcoex.stages.s08_permutation_pvalues.estimator import estimate
from dcoex.stages.s08_permutation_pvalues.science import (
    bh_qvalues,
    empirical_pvalues,
    format_value,
    null_summary,
)
from hpc.atomic import atomic_output, ensure_writable_dir
from hpc.errors import InputError
from memfit.allocation import detect_allocation
from memfit.record import H5_GROUP as MEMFIT_GROUP
from memfit.record import PeakRecorder, h5_attrs, write_sidecar

STAGE = "08"
TESTED_STATUS = ("ok", "no-edges")
#: Parameters the null must share with the observed run (summary meta name → part meta name).
SHARED = ("fdr_alpha", "k_low", "k_high", "edge_selection", "min_effect", "corr_threshold")


def _summary(path: Path) -> tuple[dict[str, Any], list[str], np.ndarray, list[str], list[str]]:
    with open_h5_input(path, "network summary (stage 03b)") as f:
        if "per_gene" not in f or "meta" not in f:
            raise InputError(f"{path}: not a stage-03b summary (no per_gene/meta)")
        meta = read_meta(f["meta"])
        names = decode_strings(f["gene_names"][...])
        rows = np.asarray(f["per_gene/gene_index"][...], np.int64)
        return meta, names, rows, decode_strings(f["per_gene/gene_name"][...]), decode_strings(f["per_gene/status"][...])


def _check_parts(paths: list[Path], summary: dict[str, Any], n_genes: int) -> dict[str, Any]:
    """Every part exists, shares one parameter set, and was made with the observed run's
    parameters; returns that set (InputError, one line, otherwise)."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"{missing[0]}: missing ({len(missing)} of {len(paths)} part(s) of the permutation null); "
                         "run stage 07 for them")
    first = part_meta(paths[0])
    reference = read_provenance(paths[0])
    for path in paths:
        prov = read_provenance(path)
        if prov is None or prov.stage != "07":
            raise InputError(f"{path}: not a stage-07 part (no provenance)")
        why = [f"{k} {reference.params.get(k)} vs {prov.params.get(k)}" for k in sorted(set(prov.params) | set(reference.params))
               if prov.params.get(k) != reference.params.get(k)]
        why += [f"input {k} differs" for k in ("expression", "group_sizes") if prov.inputs.get(k) != reference.inputs.get(k)]
        if why:
            raise InputError(f"{path}: made by another run than {paths[0].name} ({'; '.join(why)}); rerun stage 07")
    if int(first["n_genes"]) != n_genes:
        raise InputError(f"{paths[0]}: null of {first['n_genes']} genes, the summary has {n_genes}; rerun stage 07")
    if summary.get("expr_content_sha256") and attr_value(first["expr_content_sha256"]) != summary["expr_content_sha256"]:
        raise InputError(f"{paths[0]}: null of another expression matrix than the observed networks "
                         "(expr_content_sha256 differs); rerun stage 07 on this run")
    for name in SHARED:
        obs, null = summary.get(name), first.get(name)
        if obs is None or obs == "" or null is None:
            continue
        same = np.isclose(float(obs), float(null), rtol=1e-12, atol=0) if not isinstance(obs, str) else obs == null
        if not same:
            raise InputError(f"{paths[0]}: null made with {name}={null} but the observed networks with {name}={obs}; "
                             "rerun stage 07 with the run's parameters")
    return first


def run_pvalues(*, summary_h5: str | Path, hubs_tsv: str | Path, base_dir: str | Path, null_dir: str | Path,
                out_h5: str | Path, out_tsv: str | Path, values: dict[str, Any], force: bool = False,
                quiet: bool = True) -> dict[str, Any]:
    """Write the p-value table and the augmented hubs TSV; returns counts (``skipped``: current)."""
    v = CONTRACT.resolve(values)
    summary_h5, hubs_tsv, base_dir, null_dir = Path(summary_h5), Path(hubs_tsv), Path(base_dir), Path(null_dir)
    out_h5, out_tsv = Path(out_h5), Path(out_tsv)
    meta, names, rows, row_names, status = _summary(summary_h5)
    n = len(names)
    if not hubs_tsv.is_file():
        raise InputError(f"{hubs_tsv}: no such file (stage 03b writes it with the summary)")
    paths = part_paths(null_dir, v["n_permutations"], v["perms_per_task"])
    part = _check_parts(paths, meta, n)
    rules = EdgeRules(str(attr_value(part["edge_selection"])), float(part["min_effect"]), float(part["corr_threshold"]))
    upstream = NullUpstream(null_dir=null_dir, n_permutations=v["n_permutations"], perms_per_task=v["perms_per_task"],
                            files={"03b": summary_h5}, gene_names=names)
    try:
        wanted = CONTRACT.wanted(v, upstream)
    except MissingUpstream as exc:
        raise InputError(str(exc)) from None
    ensure_writable_dir(out_h5.parent)
    ensure_writable_dir(out_tsv.parent)
    allocation = detect_allocation()
    with PeakRecorder(allocation.limit_bytes) as recorder:
        tested = [i for i, s in enumerate(status) if s in TESTED_STATUS]
        observed = {m: np.full(rows.size, np.nan) for m in METRICS}
        max_edges = 0
        for i in progress(tested, quiet=quiet, unit="gene"):
            g = int(rows[i])
            path = gene_file_path(base_dir, g, names[g], n)
            with open_h5_input(path, "base correlations file (stage 02a)", f"gene {g} ({names[g]})") as f:
                base_meta = read_meta(f["meta"])
                if not np.isclose(float(base_meta["fdr_alpha"]), float(part["fdr_alpha"]), rtol=1e-12, atol=0) or \
                        (int(base_meta["k_low"]), int(base_meta["k_high"])) != (int(part["k_low"]), int(part["k_high"])):
                    raise InputError(f"{path}: made with fdr_alpha={base_meta['fdr_alpha']}, k={base_meta['k_low']}/"
                                     f"{base_meta['k_high']}; the null with {part['fdr_alpha']}, "
                                     f"{part['k_low']}/{part['k_high']}")
            max_edges = max(max_edges, int(base_meta["n_sig_differential"]))
            chunks = iter_base_edges(path, chunk_edges=CHUNK_EDGES)
            for m, value in observed_metrics(chunks, g, n, rules).items():
                observed[m][i] = value
        est = estimate(n, v["n_permutations"], n_edges=min(max_edges, CHUNK_EDGES))
        columns: dict[str, np.ndarray] = {}
        nulls: dict[str, np.ndarray] = {}
        for m in METRICS:
            null = np.concatenate([read_part(p, m) for p in paths], axis=0)
            nulls[m] = null
            sub = null[:, rows]
            p, n_defined = empirical_pvalues(observed[m], sub, SIDES[m])
            mean, sd = null_summary(sub)
            columns.update({f"obs_{m}": observed[m], f"pval_{m}": p, f"qval_{m}": bh_qvalues(p),
                            f"null_mean_{m}": mean, f"null_std_{m}": sd, f"n_defined_{m}": n_defined})
        n_sig = sum((columns[f"qval_{m}"] < v["perm_alpha"]).astype(np.int64) for m in METRICS)
        tsv_text = _augmented_tsv(hubs_tsv, rows, columns, n_sig)
        tsv_sha = hashlib.sha256(tsv_text.encode()).hexdigest()
        if not force and _current(out_h5, wanted, out_tsv, tsv_sha):
            return {"skipped": True, "tested": len(tested)}
        with atomic_output(out_h5) as tmp_h5:
            with h5py.File(tmp_h5, "w") as f:
                write_attrs(f.create_group("meta"), {
                    "n_genes": n, "n_permutations": v["n_permutations"], "perms_per_task": v["perms_per_task"],
                    "perm_alpha": v["perm_alpha"], "seed": int(part["seed"]), "rng_scheme": attr_value(part["rng_scheme"]),
                    **{k: attr_value(part[k]) for k in SHARED}, "expr_content_sha256": attr_value(part["expr_content_sha256"]),
                    "n_tested": len(tested), "pvalue": "(1 + #{null >= observed}) / (1 + defined nulls)",
                    "sides": ",".join(f"{m}:{SIDES[m]}" for m in METRICS),
                })
                write_dataset(f, "gene_names", np.asarray(names, dtype=object))
                write_dataset(f, "metrics", np.asarray(METRICS, dtype=object))
                group = f.create_group("per_gene")
                write_dataset(group, "gene_index", rows.astype(np.int32))
                write_dataset(group, "gene_name", np.asarray(row_names, dtype=object))
                write_dataset(group, "status", np.asarray(status, dtype=object))
                for name, values_ in columns.items():
                    write_dataset(group, name, values_)
                write_dataset(group, "n_metrics_sig", n_sig)
                write_dataset(group, "any_sig", n_sig > 0)
                null_group = f.create_group("null")
                for m in METRICS:
                    null_dataset(null_group, m, nulls[m])
                write_provenance(f, wanted, extra={TSV_SHA_ATTR: tsv_sha})
                write_attrs(f.require_group(MEMFIT_GROUP), h5_attrs(STAGE, est, allocation, recorder, None))
            with atomic_output(out_tsv) as tmp_tsv:
                tmp_tsv.write_text(tsv_text)
    write_sidecar(out_h5, STAGE, est, allocation, recorder, batch_size=None,
                  extra={"n_genes": n, "n_permutations": v["n_permutations"], "n_tested": len(tested),
                         "max_base_edges": max_edges})
    return {"skipped": False, "tested": len(tested), "significant": int((n_sig > 0).sum())}


def _augmented_tsv(hubs_tsv: Path, rows: np.ndarray, columns: dict[str, np.ndarray], n_sig: np.ndarray) -> str:
    """rewiring_hubs.tsv, every line unchanged, plus obs_/pval_/qval_ per metric, n_metrics_sig, any_sig."""
    lines = hubs_tsv.read_text().splitlines()
    if not lines or not lines[0].startswith("gene_idx\t"):
        raise InputError(f"{hubs_tsv}: not a rewiring_hubs.tsv (no gene_idx header)")
    position = {int(g): i for i, g in enumerate(rows)}
    added = [f"{kind}_{m}" for m in METRICS for kind in ("obs", "pval", "qval")]
    out = [lines[0] + "\t" + "\t".join([*added, "n_metrics_sig", "any_sig"])]
    for line in lines[1:]:
        gene = int(line.split("\t", 1)[0])
        if gene not in position:
            raise InputError(f"{hubs_tsv}: gene {gene} is not in the summary; rerun stage 03b")
        i = position[gene]
        cells = [format_value(columns[name][i]) for name in added]
        out.append(line + "\t" + "\t".join([*cells, str(int(n_sig[i])), str(bool(n_sig[i] > 0))]))
    return "\n".join(out) + "\n"


def _current(out_h5: Path, wanted: Provenance, out_tsv: Path, tsv_sha: str) -> bool:
    if why_stale(out_h5, wanted) is not None or read_provenance_attr(out_h5, TSV_SHA_ATTR) != tsv_sha:
        return False
    return out_tsv.is_file() and hashlib.sha256(out_tsv.read_bytes()).hexdigest() == tsv_sha


@click.command(name="08_permutation_pvalues")
@click.option("--summary-h5", required=True, type=click.Path(dir_okay=False), help="differential_network_summary.h5 (03b).")
@click.option("--hubs-tsv", required=True, type=click.Path(dir_okay=False), help="rewiring_hubs.tsv (03b).")
@click.option("--base-dir", required=True, type=click.Path(file_okay=False), help="base_correlations/ (02a): observed values.")
@click.option("--null-dir", required=True, type=click.Path(file_okay=False), help="permutation_null/ (07).")
@click.option("--out-h5", required=True, type=click.Path(dir_okay=False), help="permutation_pvalues.h5 to write.")
@click.option("--out-tsv", required=True, type=click.Path(dir_okay=False), help="rewiring_hubs_with_pvals.tsv to write.")
@CONTRACT.click_options
@force_option
@click.option("--quiet", is_flag=True, help="No progress bar or summary line.")
def main(*, summary_h5: str, hubs_tsv: str, base_dir: str, null_dir: str, out_h5: str, out_tsv: str, force: bool,
         quiet: bool, **values: Any) -> None:
    """Empirical permutation p-values (+1 correction) and BH q-values across reference genes."""
    info = run_pvalues(summary_h5=summary_h5, hubs_tsv=hubs_tsv, base_dir=base_dir, null_dir=null_dir, out_h5=out_h5,
                       out_tsv=out_tsv, values=values, force=force, quiet=quiet)
    if not quiet:
        state = "current, kept" if info["skipped"] else f"{info['significant']} gene(s) with a metric at q < alpha"
        print(f"08: {info['tested']} reference genes tested; {state}", file=sys.stderr)
