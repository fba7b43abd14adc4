"""The ``run`` pipeline: headers -> memory check -> load -> concat -> HVG -> scVI -> XGBoost -> outputs.

Every output is written into a hidden staging folder inside ``out_dir`` and moved into
place only when the whole run succeeded, so a failed run leaves no half-written file.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hpc.atomic import ensure_writable_dir
from hpc.device import resolve_device
from hpc.errors import InputError
from labeltransfer.classify import FEATURES
from labeltransfer.io import H5adHeader, load_csr, read_header
from labeltransfer.novelty import DEFAULT_K, UNKNOWN_LATENTS, UNKNOWN_RULES
from labeltransfer.prepare import (
    GeneOverlap,
    TypeFilter,
    concatenate,
    filter_cell_types,
    intersect_genes,
    load_query,
    load_reference,
)
from labeltransfer.steps import StepLog
from memfit.allocation import Allocation, detect_allocation
from memfit.estimate import MemoryEstimate
from memfit.plan import MemoryPlanError
from memfit.record import PeakRecorder, write_sidecar
from memfit.units import format_bytes

STAGE = "label_transfer"
#: --method: the latent (scVI, or SCANVI trained on from it with the reference labels) + XGBoost.
METHODS = {"scanvi-xgb": "scanvi", "scvi-xgb": "scvi"}
#: --ensemble: XGBoost's probabilities averaged with SCANVI's own classifier's (scanvi-xgb only).
ENSEMBLES = ("scanvi", "none")
OUTPUT_FILES = (
    "predictions.tsv",
    "probabilities.tsv.gz",
    "query_annotated.h5ad",
    "report.json",
    "confusion_matrix.png",
    "umap.png",
    "label_transfer.memory.json",
)


@dataclass
class RunOptions:
    """The flags of ``run`` (see the CLI for their meaning)."""

    reference: str
    query: str
    label_key: str
    out_dir: str
    counts_layer: str | None = None
    query_label_key: str | None = None
    min_cells_per_type: int = 10
    n_hvg: int = 3000
    n_latent: int = 30
    max_epochs: int | None = None
    method: str = "scanvi-xgb"
    ensemble: str | None = None
    batch_size: int = 128
    device: str = "auto"
    xgb_tuning: str = "none"
    class_weight: str = "balanced"
    features: str = "latent+lda"
    latent_samples: int = 10
    unknown_threshold: float = 0.5
    unknown_rule: str = "knn"
    unknown_quantile: float = 0.99
    unknown_k: int = DEFAULT_K
    unknown_latent: str = "classifier"
    seed: int = 0
    allow_non_integer: bool = False
    min_common_genes: int = 200
    ignore_memory_check: bool = False
    quiet: bool = False

    def validate(self) -> None:
        if not 0.0 <= self.unknown_threshold <= 1.0:
            raise InputError(f"--unknown-threshold must be in [0, 1], got {self.unknown_threshold}")
        if not 0.0 < self.unknown_quantile < 1.0:
            raise InputError(f"--unknown-quantile must be in (0, 1), got {self.unknown_quantile}")
        if self.method not in METHODS:
            raise InputError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.ensemble is not None and self.ensemble not in ENSEMBLES:
            raise InputError(f"--ensemble must be one of {', '.join(ENSEMBLES)}, got {self.ensemble!r}")
        if self.ensemble == "scanvi" and self.method != "scanvi-xgb":
            raise InputError("--ensemble scanvi needs --method scanvi-xgb (it averages with SCANVI's classifier)")

    @property
    def ensemble_used(self) -> str:
        """The ensemble this run makes: by default SCANVI's with scanvi-xgb (its classifier
        exists only there), none with scvi-xgb."""
        if self.ensemble is not None:
            return self.ensemble
        return "scanvi" if self.method == "scanvi-xgb" else "none"
        if self.unknown_latent not in UNKNOWN_LATENTS:
            raise InputError(f"--unknown-latent must be one of {', '.join(UNKNOWN_LATENTS)}, got {self.unknown_latent!r}")
        if self.unknown_rule not in UNKNOWN_RULES:
            raise InputError(f"--unknown-rule must be one of {', '.join(UNKNOWN_RULES)}, got {self.unknown_rule!r}")
        for name in ("n_latent", "max_epochs", "batch_size", "min_cells_per_type", "unknown_k"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.latent_samples < 0:
            raise InputError(f"--latent-samples must be >= 0, got {self.latent_samples}")
        if self.n_hvg < 0:
            raise InputError(f"--n-hvg must be >= 0 (0 = all common genes), got {self.n_hvg}")
        if self.xgb_tuning not in ("none", "quick", "full"):
            raise InputError(f"--xgb-tuning must be none, quick or full, got {self.xgb_tuning!r}")
        if self.features not in FEATURES:
            raise InputError(f"--features must be one of {', '.join(FEATURES)}, got {self.features!r}")


@dataclass
class Inputs:
    """What the headers say, checked: both headers, the gene overlap and the type filter."""

    reference: H5adHeader
    query: H5adHeader
    overlap: GeneOverlap
    types: TypeFilter


def inspect_inputs(opts: RunOptions) -> Inputs:
    """Read both headers and apply every cheap input check (InputError on bad input)."""
    reference = read_header(opts.reference, opts.counts_layer, opts.label_key, role="reference")
    query = read_header(opts.query, opts.counts_layer, opts.query_label_key, role="query")
    if query.n_obs == 0:
        raise InputError(f"{opts.query}: the query has no cells")
    if reference.n_obs == 0:
        raise InputError(f"{opts.reference}: the reference has no cells")
    overlap = intersect_genes(reference.var_names, query.var_names, opts.min_common_genes)
    types = filter_cell_types(reference.labels, opts.min_cells_per_type, opts.label_key)
    return Inputs(reference, query, overlap, types)


def estimate_params(inputs: Inputs, opts: RunOptions, device: str) -> dict:
    """The estimator's parameters from the headers (kept reference rows, common genes)."""
    ref, query = inputs.reference, inputs.query
    n_ref = len(inputs.types.rows)
    return {
        "n_reference": n_ref,
        "n_query": query.n_obs,
        "n_genes_reference": ref.n_vars,
        "n_genes_query": query.n_vars,
        "n_common": inputs.overlap.n_common,
        "nnz_reference": int(round(ref.nnz * n_ref / max(ref.n_obs, 1))),
        "nnz_query": query.nnz,
        "dense_reference": ref.encoding == "array",
        "dense_query": query.encoding == "array",
        "n_hvg": opts.n_hvg,
        "n_latent": opts.n_latent,
        "latent_samples": opts.latent_samples,
        "batch_size": opts.batch_size,
        "n_classes": len(inputs.types.kept),
        "device": device,
        "unknown_k": opts.unknown_k,
    }


def memory_check(estimate: MemoryEstimate, allocation: Allocation, ignore: bool) -> str | None:
    """MemoryPlanError when the estimate exceeds the usable allocation (a warning if ``ignore``)."""
    if estimate.total_bytes <= allocation.usable_bytes:
        return None
    message = (
        f"estimated peak {format_bytes(estimate.total_bytes)} > usable {format_bytes(allocation.usable_bytes)} "
        f"({allocation.describe()}); run `label_transfer.py diagnose` for advice"
    )
    if not ignore:
        raise MemoryPlanError(message + " (or pass --ignore-memory-check)", estimate, allocation)
    warning = "warning: " + message
    print(warning, file=sys.stderr)
    return warning


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for name in ("dcoex", "scvi-tools", "torch", "scanpy", "anndata", "xgboost", "xgboost-cpu", "scikit-learn", "numpy", "scipy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def _matrix_facts(matrix) -> dict:
    return {
        "shape": list(matrix.shape),
        "format": matrix.format,
        "dtype": str(matrix.dtype),
        "nnz": int(matrix.nnz),
        "bytes": int(matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes),
    }


def run_label_transfer(opts: RunOptions) -> dict:
    """Run the whole pipeline; return the report (also written to ``out_dir/report.json``)."""
    from labeltransfer.estimator import estimate as estimate_memory

    opts.validate()
    inputs = inspect_inputs(opts)
    device = resolve_device(opts.device)
    params = estimate_params(inputs, opts, device)
    estimate = estimate_memory(**params)
    allocation = detect_allocation()
    memory_warning = memory_check(estimate, allocation, opts.ignore_memory_check)
    out_dir = ensure_writable_dir(opts.out_dir)
    staging = out_dir / f".label_transfer.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    log = StepLog(opts.quiet)
    log.say(f"reference {inputs.types.message(opts.min_cells_per_type)}")
    ov = inputs.overlap.to_dict()
    log.say(
        f"genes: {ov['n_common']} common, {ov['n_reference_only']} reference-only, {ov['n_query_only']} query-only"
    )
    log.say(f"device {device}; estimated peak {format_bytes(estimate.total_bytes)}; {allocation.describe()}")
    try:
        with PeakRecorder(allocation.limit_bytes) as recorder:
            report = _pipeline(opts, inputs, device, staging, log)
        report.update(
            parameters={k: v for k, v in asdict(opts).items() if k != "quiet"},
            device=device,
            versions=_versions(),
            estimate=estimate.to_dict(),
            allocation=allocation.to_dict(),
            memory_warning=memory_warning,
            peak_rss_bytes=recorder.peak_rss_bytes,
            wall_s=round(recorder.elapsed()[0], 3),
        )
        (staging / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
        write_sidecar(
            staging / "label_transfer.memory.json", STAGE, estimate, allocation, recorder,
            batch_size=opts.batch_size, extra={"steps": report["steps"]},
        )
        _publish(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _publish(staging: Path, out_dir: Path) -> None:
    """Move every staged output (and the model folder) into ``out_dir``."""
    model = out_dir / "model"
    if model.exists():
        shutil.rmtree(model)
    os.replace(staging / "model", model)
    for name in OUTPUT_FILES:
        os.replace(staging / name, out_dir / name)


def _pipeline(opts: RunOptions, inputs: Inputs, device: str, staging: Path, log: StepLog) -> dict:
    import anndata

    check = not opts.allow_non_integer
    facts: dict[str, dict] = {}
    with log.step("load_reference"):
        ref_x = load_reference(inputs.reference, inputs.types.rows, inputs.overlap, check)
        facts["load_reference"] = _matrix_facts(ref_x)
    with log.step("load_query"):
        query_x = load_query(inputs.query, inputs.overlap, check)
        facts["load_query"] = _matrix_facts(query_x)
    n_ref, n_query = ref_x.shape[0], query_x.shape[0]
    ref_labels = inputs.reference.labels.to_numpy(dtype=object)[inputs.types.rows].astype(str)
    with log.step("concatenate"):
        joint_x, dataset = concatenate(ref_x, query_x)
        del ref_x, query_x
        facts["concatenate"] = _matrix_facts(joint_x)
    joint = anndata.AnnData(
        X=joint_x,
        obs=pd.DataFrame({"dataset": dataset}, index=[f"c{i}" for i in range(n_ref + n_query)]),
        var=pd.DataFrame(index=inputs.overlap.names),
    )
    del joint_x
    with log.step("hvg"):
        from labeltransfer.hvg import select_hvg

        mask = select_hvg(joint, opts.n_hvg)
        if not mask.all():
            joint = joint[:, mask].copy()
        facts["hvg"] = _matrix_facts(joint.X)
    log.say(f"{int(mask.sum())} genes for scVI")
    from labeltransfer.latent import UNLABELLED, default_max_epochs

    max_epochs = opts.max_epochs or default_max_epochs(n_ref + n_query)
    with log.step("scvi"):
        from labeltransfer.latent import train_latent

        latent_labels = np.concatenate([ref_labels, np.full(n_query, UNLABELLED, dtype=object)]).astype(str)
        trained = train_latent(
            joint, staging / "model", n_latent=opts.n_latent, max_epochs=max_epochs,
            batch_size=opts.batch_size, device=device, seed=opts.seed,
            progress=not opts.quiet and sys.stderr.isatty(), n_samples=opts.latent_samples,
            sample_rows=np.arange(n_ref, n_ref + n_query), model=METHODS[opts.method], labels=latent_labels,
            classifier_epochs=max_epochs if opts.ensemble_used == "scanvi" else 0,
            predict_rows=np.arange(n_ref, n_ref + n_query),
        )
        latent, query_samples = trained.latent, trained.samples
        # the latent of the unknown distances: the classifier's (SCANVI for scanvi-xgb) or scVI's
        space = latent if opts.unknown_latent == "classifier" or trained.scvi_latent is None else trained.scvi_latent
        del joint
    log.say(f"scVI trained {trained.epochs_trained} of {max_epochs} epochs (early stopped: {trained.early_stopped}, "
            f"{trained.seconds_per_epoch:.2f} s per epoch)"
            + (f"; SCANVI {trained.scanvi_epochs} epochs" if trained.scanvi_epochs else "")
            + (f" + {trained.classifier_epochs} for its classifier" if trained.classifier_epochs else ""))
    with log.step("xgboost"):
        from labeltransfer.classify import fit_classifier, predict
        from labeltransfer.novelty import novelty_scores, unknown_mask

        classifier = fit_classifier(latent[:n_ref], ref_labels, tuning=opts.xgb_tuning, device=device, seed=opts.seed,
                                    class_weight=opts.class_weight, features=opts.features)
        _, max_prob, _, proba = predict(classifier, latent[n_ref:], 0.0, samples=query_samples)
        parts = {}
        if trained.scanvi_proba is not None:  # docs/label_transfer.md, "Ensemble"
            scanvi = trained.scanvi_proba[:, [trained.scanvi_classes.index(c) for c in classifier.classes]]
            parts = {"xgboost": proba, "scanvi": scanvi}
            proba = 0.5 * (proba + scanvi)
            max_prob = proba.max(axis=1)
        # docs/label_transfer.md, "unknown"
        novelty = novelty_scores(opts.unknown_rule, space[:n_ref], ref_labels, space[n_ref:],
                                 quantile=opts.unknown_quantile, k=opts.unknown_k, seed=opts.seed)
        del space
        is_unknown = unknown_mask(opts.unknown_rule, max_prob=max_prob, novelty=novelty,
                                  threshold=opts.unknown_threshold)
        labels = np.where(is_unknown, "unknown", np.asarray(classifier.classes, dtype=object)[proba.argmax(axis=1)])
        xgb_facts = {"tuning": opts.xgb_tuning, "class_weight": opts.class_weight, "features": opts.features,
                     "latent_samples": opts.latent_samples,
                     "n_features": latent.shape[1] + classifier.features.n_extra,
                     "best_params": classifier.best_params, "cv": classifier.cv_scores}
        del classifier, query_samples
    with log.step("outputs"):
        metrics = _write_outputs(
            opts, inputs, staging, latent=latent, n_ref=n_ref, ref_labels=ref_labels, labels=labels,
            max_prob=max_prob, is_unknown=is_unknown, proba=proba, novelty=novelty,
            classes=sorted(inputs.types.kept), parts=parts,
        )
    return {
        "inputs": {"reference": inputs.reference.summary(), "query": inputs.query.summary()},
        "gene_overlap": inputs.overlap.to_dict(),
        "cell_types": {
            "kept": inputs.types.kept,
            "dropped": inputs.types.dropped,
            "n_unlabelled_dropped": inputs.types.n_unlabelled,
            "min_cells_per_type": opts.min_cells_per_type,
        },
        "matrices": facts,
        "n_genes_used": int(mask.sum()),
        "method": opts.method,
        "ensemble": {"kind": opts.ensemble_used, "scanvi_classifier_epochs": trained.classifier_epochs,
                     "scanvi_classifier_max_epochs": max_epochs if opts.ensemble_used == "scanvi" else 0,
                     "scanvi_classifier_s": trained.classifier_s},
        "scvi": {
            "max_epochs": max_epochs,
            "max_epochs_source": "--max-epochs" if opts.max_epochs else "default_max_epochs(n_cells)",
            "epochs_trained": trained.epochs_trained,
            "early_stopped": trained.early_stopped,
            "train_s": trained.train_s,
            "seconds_per_epoch": round(trained.seconds_per_epoch, 4),
            "scanvi_epochs": trained.scanvi_epochs,
            "scanvi_s": trained.scanvi_s,
            "final_elbo_validation": (trained.history.get("elbo_validation") or [None])[-1],
        },
        "unknown": {"rule": opts.unknown_rule, "probability_threshold": opts.unknown_threshold,
                    "distance_quantile": opts.unknown_quantile, "k": opts.unknown_k, "latent": opts.unknown_latent,
                    "novelty_distance": "distance" if opts.unknown_rule == "distance" else "knn", "n_unknown": int(is_unknown.sum()),
                    "n_far": int((novelty > 1).sum()), "n_unsure": int((max_prob < opts.unknown_threshold).sum())},
        "xgboost": xgb_facts,
        "predictions": {
            "n_query": n_query,
            "n_unknown": int(is_unknown.sum()),
            "label_counts": pd.Series(labels).value_counts().sort_index().to_dict(),
        },
        "metrics": metrics,
        "steps": log.steps,
    }


def _write_outputs(
    opts: RunOptions,
    inputs: Inputs,
    staging: Path,
    *,
    latent: np.ndarray,
    n_ref: int,
    ref_labels: np.ndarray,
    labels: np.ndarray,
    max_prob: np.ndarray,
    is_unknown: np.ndarray,
    proba: np.ndarray,
    novelty: np.ndarray,
    classes: list[str],
    parts: dict[str, np.ndarray] | None = None,
) -> dict | None:
    import anndata

    from labeltransfer.evaluate import evaluate
    from labeltransfer.io import read_obs
    from labeltransfer.plots import plot_confusion, plot_umap, umap_coordinates

    query_h = inputs.query
    obs = read_obs(query_h, np.arange(query_h.n_obs))
    table = pd.DataFrame(
        {"cell": obs.index.astype(str), "predicted_label": labels, "probability": np.round(max_prob, 6),
         "is_unknown": is_unknown, "novelty": np.round(novelty, 6)},
    )
    metrics = None
    if opts.query_label_key is not None:
        truth = query_h.labels.to_numpy(dtype=object).astype(str)
        table["true_label"] = truth
        argmax = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
        metrics = evaluate(truth, labels, known=classes)
        without = evaluate(truth, argmax, known=classes)
        metrics["argmax"] = {k: without[k] for k in ("accuracy", "macro_f1", "per_class_f1", "known_macro_f1")}
        plot_confusion(metrics["confusion_matrix"], staging / "confusion_matrix.png")
    else:
        counts = pd.crosstab(pd.Series(labels, name="predicted"), pd.Series(["query"] * len(labels), name="x"))
        plot_confusion(
            {"labels": list(counts.index), "matrix": np.diag(counts.iloc[:, 0].to_numpy()).tolist()},
            staging / "confusion_matrix.png",
            title="query predictions (no query labels given)",
        )
    table.to_csv(staging / "predictions.tsv", sep="\t", index=False)
    probs = pd.DataFrame(np.round(proba, 6), columns=classes)
    probs.insert(0, "cell", obs.index.astype(str))
    probs.to_csv(staging / "probabilities.tsv.gz", sep="\t", index=False, compression={"method": "gzip", "mtime": 0})
    del probs
    coords = umap_coordinates(latent, opts.seed)
    dataset = np.array(["reference"] * n_ref + ["query"] * (len(latent) - n_ref))
    plot_umap(coords, dataset, np.concatenate([ref_labels, labels.astype(str)]), staging / "umap.png")
    counts_x = load_csr(query_h, np.arange(query_h.n_obs), np.arange(query_h.n_vars), check_integer=False)
    obs = obs.copy()
    obs["predicted_label"] = pd.Categorical(labels)
    obs["prediction_probability"] = max_prob.astype(np.float32)
    obs["is_unknown"] = is_unknown
    var = pd.DataFrame(index=pd.Index(query_h.var_names, name=None))
    var["in_reference"] = np.isin(var.index, inputs.overlap.names)
    annotated = anndata.AnnData(
        X=counts_x, obs=obs, var=var,
        obsm={"X_scvi": latent[n_ref:], "X_umap": coords[n_ref:],
              **{f"proba_{name}": part.astype(np.float32) for name, part in (parts or {}).items()}},
    )
    annotated.uns["label_transfer"] = {"classes": np.asarray(classes), "unknown_threshold": opts.unknown_threshold,
                                       "unknown_rule": opts.unknown_rule, "unknown_quantile": opts.unknown_quantile,
                                       "unknown_k": opts.unknown_k, "unknown_latent": opts.unknown_latent,
                                       "method": opts.method, "ensemble": opts.ensemble_used}
    annotated.obs["novelty"] = novelty.astype(np.float32)
    annotated.write_h5ad(staging / "query_annotated.h5ad")
    return metrics
