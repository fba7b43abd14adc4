"""Benchmark of label transfer (issue 7, item 5): accuracy vs peers, memory vs a naive run, estimator.

  python bench/label_transfer.py accuracy  [--seeds 0,1,2]   # pbmc68k_reduced split + synthetic_iid
  python bench/label_transfer.py memory                        # estimator vs measured, sizes + naive run
  python bench/label_transfer.py all                           # both; writes bench/results/label_transfer.json
  python bench/label_transfer.py summarize                     # tables from the accuracy rows (several processes)
  python bench/label_transfer.py ablation --seeds 0,...,9      # this pipeline's classifier choices (pbmc)
  python bench/label_transfer.py memory-heldout                # estimator vs measured on sizes not fitted
  python bench/label_transfer.py compare-paired --splits S --accuracy-max-epochs 20   # issue 13: methods x splits
  python bench/label_transfer.py unknown-rules --accuracy-max-epochs 20   # unknown rules on compare-paired's latents
  python bench/label_transfer.py large --max-epochs 1          # the seed's scale: diagnose vs measured, per epoch

Accuracy: this pipeline (scVI latent + XGBoost), SCANVI (scvi-tools, from the same kind of
scVI model) and CellTypist (use_SGD=True; bench-only dependency) trained on the same
reference, evaluated on the same query, 3 seeds (the target; more seeds are summarised apart). Memory: each size is run in a fresh
process (`label_transfer.py run`); the naive run (outer join, dense float64, no HVG, scVI
on all genes) is run the same way on the largest size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
CLI = ROOT / "src" / "scripts" / "labeltransfer" / "label_transfer.py"
RESULTS = ROOT / "bench" / "results" / "label_transfer.json"
PY = sys.executable

warnings.filterwarnings("ignore")


# ---------------------------------------------------------------- data sets
def pbmc_split(seed: int, out: Path) -> tuple[Path, Path, str]:
    """pbmc68k_reduced raw counts split 50/50 (stratified); query binomially thinned per gene."""
    import anndata
    import pandas as pd
    import scanpy as sc
    import scipy.sparse as sp

    pb = sc.datasets.pbmc68k_reduced()
    raw = pb.raw.to_adata()
    x = raw.X.toarray() if sp.issparse(raw.X) else np.asarray(raw.X)
    counts = np.rint(np.expm1(x) * pb.obs["n_counts"].to_numpy()[:, None] / 1e4).astype(np.float32)
    rng = np.random.default_rng(seed)
    labels = pb.obs["bulk_labels"].astype(str).to_numpy()
    is_query = np.zeros(len(labels), dtype=bool)
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        rng.shuffle(idx)
        is_query[idx[: len(idx) // 2]] = True
    rates = np.clip(0.5 * np.exp(rng.normal(0, 0.3, size=counts.shape[1])), 0.02, 1.0)
    thinned = rng.binomial(counts[is_query].astype(np.int64), rates[None, :]).astype(np.float32)
    var = pd.DataFrame(index=raw.var_names.astype(str))
    obs = pd.DataFrame({"cell_type": pd.Categorical(labels)}, index=pb.obs_names.astype(str))
    ref = anndata.AnnData(sp.csr_matrix(counts[~is_query]), obs=obs[~is_query].copy(), var=var.copy())
    qry = anndata.AnnData(sp.csr_matrix(thinned), obs=obs[is_query].copy(), var=var.copy())
    return _write(ref, qry, out, "pbmc")


def synthetic_iid_split(seed: int, out: Path) -> tuple[Path, Path, str]:
    """scvi.data.synthetic_iid: batch_0 = reference, batch_1 = query (its labels are random)."""
    import pandas as pd
    import scipy.sparse as sp
    import scvi

    scvi.settings.seed = seed
    data = scvi.data.synthetic_iid(batch_size=500, n_genes=300, n_batches=2, n_labels=3)
    data.X = sp.csr_matrix(data.X.astype(np.float32))
    data.obs = pd.DataFrame({"cell_type": data.obs["labels"].astype(str).astype("category")},
                            index=data.obs_names.astype(str))
    keep = ["cell_type"]
    is_query = np.arange(data.n_obs) >= 500
    ref = data[~is_query].copy()
    qry = data[is_query].copy()
    for d in (ref, qry):
        d.obsm.clear()
        d.uns.clear()
        d.obs = d.obs[keep]
    return _write(ref, qry, out, "synthetic_iid")


def _write(ref, qry, out: Path, name: str) -> tuple[Path, Path, str]:
    out.mkdir(parents=True, exist_ok=True)
    r, q = out / f"{name}_ref.h5ad", out / f"{name}_query.h5ad"
    ref.write_h5ad(r)
    qry.write_h5ad(q)
    return r, q, "cell_type"


def _pbmc_counts():
    import scanpy as sc
    import scipy.sparse as sp

    pb = sc.datasets.pbmc68k_reduced()
    raw = pb.raw.to_adata()
    x = raw.X.toarray() if sp.issparse(raw.X) else np.asarray(raw.X)
    counts = np.rint(np.expm1(x) * pb.obs["n_counts"].to_numpy()[:, None] / 1e4).astype(np.float32)
    return counts, pb.obs["bulk_labels"].astype(str).to_numpy(), raw.var_names.astype(str), pb.obs_names.astype(str)


def _pbmc_write(data: tuple, is_query, query_counts, rng, out: Path, *, name: str,
                drop_from_reference: str | None = None):
    """Reference / query files with partly disjoint genes (5 % of the genes dropped from each side)."""
    import anndata
    import pandas as pd
    import scipy.sparse as sp

    counts, labels, genes, cells = data
    n_genes = len(genes)
    ref_genes = np.sort(rng.permutation(n_genes)[n_genes // 20:])
    query_genes = np.sort(rng.permutation(n_genes)[n_genes // 20:])
    obs = pd.DataFrame({"cell_type": pd.Categorical(labels)}, index=cells)
    keep_ref = ~is_query if drop_from_reference is None else ~is_query & (labels != drop_from_reference)
    ref = anndata.AnnData(sp.csr_matrix(counts[keep_ref][:, ref_genes]), obs=obs[keep_ref].copy(),
                          var=pd.DataFrame(index=genes[ref_genes]))
    qry = anndata.AnnData(sp.csr_matrix(query_counts[:, query_genes]), obs=obs[is_query].copy(),
                          var=pd.DataFrame(index=genes[query_genes]))
    return _write(ref, qry, out, name)


def _stratified_half(labels, rng) -> np.ndarray:
    is_query = np.zeros(len(labels), dtype=bool)
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        rng.shuffle(idx)
        is_query[idx[: len(idx) // 2]] = True
    return is_query


def _thin(counts, rng):
    rates = np.clip(0.5 * np.exp(rng.normal(0, 0.3, size=counts.shape[1])), 0.02, 1.0)
    return rng.binomial(counts.astype(np.int64), rates[None, :]).astype(np.float32)


def pbmc_thinned_split(seed: int, out: Path, novel: str | None = None) -> tuple[Path, Path, str]:
    """pbmc68k_reduced: stratified 50/50, the query binomially thinned per gene (a second
    "technology"), 5 % of the genes dropped from each side; ``novel``: that type left out of the
    reference (it exists only in the query)."""
    data = _pbmc_counts()
    rng = np.random.default_rng(seed)
    is_query = _stratified_half(data[1], rng)
    thinned = _thin(data[0][is_query], rng)
    return _pbmc_write(data, is_query, thinned, rng, out, name="pbmc_thinned" if novel is None else "pbmc_novel",
                       drop_from_reference=novel)


def pbmc_depth_split(seed: int, out: Path) -> tuple[Path, Path, str]:
    """pbmc68k_reduced split by sequencing depth (a real technical difference, nothing simulated):
    within each type the deeper half of the cells is the reference, the shallower half the query
    (ties broken by the seed); 5 % of the genes dropped from each side."""
    data = _pbmc_counts()
    counts, labels = data[0], data[1]
    rng = np.random.default_rng(seed)
    depth = counts.sum(axis=1) + rng.random(len(labels)) * 1e-3
    is_query = np.zeros(len(labels), dtype=bool)
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        order = idx[np.argsort(depth[idx])]
        is_query[order[: len(idx) // 2]] = True
    return _pbmc_write(data, is_query, counts[is_query], rng, out, name="pbmc_depth")


#: The type held out of the reference in pbmc_novel (a distinct lineage: B cells).
PBMC_NOVEL_TYPE = "CD19+ B"


HSMM_DIR = ROOT / "bench" / "work"  # bench/data/export_hsmm.sh writes hsmm_counts.tsv.gz, hsmm_cells.tsv here
HSMM_HVG = 2000


def _hsmm_counts():
    """The exported HSMM cells (bench/data/export_hsmm.sh): count-like values, cells × genes, and
    the capture time as the label ("0h" … "72h")."""
    import pandas as pd

    path = HSMM_DIR / "hsmm_counts.tsv.gz"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run bash bench/data/export_hsmm.sh (needs r-bioc-hsmmsinglecell)")
    table = pd.read_csv(path, sep="\t", index_col=0)
    cells = pd.read_csv(HSMM_DIR / "hsmm_cells.tsv", sep="\t", index_col=0).loc[table.columns]
    labels = np.asarray([f"{h}h" for h in cells["hours"]], dtype=object).astype(str)
    return (table.to_numpy(dtype=np.float32).T, labels, table.index.to_numpy().astype(str),
            table.columns.to_numpy().astype(str))


def hsmm_thinned_split(seed: int, out: Path) -> tuple[Path, Path, str]:
    """HSMM (real Smart-seq myoblasts, labels = capture time): stratified 50/50, the query
    binomially thinned per gene as in pbmc_thinned, the 2,000 most variable genes of the
    reference half (log1p of counts per 10⁴), 5 % of those dropped from each side."""
    counts, labels, genes, cells = _hsmm_counts()
    rng = np.random.default_rng(seed)
    is_query = _stratified_half(labels, rng)
    ref = counts[~is_query]
    norm = np.log1p(ref / np.maximum(ref.sum(axis=1, keepdims=True), 1) * 1e4)
    keep = np.sort(np.argsort(-norm.var(axis=0), kind="stable")[:HSMM_HVG])
    data = (counts[:, keep], labels, genes[keep], cells)
    thinned = _thin(data[0][is_query], rng)
    return _pbmc_write(data, is_query, thinned, rng, out, name="hsmm_thinned")


def synthetic_novel_split(seed: int, out: Path) -> tuple[Path, Path, str]:
    """labeltransfer.synthetic.novel_type_split: 4 reference types, the query has a fifth."""
    from labeltransfer.synthetic import novel_type_split

    ref, qry, _ = novel_type_split(1200, 800, 1000, seed=seed)
    return _write(ref, qry, out, "synthetic_novel")


# ---------------------------------------------------------------- methods
def ours(ref: Path, qry: Path, seed: int, out: Path, *, n_hvg: int, min_common: int, max_epochs: int,
         n_latent: int = 30, min_cells: int = 1, threshold: float = 0.5, extra: tuple[str, ...] = ()) -> dict:
    """This pipeline, as a user runs it (``label_transfer.py run`` in its own process, default
    threads and options); accuracy / macro-F1 of the argmax label (no abstention, as the peers)
    and at ``threshold``.

    ``min_cells=1`` keeps every reference type, as the peers are trained on every type (the
    pipeline's default of 10 would drop the split's 2-3 rare types and count their query cells wrong).
    """
    cmd = [PY, str(CLI), "run", "--reference", str(ref), "--query", str(qry), "--label-key", "cell_type",
           "--query-label-key", "cell_type", "--out-dir", str(out), "--n-hvg", str(n_hvg), "--seed", str(seed),
           "--device", "cpu", "--max-epochs", str(max_epochs), "--unknown-threshold", str(threshold),
           "--min-common-genes", str(min_common), "--n-latent", str(n_latent), "--min-cells-per-type",
           str(min_cells), "--quiet", "--ignore-memory-check", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"label_transfer.py run failed: {proc.stderr[-2000:]}")
    report = json.loads((out / "report.json").read_text())
    m = report["metrics"]
    return {"accuracy": m["argmax"]["accuracy"], "macro_f1": m["argmax"]["macro_f1"],
            "n_latent": n_latent, "min_cells_per_type": min_cells, "epochs": report["scvi"]["epochs_trained"],
            "latent_samples": report["parameters"]["latent_samples"], "features": report["xgboost"]["features"],
            "at_threshold": {"threshold": threshold, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                             "n_unknown": m["n_unknown"]}}


def _joint(ref: Path, qry: Path):
    import anndata

    a, b = anndata.read_h5ad(ref), anndata.read_h5ad(qry)
    joint = anndata.concat({"reference": a, "query": b}, label="dataset", join="inner", index_unique="-")
    return a, b, joint


def scanvi(ref: Path, qry: Path, seed: int, max_epochs: int) -> dict:
    import scvi

    from labeltransfer.evaluate import evaluate

    scvi.settings.seed = seed
    a, b, joint = _joint(ref, qry)
    truth = b.obs["cell_type"].astype(str).to_numpy()
    joint.obs["label"] = np.concatenate([a.obs["cell_type"].astype(str), ["__unlabeled__"] * b.n_obs])
    scvi.model.SCVI.setup_anndata(joint, batch_key="dataset", labels_key="label")
    model = scvi.model.SCVI(joint, n_latent=30)
    model.train(max_epochs=max_epochs, early_stopping=True, early_stopping_patience=10, enable_progress_bar=False,
                accelerator="cpu")
    sv = scvi.model.SCANVI.from_scvi_model(model, unlabeled_category="__unlabeled__", labels_key="label")
    sv.train(max_epochs=20, n_samples_per_label=100, enable_progress_bar=False, accelerator="cpu")
    pred = sv.predict(joint[joint.obs["dataset"] == "query"])
    m = evaluate(truth, np.asarray(pred, dtype=str))
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}


def celltypist_peer(ref: Path, qry: Path, seed: int) -> dict:
    import anndata
    import celltypist
    import scanpy as sc

    from labeltransfer.evaluate import evaluate

    a, b = anndata.read_h5ad(ref), anndata.read_h5ad(qry)
    common = a.var_names.intersection(b.var_names)
    a, b = a[:, common].copy(), b[:, common].copy()
    for d in (a, b):
        sc.pp.normalize_total(d, target_sum=1e4)
        sc.pp.log1p(d)
    np.random.seed(seed)
    model = celltypist.train(a, labels="cell_type", use_SGD=True, check_expression=False, n_jobs=1)
    pred = celltypist.annotate(b, model=model, majority_voting=False).predicted_labels["predicted_labels"]
    m = evaluate(b.obs["cell_type"].astype(str).to_numpy(), pred.astype(str).to_numpy())
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}


SPLITS = {"pbmc68k_reduced": (pbmc_split, 0, 200), "synthetic_iid": (synthetic_iid_split, 0, 100)}
METHODS = ("scvi_xgboost", "scanvi", "celltypist")
ROWS = RESULTS.with_name("label_transfer_accuracy_rows.jsonl")


def accuracy_rows(datasets: list[str], seeds: list[int], max_epochs: int, only_ours: bool = False,
                  n_latent: int = 30) -> None:
    """Run every method on every (data set, seed); append one JSON line per pair to ROWS.

    ``only_ours`` reruns this pipeline only and copies the peers' figures from the latest earlier
    row of the same (data set, seed): the split is a pure function of the seed, so they are unchanged.
    """
    earlier = [json.loads(line) for line in ROWS.read_text().splitlines() if line.strip()] if ROWS.exists() else []
    # every method runs with torch's default threads (one per core), as this pipeline's CLI does:
    # scVI/SCANVI results depend on the thread count (float summation order), so it is the same for all
    for name in datasets:
        make, n_hvg, min_common = SPLITS[name]
        for seed in seeds:
            with tempfile.TemporaryDirectory() as tmp:
                ref, qry, _ = make(seed, Path(tmp))
                row = {"dataset": name, "seed": seed, "max_epochs": max_epochs}
                methods = [("scvi_xgboost", partial(ours, ref, qry, seed, Path(tmp) / "out", n_hvg=n_hvg,
                                                     min_common=min_common, max_epochs=max_epochs,
                                                     n_latent=n_latent))]
                if only_ours:
                    prev = [r for r in earlier if r["dataset"] == name and r["seed"] == seed]
                    row.update({m: prev[-1][m] for m in METHODS[1:]})
                    row["peers_from_earlier_run"] = True
                else:
                    methods += [("scanvi", partial(scanvi, ref, qry, seed, max_epochs)),
                                ("celltypist", partial(celltypist_peer, ref, qry, seed))]
                for method, fn in methods:
                    t0 = time.monotonic()
                    row[method] = fn()
                    row[method]["wall_s"] = round(time.monotonic() - t0, 1)
                    print(name, seed, method, row[method], file=sys.stderr, flush=True)
            ROWS.parent.mkdir(parents=True, exist_ok=True)
            with ROWS.open("a") as fh:
                fh.write(json.dumps(row) + "\n")


#: The seeds the issue's target is judged on; more seeds are summarised separately.
TARGET_SEEDS = (0, 1, 2)


def summarize_accuracy() -> dict:
    """Per data set: the rows of every seed, the mean accuracy / macro-F1 of each method over
    TARGET_SEEDS (``mean``) and over every seed run (``mean_all``, with the standard error)."""
    rows = [json.loads(line) for line in ROWS.read_text().splitlines() if line.strip()]
    latest = {(r["dataset"], r["seed"]): r for r in rows}  # the last row of each (data set, seed)
    out: dict = {}
    for name in SPLITS:
        mine = sorted((r for r in latest.values() if r["dataset"] == name), key=lambda r: r["seed"])
        target = [r for r in mine if r["seed"] in TARGET_SEEDS]
        if not target:
            continue
        mean = {m: {k: float(np.mean([r[m][k] for r in target])) for k in ("accuracy", "macro_f1")} for m in METHODS}
        mean_all = {m: {k: float(np.mean([r[m][k] for r in mine])) for k in ("accuracy", "macro_f1")} for m in METHODS}
        for m in METHODS:
            for k in ("accuracy", "macro_f1"):
                values = [r[m][k] for r in mine]
                mean_all[m][f"{k}_se"] = float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None
        out[name] = {"per_seed": mine, "mean": mean, "seeds": [r["seed"] for r in target],
                     "mean_all": mean_all, "seeds_all": [r["seed"] for r in mine]}
    return out


#: Variants of this pipeline compared by ``ablation`` (name -> extra CLI flags).
ABLATION = {
    "default": (),
    "no_posterior_samples": ("--latent-samples", "0"),
    "latent_only_no_samples": ("--features", "latent", "--latent-samples", "0"),
}
ABLATION_RESULTS = RESULTS.with_name("label_transfer_ablation.json")


def ablation(seeds: list[int], max_epochs: int, variants: list[str]) -> dict:
    """This pipeline's classifier choices on pbmc68k_reduced: accuracy / macro-F1 per variant and seed."""
    results = json.loads(ABLATION_RESULTS.read_text()) if ABLATION_RESULTS.exists() else {}
    make, n_hvg, min_common = SPLITS["pbmc68k_reduced"]
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            ref, qry, _ = make(seed, Path(tmp))
            for name in variants:
                row = ours(ref, qry, seed, Path(tmp) / name, n_hvg=n_hvg, min_common=min_common, max_epochs=max_epochs,
                           extra=ABLATION[name])
                results.setdefault(name, {})[str(seed)] = {k: row[k] for k in ("accuracy", "macro_f1")}
                print("ablation", name, seed, results[name][str(seed)], file=sys.stderr, flush=True)
        ABLATION_RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    for name, per_seed in results.items():
        values = np.array([[v["accuracy"], v["macro_f1"]] for v in per_seed.values()])
        print(f"{name}: {len(values)} seeds, accuracy {values[:, 0].mean():.3f}, macro-F1 {values[:, 1].mean():.3f}")
    return results


# ---------------------------------------------------------------- issue 13: methods x real splits
COMPARE_SPLITS = {  # name -> (maker, n_hvg, min_common_genes)
    "pbmc_thinned": (pbmc_thinned_split, 0, 200),
    "pbmc_depth": (pbmc_depth_split, 0, 200),
    "pbmc_novel": (partial(pbmc_thinned_split, novel=PBMC_NOVEL_TYPE), 0, 200),
    "synthetic_novel": (synthetic_novel_split, 0, 200),
    "hsmm_thinned": (hsmm_thinned_split, 0, 200),
}
#: dcoex before issue 13 (scVI latent, unknown = probability < 0.5) and now (the defaults).
DCOEX_VARIANTS = {"dcoex_old": ("--method", "scvi-xgb", "--unknown-rule", "probability"), "dcoex_new": ()}
#: compare-paired only: XGBoost + knn on the SCANVI latent after the longer SCANVI training
#: (scanvi_long); dcoex_new's probabilities averaged with SCANVI's (short / long) soft predictions.
PAIRED_EXTRA = ("dcoex_long", "dcoex_ens", "dcoex_ens_long")
#: The peers: SCANVI's own classifier after scvi-tools' SCANVI epochs, and after up to the scVI budget.
PEERS = ("scanvi", "scanvi_long")
COMPARE_ROWS = RESULTS.with_name("label_transfer_compare_rows.jsonl")
COMPARE_RESULTS = RESULTS.with_name("label_transfer_compare.json")
RULES = ("knn", "distance", "probability", "both", "none")
#: Latents of compare-paired, kept for novelty-rules (not results: large, regenerable).
LATENT_CACHE = Path(os.environ.get("LT_LATENT_CACHE", "/tmp/lt_latent_cache"))


def dcoex_run(ref: Path, qry: Path, seed: int, out: Path, *, n_hvg: int, min_common: int, max_epochs: int,
              extra: tuple[str, ...]) -> dict:
    """The CLI in its own process; metrics of its output, of the argmax, and of every unknown rule
    recomputed from predictions.tsv (probability, novelty) and probabilities.tsv.gz."""
    import pandas as pd

    from labeltransfer.evaluate import evaluate
    from labeltransfer.novelty import unknown_mask

    cmd = [PY, str(CLI), "run", "--reference", str(ref), "--query", str(qry), "--label-key", "cell_type",
           "--query-label-key", "cell_type", "--out-dir", str(out), "--n-hvg", str(n_hvg), "--seed", str(seed),
           "--device", "cpu", "--max-epochs", str(max_epochs), "--min-common-genes", str(min_common),
           "--min-cells-per-type", "1", "--quiet", "--ignore-memory-check", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"label_transfer.py run failed: {proc.stderr[-2000:]}")
    report = json.loads((out / "report.json").read_text())
    m = report["metrics"]
    pred = pd.read_csv(out / "predictions.tsv", sep="\t")
    prob = pd.read_csv(out / "probabilities.tsv.gz", sep="\t").drop(columns="cell")
    classes = list(prob.columns)
    argmax = np.asarray(classes, dtype=object)[prob.to_numpy().argmax(axis=1)]
    truth = pred["true_label"].astype(str).to_numpy()
    rules = {}
    for rule in RULES:
        unknown = unknown_mask(rule, max_prob=pred["probability"].to_numpy(), novelty=pred["novelty"].to_numpy(),
                               threshold=report["parameters"]["unknown_threshold"])
        r = evaluate(truth, np.where(unknown, "unknown", argmax), known=classes)
        rules[rule] = {k: r[k] for k in ("accuracy", "macro_f1", "known_macro_f1", "unknown_recall",
                                         "known_called_unknown", "n_unknown")}
    keys = ("accuracy", "macro_f1", "known_macro_f1", "unknown_recall", "known_called_unknown", "n_unknown")
    return {"output": {k: m.get(k) for k in keys}, "argmax": dict(m["argmax"], per_class_f1=None),
            "rules": rules, "method": report["method"], "unknown_rule": report["unknown"]["rule"],
            "epochs": report["scvi"]["epochs_trained"], "max_epochs": report["scvi"]["max_epochs"],
            "scanvi_epochs": report["scvi"]["scanvi_epochs"], "seconds_per_epoch": report["scvi"]["seconds_per_epoch"]}


def scanvi_peer(ref: Path, qry: Path, seed: int, max_epochs: int) -> dict:
    """SCANVI as scvi-tools documents it: scVI on reference + query (query unlabelled, early
    stopping, ``max_epochs``), SCANVI.from_scvi_model, scvi-tools' SCANVI epochs for that budget."""
    import scvi

    from labeltransfer.evaluate import evaluate
    from labeltransfer.latent import scanvi_epochs

    scvi.settings.seed = seed
    a, b, joint = _joint(ref, qry)
    truth = b.obs["cell_type"].astype(str).to_numpy()
    joint.obs["label"] = np.concatenate([a.obs["cell_type"].astype(str), ["__unlabeled__"] * b.n_obs])
    scvi.model.SCVI.setup_anndata(joint, batch_key="dataset", labels_key="label")
    model = scvi.model.SCVI(joint, n_latent=30)
    model.train(max_epochs=max_epochs, early_stopping=True, early_stopping_patience=10, enable_progress_bar=False,
                accelerator="cpu")
    sv = scvi.model.SCANVI.from_scvi_model(model, unlabeled_category="__unlabeled__", labels_key="label")
    sv.train(max_epochs=scanvi_epochs(max_epochs), n_samples_per_label=100, enable_progress_bar=False,
             accelerator="cpu")
    pred = np.asarray(sv.predict(joint[joint.obs["dataset"] == "query"]), dtype=str)
    m = evaluate(truth, pred, known=sorted(set(a.obs["cell_type"].astype(str))))
    out = {k: m[k] for k in ("accuracy", "macro_f1", "known_macro_f1")}
    return {"output": out, "argmax": out}


def compare_rows(splits: list[str], seeds: list[int], max_epochs: int) -> None:
    """Every method on every (split, seed), the same epoch budget and torch threads; one JSON line each."""
    for name in splits:
        make, n_hvg, min_common = COMPARE_SPLITS[name]
        for seed in seeds:
            with tempfile.TemporaryDirectory() as tmp:
                ref, qry, _ = make(seed, Path(tmp))
                row = {"split": name, "seed": seed, "max_epochs": max_epochs}
                runs = [(v, partial(dcoex_run, ref, qry, seed, Path(tmp) / v, n_hvg=n_hvg, min_common=min_common,
                                    max_epochs=max_epochs, extra=flags)) for v, flags in DCOEX_VARIANTS.items()]
                runs.append(("scanvi", partial(scanvi_peer, ref, qry, seed, max_epochs)))
                for method, fn in runs:
                    t0 = time.monotonic()
                    row[method] = fn()
                    row[method]["wall_s"] = round(time.monotonic() - t0, 1)
                    print(name, seed, method, row[method]["argmax"], row[method]["output"], file=sys.stderr, flush=True)
            with COMPARE_ROWS.open("a") as fh:
                fh.write(json.dumps(row) + "\n")


def paired_row(ref: Path, qry: Path, seed: int, max_epochs: int, folder: Path, *, cache: Path | None = None) -> dict:
    """Every method from ONE scVI pre-training (this package's own functions, in this process):
    the scVI model (labels registered, query unlabelled) then SCANVI, as ``run --method
    scanvi-xgb`` trains them. dcoex_old = XGBoost on the scVI latent, unknown = probability < 0.5;
    dcoex_new = XGBoost on the SCANVI latent, unknown = the knn rule in that latent; scanvi =
    SCANVI's own classifier. Posterior mean only (--latent-samples 0) for the dcoex rows (the
    draws would come from different models). Same epochs, threads and data for all three.
    Sensitivity to SCANVI's short training (scvi-tools gives a SCANVI continued from scVI
    scanvi_epochs(E) epochs): the same SCANVI trained up to E more epochs (early stopping), its
    own classifier (scanvi_long) and XGBoost + knn on its latent (dcoex_long)."""
    import scvi

    from labeltransfer.evaluate import evaluate
    from labeltransfer.latent import UNLABELLED, train_latent

    a, b, joint = _joint(ref, qry)
    n_ref = a.n_obs
    ref_labels = a.obs["cell_type"].astype(str).to_numpy()
    truth = b.obs["cell_type"].astype(str).to_numpy()
    classes = sorted(set(ref_labels))
    joint.obs = joint.obs[["dataset"]].copy()
    labels = np.concatenate([ref_labels, np.full(b.n_obs, UNLABELLED)]).astype(str)
    t0 = time.monotonic()
    trained = train_latent(joint, folder / "model", n_latent=30, max_epochs=max_epochs, seed=seed, model="scanvi",
                           labels=labels)
    train_s = time.monotonic() - t0
    row = {"epochs": trained.epochs_trained, "scanvi_epochs": trained.scanvi_epochs,
           "seconds_per_epoch": round(trained.seconds_per_epoch, 3), "train_s": round(train_s, 1)}
    if cache is not None:  # the latents, for the unknown-rule analysis (novelty-rules)
        np.savez(cache, scvi=trained.scvi_latent, scanvi=trained.latent, ref_labels=ref_labels, truth=truth)
    keys = ("accuracy", "macro_f1", "known_macro_f1", "unknown_recall", "known_called_unknown", "n_unknown")
    proba_new = {}
    for name, latent, rule in (("dcoex_old", trained.scvi_latent, "probability"),
                               ("dcoex_new", trained.latent, "knn")):
        row[name] = _xgboost_entry(latent, n_ref, ref_labels, truth, classes, rule=rule, seed=seed, keys=keys,
                                   keep=proba_new if name == "dcoex_new" else None)
    joint.obs["_label_transfer_label"] = labels
    model = scvi.model.SCANVI.load(str(folder / "model"), adata=joint)
    pred = np.asarray(model.predict(joint[n_ref:]), dtype=str)
    m = evaluate(truth, pred, known=classes)
    row["scanvi"] = {"argmax": {k: m[k] for k in keys}, "output": {k: m[k] for k in keys}}
    row["dcoex_ens"] = _ensemble_entry(proba_new, model.predict(joint[n_ref:], soft=True), truth, classes, keys=keys)
    # sensitivity: SCANVI's classifier given the scVI budget too (up to max_epochs more SCANVI
    # epochs, early stopping), where scvi-tools' rule gives it only scanvi_epochs(max_epochs)
    model.train(max_epochs=max_epochs, n_samples_per_label=100, early_stopping=True, early_stopping_patience=10,
                enable_progress_bar=False, accelerator="cpu")
    pred = np.asarray(model.predict(joint[n_ref:]), dtype=str)
    m = evaluate(truth, pred, known=classes)
    row["scanvi_long"] = {"argmax": {k: m[k] for k in keys}, "output": {k: m[k] for k in keys},
                          "scanvi_epochs": trained.scanvi_epochs + len(model.history.get("elbo_train", []))}
    # and this pipeline's classifier on that longer-trained SCANVI latent
    latent = np.asarray(model.get_latent_representation(joint), dtype=np.float32)
    row["dcoex_long"] = _xgboost_entry(latent, n_ref, ref_labels, truth, classes, rule="knn", seed=seed, keys=keys)
    row["dcoex_ens_long"] = _ensemble_entry(proba_new, model.predict(joint[n_ref:], soft=True), truth, classes,
                                            keys=keys)
    return row


def _ensemble_entry(kept: dict, soft, truth: np.ndarray, classes: list[str], *, keys: tuple[str, ...]) -> dict:
    """The mean of XGBoost's probabilities (``kept`` by _xgboost_entry) and SCANVI's soft
    prediction (a DataFrame, one column per reference type); unknown = the kept knn novelty > 1."""
    from labeltransfer.evaluate import evaluate

    proba = 0.5 * (kept["proba"] + soft[list(kept["classes"])].to_numpy(dtype=np.float64))
    argmax = np.asarray(kept["classes"], dtype=object)[proba.argmax(axis=1)]
    entry = {"argmax": {k: v for k, v in evaluate(truth, argmax, known=classes).items() if k in keys}}
    m = evaluate(truth, np.where(kept["knn"] > 1, "unknown", argmax), known=classes)
    entry["output"] = {k: m[k] for k in keys}
    return entry


def _xgboost_entry(latent: np.ndarray, n_ref: int, ref_labels: np.ndarray, truth: np.ndarray, classes: list[str], *,
                   rule: str, seed: int, keys: tuple[str, ...], keep: dict | None = None) -> dict:
    """XGBoost (this package's classifier) on ``latent``'s reference rows; the argmax's metrics and
    every unknown rule's (distances in the same latent); ``output`` = ``rule``'s."""
    from labeltransfer.classify import fit_classifier, predict
    from labeltransfer.evaluate import evaluate
    from labeltransfer.novelty import novelty_scores, unknown_mask

    clf = fit_classifier(latent[:n_ref], ref_labels, seed=seed)
    _, max_prob, _, proba = predict(clf, latent[n_ref:], 0.0)
    argmax = np.asarray(clf.classes, dtype=object)[proba.argmax(axis=1)]
    entry = {"argmax": {k: v for k, v in evaluate(truth, argmax, known=classes).items() if k in keys}, "rules": {}}
    novelty = {r: novelty_scores(r, latent[:n_ref], ref_labels, latent[n_ref:], seed=seed) for r in ("knn", "distance")}
    for r in RULES:
        unknown = unknown_mask(r, max_prob=max_prob, novelty=novelty["distance" if r == "distance" else "knn"],
                               threshold=0.5)
        m = evaluate(truth, np.where(unknown, "unknown", argmax), known=classes)
        entry["rules"][r] = {k: m[k] for k in keys}
    entry["output"] = entry["rules"][rule]
    if keep is not None:
        keep.update(proba=proba, classes=list(clf.classes), knn=novelty["knn"])
    return entry


def compare_paired(splits: list[str], seeds: list[int], max_epochs: int) -> None:
    """paired_row on every (split, seed); one JSON line each in COMPARE_ROWS."""
    LATENT_CACHE.mkdir(parents=True, exist_ok=True)
    for name in splits:
        make = COMPARE_SPLITS[name][0]
        for seed in seeds:
            with tempfile.TemporaryDirectory() as tmp:
                ref, qry, _ = make(seed, Path(tmp))
                t0 = time.monotonic()
                row = {"split": name, "seed": seed, "max_epochs": max_epochs, "design": "paired",
                       **paired_row(ref, qry, seed, max_epochs, Path(tmp),
                                    cache=LATENT_CACHE / f"{name}_{seed}_{max_epochs}.npz")}
                row["wall_s"] = round(time.monotonic() - t0, 1)
            print(name, seed, {m: (row[m]["argmax"]["macro_f1"], row[m]["output"]["macro_f1"])
                               for m in ("dcoex_old", "dcoex_new", *PAIRED_EXTRA, *PEERS)}, file=sys.stderr, flush=True)
            with COMPARE_ROWS.open("a") as fh:
                fh.write(json.dumps(row) + "\n")


def _mean_sd(values: list[float]) -> list[float] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return [round(float(np.mean(values)), 4), round(float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, 4)]


def summarize_compare() -> dict:
    """Mean ± sd over seeds (the last row of each split and seed) per split, method and metric."""
    rows = [json.loads(line) for line in COMPARE_ROWS.read_text().splitlines() if line.strip()]
    latest = {(r["split"], r["seed"]): r for r in rows}
    out: dict = {}
    for name in COMPARE_SPLITS:
        mine = sorted((r for r in latest.values() if r["split"] == name), key=lambda r: r["seed"])
        if not mine:
            continue
        entry = {"seeds": [r["seed"] for r in mine], "max_epochs": sorted({r["max_epochs"] for r in mine})}
        for method in (m for m in (*DCOEX_VARIANTS, *PAIRED_EXTRA, *PEERS) if all(m in r for r in mine)):
            entry[method] = {
                part: {k: _mean_sd([r[method][part].get(k) for r in mine])
                       for k in ("accuracy", "macro_f1", "known_macro_f1", "unknown_recall", "known_called_unknown")
                       if k in mine[0][method][part]}
                for part in ("argmax", "output")
            }
            if "rules" in mine[0][method]:
                entry[method]["rules"] = {
                    rule: {k: _mean_sd([r[method]["rules"][rule][k] for r in mine])
                           for k in ("accuracy", "macro_f1", "known_macro_f1", "unknown_recall", "known_called_unknown")}
                    for rule in RULES if all(rule in r[method]["rules"] for r in mine)}
                for key in ("epochs", "seconds_per_epoch"):
                    entry[method][key] = _mean_sd([r[method].get(key, r.get(key)) for r in mine])
        out[name] = entry
    return out


def compare_tables(summary: dict) -> str:
    """Markdown: per split, every method's argmax and output accuracy / macro-F1 (mean ± sd)."""
    def f(x):
        return "–" if x is None else f"{x[0]:.3f} ± {x[1]:.3f}"

    lines = []
    for name, entry in summary.items():
        lines += [f"**{name}** (seeds {entry['seeds']}, --max-epochs {entry['max_epochs']})", "",
                  "| method | argmax accuracy | argmax macro-F1 | output accuracy | output macro-F1 | "
                  "known-type macro-F1 (output) | unknown recall |", "|---|---|---|---|---|---|---|"]
        for method in (m for m in (*DCOEX_VARIANTS, *PAIRED_EXTRA, *PEERS) if m in entry):
            a, o = entry[method]["argmax"], entry[method]["output"]
            lines.append(f"| {method} | {f(a['accuracy'])} | {f(a['macro_f1'])} | {f(o['accuracy'])} | "
                         f"{f(o['macro_f1'])} | {f(o.get('known_macro_f1'))} | {f(o.get('unknown_recall'))} |")
        rules = entry["dcoex_new"].get("rules")
        if rules:
            lines += ["", "| dcoex_new, rule | accuracy | macro-F1 | known-type macro-F1 | unknown recall | "
                      "known cells called unknown |", "|---|---|---|---|---|---|"]
            for rule, r in rules.items():
                lines.append(f"| {rule} | {f(r['accuracy'])} | {f(r['macro_f1'])} | {f(r['known_macro_f1'])} | "
                             f"{f(r['unknown_recall'])} | {f(r['known_called_unknown'])} |")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- issue 13: the unknown rule
UNKNOWN_RESULTS = RESULTS.with_name("label_transfer_unknown_rules.json")
#: Candidate rules: (distance, latent, k, quantile); distance knn / centroid (the distance rule).
UNKNOWN_CANDIDATES = [("centroid", lat, None, q) for lat in ("scvi", "scanvi") for q in (0.99, 0.95)] + [
    ("knn", lat, k, q) for lat in ("scvi", "scanvi") for k in (5, 15, 30) for q in (0.99, 0.975, 0.95)]


def unknown_rules(max_epochs: int) -> dict:
    """Every candidate unknown rule on the latents compare-paired kept (LATENT_CACHE): XGBoost on
    the SCANVI latent (the default classifier, posterior mean), then each rule's unknown calls;
    per split, mean ± sd over seeds of unknown recall, known-type macro-F1 minus the argmax's and
    the share of known-type cells called unknown. Also probability < 0.5 and knn-or-probability."""
    from labeltransfer.classify import fit_classifier, predict
    from labeltransfer.evaluate import evaluate
    from labeltransfer.novelty import fit_reference_neighbours, fit_type_distance

    rows = []
    for path in sorted(LATENT_CACHE.glob(f"*_{max_epochs}.npz")):
        split, seed = path.stem.rsplit("_", 2)[:2]
        z = np.load(path, allow_pickle=True)
        ref_labels, truth = z["ref_labels"].astype(str), z["truth"].astype(str)
        n_ref, classes = len(ref_labels), sorted(set(ref_labels))
        clf = fit_classifier(z["scanvi"][:n_ref], ref_labels, seed=int(seed))
        _, max_prob, _, proba = predict(clf, z["scanvi"][n_ref:], 0.0)
        argmax = np.asarray(clf.classes, dtype=object)[proba.argmax(axis=1)].astype(str)
        base = evaluate(truth, argmax, known=classes)["known_macro_f1"]
        scores = {"probability_0.5": 0.5 / np.maximum(max_prob, 1e-12)}
        for kind, lat, k, q in UNKNOWN_CANDIDATES:
            x = z[lat]
            if kind == "centroid":
                scores[f"centroid_{lat}_q{q}"] = fit_type_distance(x[:n_ref], ref_labels, q, seed=int(seed)).novelty(x[n_ref:])
            else:
                scores[f"knn_{lat}_k{k}_q{q}"] = fit_reference_neighbours(x[:n_ref], ref_labels, q, k).novelty(x[n_ref:])
        for name in [n for n in scores if n.startswith("knn_scvi")]:
            scores[f"{name}_or_probability"] = np.maximum(scores[name], scores["probability_0.5"])
        row = {"split": split, "seed": int(seed), "argmax_known_macro_f1": base, "rules": {}}
        for name, score in scores.items():
            m = evaluate(truth, np.where(score > 1, "unknown", argmax), known=classes)
            row["rules"][name] = {"unknown_recall": m["unknown_recall"], "known_f1_minus_argmax": m["known_macro_f1"] - base,
                                  "known_called_unknown": m["known_called_unknown"]}
        rows.append(row)
        print(split, seed, file=sys.stderr, flush=True)
    out: dict = {"max_epochs": max_epochs, "splits": {}}
    for split in sorted({r["split"] for r in rows}):
        mine = [r for r in rows if r["split"] == split]
        out["splits"][split] = {"seeds": [r["seed"] for r in mine], "rules": {
            name: {key: _mean_sd([r["rules"][name][key] for r in mine]) for key in mine[0]["rules"][name]}
            for name in mine[0]["rules"]}}
    out["machine"] = {"cpus": os.cpu_count(), "note": "2 cores shared with other agents (loaded)"}
    UNKNOWN_RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    return out


def unknown_tables(out: dict, names: list[str] | None = None) -> str:
    """Markdown: per split, each rule's unknown recall, known-type macro-F1 − argmax, known → unknown."""
    def f(x):
        return "–" if x is None else f"{x[0]:.3f} ± {x[1]:.3f}"

    lines = []
    for split, entry in out["splits"].items():
        lines += [f"**{split}** (seeds {entry['seeds']}, {out['max_epochs']} scVI epochs)", "",
                  "| rule | unknown recall | known-type macro-F1 − argmax | known cells called unknown |",
                  "|---|---|---|---|"]
        for name, r in entry["rules"].items():
            if names is None or name in names:
                lines.append(f"| {name} | {f(r['unknown_recall'])} | {f(r['known_f1_minus_argmax'])} | "
                             f"{f(r['known_called_unknown'])} |")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- issue 13: the seed's scale
LARGE_SHAPE = (50_000, 60_000, 30_000, 0.05)  # reference cells, query cells, genes, density
LARGE_RESULTS = RESULTS.with_name("label_transfer_large.json")


def large_files(folder: Path, shape: tuple = LARGE_SHAPE) -> tuple[Path, Path]:
    """Sparse counts of ``shape`` (labeltransfer.synthetic.sparse_counts), made once in ``folder``."""
    from labeltransfer.synthetic import sparse_counts

    n_ref, n_query, n_genes, density = shape
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "ref.h5ad", folder / "query.h5ad"
    for path, n, seed in ((paths[0], n_ref, 1), (paths[1], n_query, 2)):
        if not path.exists():
            sparse_counts(n, n_genes, density=density, seed=seed).write_h5ad(path)
    return paths


def large(folder: Path, max_epochs: int) -> dict:
    """diagnose's prediction, then the whole run (``max_epochs``, defaults otherwise) in its own
    process: measured peak RSS, per-step peaks and times, seconds per scVI epoch."""
    ref, qry = large_files(folder)
    wall, stdout = _peak_of([PY, str(CLI), "diagnose", "--reference", str(ref), "--query", str(qry),
                             "--device", "cpu", "--json"])
    diag = json.loads(stdout)
    out = folder / "out"
    start = time.monotonic()
    with (folder / "run.log").open("w") as log:  # per-step progress while it runs
        subprocess.run([PY, str(CLI), "run", "--reference", str(ref), "--query", str(qry), "--out-dir", str(out),
                        "--max-epochs", str(max_epochs), "--device", "cpu", "--query-label-key", "cell_type",
                        "--ignore-memory-check"], stdout=log, stderr=subprocess.STDOUT, check=True)
    wall = time.monotonic() - start
    report = json.loads((out / "report.json").read_text())
    measured = report["peak_rss_bytes"]
    row = {
        "shape": {"reference": diag["reference"]["n_obs"], "query": diag["query"]["n_obs"],
                  "genes": diag["reference"]["n_vars"], "nnz": diag["reference"]["nnz"] + diag["query"]["nnz"]},
        "diagnose_peak_bytes": diag["peak_bytes"], "diagnose_peak_step": diag["peak_step"],
        "measured_peak_bytes": measured, "estimate_over_measured": round(diag["peak_bytes"] / measured, 3),
        "steps": {k: {"measured_bytes": v["peak_rss_bytes"], "estimated_bytes": diag["steps"][k]["total_bytes"],
                      "wall_s": v["wall_s"]} for k, v in report["steps"].items()},
        "max_epochs": max_epochs, "scvi": report["scvi"], "method": report["method"],
        "ensemble": report.get("ensemble"),
        "run_wall_s": round(wall, 1), "accuracy": report["metrics"]["accuracy"],
        "machine": {"cpus": os.cpu_count(), "load_avg_after": " ".join(open("/proc/loadavg").read().split()[:3])},
    }
    LARGE_RESULTS.write_text(json.dumps(row, indent=1) + "\n")
    print(json.dumps(row, indent=1))
    return row


# ---------------------------------------------------------------- memory
SIZES = [  # reference cells, query cells, genes, mean count of a non-marker gene
    (2000, 1000, 1500, 0.15),
    (8000, 4000, 4000, 0.15),
    (20000, 10000, 6000, 0.15),
]


def _make_sparse(size: tuple, out: Path) -> tuple[Path, Path]:
    from labeltransfer.synthetic import synthetic_counts

    n_ref, n_query, n_genes, mean = size
    r, q = out / f"ref_{n_ref}_{n_genes}.h5ad", out / f"query_{n_query}_{n_genes}.h5ad"
    synthetic_counts(n_ref, n_genes, n_types=8, seed=1, mean_count=mean).write_h5ad(r)
    synthetic_counts(n_query, n_genes, n_types=8, seed=2, mean_count=mean, batch_shift=0.3).write_h5ad(q)
    return r, q


def _peak_of(cmd: list[str]) -> tuple[float, str]:
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {proc.stderr[-2000:]}")
    return time.monotonic() - start, proc.stdout


def measured_run(size: tuple, tmp: Path, max_epochs: int, what: str) -> tuple[dict, Path, Path]:
    """Make a sparse set of ``size`` in ``tmp``, run this pipeline's CLI on it in its own process;
    (memory_row of the run, reference path, query path)."""
    ref, qry = _make_sparse(size, tmp)
    out = tmp / f"out_{size[0]}_{size[2]}"
    wall, _ = _peak_of([PY, str(CLI), "run", "--reference", str(ref), "--query", str(qry),
                        "--out-dir", str(out), "--max-epochs", str(max_epochs), "--device", "cpu",
                        "--query-label-key", "cell_type", "--quiet", "--ignore-memory-check"])
    row = memory_row(json.loads((out / "report.json").read_text()), size, wall)
    print(what, row, file=sys.stderr, flush=True)
    return row, ref, qry


def naive_against(ref: Path, qry: Path, ours: dict, max_epochs: int, stop_after_setup: bool) -> dict:
    """The naive run on the same files (its own process), with ours / naive."""
    argv = [PY, __file__, "naive", "--reference", str(ref), "--query", str(qry), "--max-epochs", str(max_epochs)]
    wall, stdout = _peak_of(argv + (["--stop-after-setup"] if stop_after_setup else []))
    naive = json.loads(stdout.strip().splitlines()[-1])
    naive["wall_s"] = round(wall, 1)
    naive["ours_peak_bytes"] = ours["measured_peak_bytes"]
    naive["ours_over_naive"] = round(ours["measured_peak_bytes"] / naive["peak_rss_bytes"], 3)
    print("naive", naive, file=sys.stderr, flush=True)
    return naive


def memory(max_epochs: int = 5) -> dict:
    """Estimator vs measured on SIZES (the sizes its constants were fitted on) and a naive full run."""
    with tempfile.TemporaryDirectory() as tmp:
        runs = [measured_run(size, Path(tmp), max_epochs, "memory") for size in SIZES]
        rows = [row for row, _, _ in runs]
        naive = naive_against(runs[-1][1], runs[-1][2], rows[-1], max_epochs, stop_after_setup=False)
    return {"sizes": rows, "naive": naive, "max_epochs": max_epochs}


def memory_heldout(sizes: list[tuple], max_epochs: int = 5) -> list[dict]:
    """Estimator vs measured peak on sizes that were not used to fit its constants."""
    with tempfile.TemporaryDirectory() as tmp:
        return [measured_run(size, Path(tmp), max_epochs, "held-out")[0] for size in sizes]


NAIVE_SIZE = (20000, 10000, 20000, 0.03)  # many genes, ~3 % dense: dense float64 grows with cells x genes


def memory_vs_naive(max_epochs: int = 5, size: tuple = NAIVE_SIZE) -> dict:
    """This pipeline (full run) vs the naive run stopped after its dense matrix and scVI set-up."""
    with tempfile.TemporaryDirectory() as tmp:
        ours, ref, qry = measured_run(size, Path(tmp), max_epochs, "ours")
        naive = naive_against(ref, qry, ours, max_epochs, stop_after_setup=True)
    return {"ours": ours, "naive": naive, "max_epochs": max_epochs}


def memory_row(report: dict, size: tuple, wall: float) -> dict:
    """Measured vs estimated peak of one run (the estimate recomputed with the current constants)."""
    from labeltransfer.estimator import estimate

    params = {k: v for k, v in report["estimate"]["params"].items() if k != "peak_step"}
    est = estimate(**params)
    measured = report["peak_rss_bytes"]
    return {
        "n_reference": size[0], "n_query": size[1], "n_genes": size[2],
        "nnz": report["matrices"]["concatenate"]["nnz"],
        "measured_peak_bytes": measured, "estimate_bytes": est.total_bytes,
        "estimate_over_measured": round(est.total_bytes / measured, 3),
        "peak_step_estimated": est.params["peak_step"],
        "steps_measured": {k: v["peak_rss_bytes"] for k, v in report["steps"].items()},
        "steps_estimated": _step_totals(report),
        "accuracy": report["metrics"]["accuracy"], "wall_s": round(wall, 1),
    }


def _step_totals(report: dict) -> dict:
    from labeltransfer.estimator import step_estimates

    params = {k: v for k, v in report["estimate"]["params"].items() if k != "peak_step"}
    return {k: v.total_bytes for k, v in step_estimates(**params).items()}


def naive_run(reference: str, query: str, max_epochs: int, stop_after_setup: bool = False) -> dict:
    """The same steps without care: outer join, dense float64, no HVG, scVI on every gene.

    ``stop_after_setup`` stops once the dense float64 matrix exists and the scVI model is built on
    it (the first heavy step): the peak measured is then a lower bound of the naive run's peak.
    """
    import anndata
    import scvi

    from labeltransfer.classify import fit_classifier
    from memfit.record import PeakRecorder

    with PeakRecorder() as rec:
        a, b = anndata.read_h5ad(reference), anndata.read_h5ad(query)
        joint = anndata.concat({"reference": a, "query": b}, label="dataset", join="outer", index_unique="-")
        joint.X = np.asarray(joint.X.toarray(), dtype=np.float64)
        scvi.settings.seed = 0
        scvi.model.SCVI.setup_anndata(joint, batch_key="dataset")
        model = scvi.model.SCVI(joint, n_latent=30)
        if stop_after_setup:
            return {"peak_rss_bytes": rec.peak_rss_bytes, "shape": list(joint.shape), "dtype": str(joint.X.dtype),
                    "stopped_after": "dense float64 matrix + scVI model built (peak is a lower bound)"}
        model.train(max_epochs=max_epochs, early_stopping=True, early_stopping_patience=10,
                    enable_progress_bar=False, accelerator="cpu")
        latent = model.get_latent_representation()
        is_ref = (joint.obs["dataset"] == "reference").to_numpy()
        clf = fit_classifier(latent[is_ref], joint.obs["cell_type"].astype(str).to_numpy()[is_ref])
        clf.predict_proba(latent[~is_ref])
    return {"peak_rss_bytes": rec.peak_rss_bytes, "shape": list(joint.shape), "dtype": str(joint.X.dtype)}


def tables(results: dict) -> str:
    """Markdown tables of the accuracy and memory results."""
    from memfit.units import format_bytes

    lines = []
    for name, res in results.get("accuracy", {}).items():
        target = [r for r in res["per_seed"] if r["seed"] in res["seeds"]]
        lines += [f"**{name}** (seeds {res['seeds']}; mean over seeds)", "",
                  "| method | accuracy | macro-F1 | per seed (accuracy / macro-F1) |", "|---|---|---|---|"]
        for m in METHODS:
            per = ", ".join(f"{r[m]['accuracy']:.3f} / {r[m]['macro_f1']:.3f}" for r in target)
            lines.append(f"| {m} | {res['mean'][m]['accuracy']:.3f} | {res['mean'][m]['macro_f1']:.3f} | {per} |")
        every = res.get("mean_all")
        if every and len(res["seeds_all"]) > len(res["seeds"]):
            lines.append("")
            lines.append(f"all {len(res['seeds_all'])} seeds {res['seeds_all']}: mean ± standard error: " + "; ".join(
                f"{m} {every[m]['accuracy']:.3f} ± {every[m]['accuracy_se']:.3f} / "
                f"{every[m]['macro_f1']:.3f} ± {every[m]['macro_f1_se']:.3f}" for m in METHODS))
            lines.append("")
        thr = [r["scvi_xgboost"]["at_threshold"] for r in target if "at_threshold" in r["scvi_xgboost"]]
        if len(thr) == len(target):
            lines.append(f"| scvi_xgboost at --unknown-threshold {thr[0]['threshold']} | "
                         f"{np.mean([t['accuracy'] for t in thr]):.3f} | {np.mean([t['macro_f1'] for t in thr]):.3f} | "
                         + ", ".join(f"{t['accuracy']:.3f} / {t['macro_f1']:.3f} ({t['n_unknown']} unknown)" for t in thr)
                         + " |")
        lines.append("")
    vs = results.get("memory_vs_naive")
    if vs:
        n, o = vs["naive"], vs["ours"]
        lines += [f"larger set {o['n_reference']} + {o['n_query']} cells x {o['n_genes']} genes (nnz {o['nnz']}): "
                  f"this pipeline {format_bytes(o['measured_peak_bytes'])} (full run), naive >= "
                  f"{format_bytes(n['peak_rss_bytes'])} ({n.get('stopped_after', 'full run')}) -> "
                  f"ours / naive <= {n['ours_over_naive']:.3f}", ""]
    mem = results.get("memory")
    if mem:
        lines += ["| reference + query cells | genes | nnz | measured peak | estimate | estimate / measured |",
                  "|---|---|---|---|---|---|"]
        for r in mem["sizes"]:
            lines.append(f"| {r['n_reference']} + {r['n_query']} | {r['n_genes']} | {r['nnz']} | "
                         f"{format_bytes(r['measured_peak_bytes'])} | {format_bytes(r['estimate_bytes'])} | "
                         f"{r['estimate_over_measured']:.3f} |")
        for r in results.get("memory_heldout", []):
            lines.append(f"| {r['n_reference']} + {r['n_query']} (held out) | {r['n_genes']} | {r['nnz']} | "
                         f"{format_bytes(r['measured_peak_bytes'])} | {format_bytes(r['estimate_bytes'])} | "
                         f"{r['estimate_over_measured']:.3f} |")
        naive = mem.get("naive")
        if naive:
            lines += ["", f"naive run (outer join, dense float64, no HVG) on {naive['shape']}: peak "
                      f"{format_bytes(naive['peak_rss_bytes'])}; this pipeline: {format_bytes(naive['ours_peak_bytes'])} "
                      f"= {naive['ours_over_naive']:.2f} × naive"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["accuracy", "memory", "naive-compare", "all", "naive", "summarize", "tables",
                                             "ablation", "memory-heldout", "compare", "compare-tables", "compare-paired", "large",
                                             "unknown-rules"])
    parser.add_argument("--datasets", default=",".join(SPLITS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--max-epochs", type=int, default=5, help="scVI epochs of the memory runs")
    parser.add_argument("--accuracy-max-epochs", type=int, default=400, help="scVI epochs (early stopping) of the accuracy runs")
    parser.add_argument("--only-ours", action="store_true", help="accuracy: rerun this pipeline, keep the peers' rows")
    parser.add_argument("--n-latent", type=int, default=30, help="scVI latent dimensions of this pipeline (accuracy)")
    parser.add_argument("--sizes", default="5000:2500:3000:0.15,12000:6000:10000:0.05",
                        help="memory-heldout: reference:query:genes:mean_count, comma-separated")
    parser.add_argument("--variants", default=",".join(ABLATION), help="ablation: variants of this pipeline")
    parser.add_argument("--reference")
    parser.add_argument("--query")
    parser.add_argument("--stop-after-setup", action="store_true", help="naive: stop after the dense matrix + scVI model")
    parser.add_argument("--large-dir", default="/tmp/lt_large", help="large: where the generated files are kept")
    parser.add_argument("--splits", default=",".join(COMPARE_SPLITS), help="compare: the splits")
    args = parser.parse_args()
    if args.what == "compare-paired":
        compare_paired(args.splits.split(","), [int(x) for x in args.seeds.split(",")], args.accuracy_max_epochs)
        args.what = "compare-tables"
    if args.what in ("compare", "compare-tables"):
        if args.what == "compare":
            compare_rows(args.splits.split(","), [int(s) for s in args.seeds.split(",")], args.accuracy_max_epochs)
        summary = summarize_compare()
        COMPARE_RESULTS.write_text(json.dumps({"splits": summary, "machine": {"cpus": os.cpu_count()}}, indent=1) + "\n")
        print(compare_tables(summary))
        return
    if args.what == "unknown-rules":
        print(unknown_tables(unknown_rules(args.accuracy_max_epochs)))
        return
    if args.what == "large":
        large(Path(args.large_dir), args.max_epochs)
        return
    if args.what == "naive":
        print(json.dumps(naive_run(args.reference, args.query, args.max_epochs, args.stop_after_setup)))
        return
    if args.what == "ablation":
        ablation([int(s) for s in args.seeds.split(",")], args.accuracy_max_epochs,
                 args.variants.split(","))
        return
    if args.what == "tables":
        print(tables(json.loads(RESULTS.read_text())))
        return
    new = {}
    if args.what in ("memory", "all"):
        new["memory"] = memory(args.max_epochs)
    if args.what == "memory-heldout":
        new["memory_heldout"] = memory_heldout(
            [tuple(float(x) if "." in x else int(x) for x in item.split(":")) for item in args.sizes.split(",")],
            args.max_epochs)
    if args.what == "naive-compare":
        new["memory_vs_naive"] = memory_vs_naive(args.max_epochs)
    if args.what in ("accuracy", "all"):
        accuracy_rows(args.datasets.split(","), [int(s) for s in args.seeds.split(",")], args.accuracy_max_epochs,
                      args.only_ours, args.n_latent)
    if args.what in ("accuracy", "all", "summarize"):
        new["accuracy"] = summarize_accuracy()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.update(new)
    results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
