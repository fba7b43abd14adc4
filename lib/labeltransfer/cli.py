"""The click group ``label_transfer`` with ``run`` and ``diagnose`` (logic lives in the package)."""

from __future__ import annotations

import click

from hpc.device import DEVICES
from labeltransfer.novelty import DEFAULT_K, UNKNOWN_LATENTS, UNKNOWN_RULES

DEVICE = click.Choice(DEVICES)
TUNING = click.Choice(["none", "quick", "full"])


def common_options(func):
    """Options shared by ``run`` and ``diagnose`` (so diagnose predicts the run's memory)."""
    options = [
        click.option("--reference", required=True, type=click.Path(), help="Reference .h5ad (raw counts)."),
        click.option("--query", required=True, type=click.Path(), help="Query .h5ad (raw counts)."),
        click.option("--label-key", default="cell_type", show_default=True, help="obs column of the reference labels."),
        click.option("--counts-layer", default=None, help="Layer holding raw counts (default: X)."),
        click.option("--query-label-key", default=None, help="obs column of query labels, for evaluation."),
        click.option("--min-cells-per-type", default=10, show_default=True, type=int, help="Drop reference types with fewer cells."),
        click.option("--n-hvg", default=3000, show_default=True, type=int, help="Highly variable genes (seurat_v3, dataset as batch); 0 = all common genes."),
        click.option("--n-latent", default=30, show_default=True, type=int, help="scVI latent dimensions."),
        click.option("--latent-samples", default=10, show_default=True, type=click.IntRange(0, None), help="Query predictions average the classifier over the latent mean and this many draws of each cell's scVI posterior (0 = mean only)."),
        click.option("--batch-size", default=128, show_default=True, type=int, help="scVI mini-batch size (cells)."),
        click.option("--device", default="auto", show_default=True, type=DEVICE, help="auto uses a GPU when torch sees one; gpu fails (exit 2) without one."),
        click.option("--min-common-genes", default=200, show_default=True, type=int, help="Refuse fewer common genes."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def run_options(func):
    """Options of the run itself, shared by ``run`` and the cluster submit scripts."""
    options = [
        click.option("--method", default="scanvi-xgb", show_default=True, type=click.Choice(["scanvi-xgb", "scvi-xgb"]), help="Latent + classifier: SCANVI (scVI trained on with the reference labels) or scVI alone, then XGBoost."),
        click.option("--ensemble", default=None, type=click.Choice(["scanvi", "none"]), help="scanvi (default with scanvi-xgb): average XGBoost's class probabilities with SCANVI's own classifier's, trained up to the scVI epoch budget more (early stopping); none (default with scvi-xgb) = XGBoost alone."),
        click.option("--max-epochs", default=None, type=click.IntRange(1, None), help="scVI epochs at most (early stopping, patience 10); default: scvi-tools' min(round(20000 / cells × 400), 400)."),
        click.option("--xgb-tuning", default="none", show_default=True, type=TUNING, help="Stratified K-fold grid search: quick (4 combos, 3 folds), full (48 combos, 5 folds); none = depth 4, learning rate 0.1, 200 trees."),
        click.option("--class-weight", default="balanced", show_default=True, type=click.Choice(["balanced", "none"]), help="XGBoost sample weights: balanced = each type weighs the same in total (helps rare types)."),
        click.option("--features", default="latent+lda", show_default=True, type=click.Choice(["latent+lda", "latent"]), help="XGBoost input: the latent plus the reference's shrinkage-LDA coordinates, or the latent alone."),
        click.option("--unknown-rule", default="knn", show_default=True, type=click.Choice(list(UNKNOWN_RULES)), help="'unknown' = not in the reference: knn = mean distance to the --unknown-k nearest reference cells beyond --unknown-quantile of the nearest type's own cells; distance = Mahalanobis distance to every type's centroid beyond --unknown-quantile of its own cells; probability = max probability below --unknown-threshold; both = knn or probability."),
        click.option("--unknown-quantile", default=0.99, show_default=True, type=float, help="knn / distance rules: the quantile of a type's held-out reference distances beyond which a cell is not of that type."),
        click.option("--unknown-latent", default="classifier", show_default=True, type=click.Choice(list(UNKNOWN_LATENTS)), help="knn / distance rules: distances in the classifier's latent (SCANVI's with scanvi-xgb) or the unsupervised scVI latent."),
        click.option("--unknown-k", default=DEFAULT_K, show_default=True, type=click.IntRange(1, None), help="knn rule: reference neighbours averaged."),
        click.option("--unknown-threshold", default=0.5, show_default=True, type=float, help="Probability rule: max probability below this -> 'unknown'."),
        click.option("--seed", default=0, show_default=True, type=int),
        click.option("--allow-non-integer", is_flag=True, help="Accept non-integer / negative values in the counts."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group(name="label_transfer")
def main() -> None:
    """Transfer cell-type labels from a reference to a query (SCANVI or scVI latent + XGBoost)."""


@main.command()
@common_options
@click.option("--out-dir", required=True, type=click.Path(), help="Output folder.")
@run_options
@click.option("--ignore-memory-check", is_flag=True, help="Warn instead of refusing (exit 3) when the estimate exceeds the allocation.")
@click.option("--quiet", is_flag=True, help="No step messages on stderr.")
def run(**kwargs) -> None:
    """Run the whole pipeline and write predictions, report, figures and the model."""
    from labeltransfer.run import RunOptions, run_label_transfer

    report = run_label_transfer(RunOptions(**kwargs))
    metrics = report.get("metrics")
    line = f"label_transfer: wrote {kwargs['out_dir']} ({report['predictions']['n_query']} query cells"
    if metrics:
        line += f"; accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}"
    click.echo(line + ")", err=True)


@main.command()
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print the diagnosis as JSON instead of text.")
def diagnose(as_json: bool, **kwargs) -> None:
    """Predict the run's memory from the files' headers and recommend settings (loads no matrix)."""
    from labeltransfer.diagnose import diagnose as run_diagnose

    click.echo(run_diagnose(as_json=as_json, **kwargs))
