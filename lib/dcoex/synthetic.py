"""Deterministic example data with planted rewiring (and its truth).

Every gene is independent Gaussian noise, shifted and scaled to look like log-CPM,
except the planted structure. Each modulator gene m has a module of ``module_size``
genes that share an extra factor f_m only in the samples where m is high:

    z_g += sign_g · strength · f_m,   f_m ~ N(0, 1) in HIGH_m, 0 elsewhere,

so within HIGH_m every pair (i, j) of the module has correlation
sign_i·sign_j·strength²/(1 + strength²) (0.94 at strength 4) and within LOW_m it has
none: direction "new" (present in HIGH only). HIGH_m is exactly the group stage 01
builds with ``high_frac`` (the top floor(S·high_frac) samples of m).

The samples are laid out so that modulators do not disturb each other's tests: the
HIGH sets of the modulators are disjoint, and all modulators share one LOW set outside
every HIGH set (needs (n_modulators + 1)·floor(S·frac) <= S). A modulator's value is a
standard normal draw placed so that its HIGH set gets the top values, the shared LOW set
the bottom values, and every other sample a value in between. Modulators and module
genes are all distinct; everything else is noise.

The truth goes beside the data: ``truth.json`` (parameters, modulators, modules, pairs)
and ``truth.tsv`` (one row per planted pair).

CLI: ``python -m dcoex.synthetic --n-genes 200 --n-samples 200 --seed 1 --out-dir DIR``.
"""

import gzip
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

from hpc.atomic import atomic_output


@dataclass
class SyntheticData:
    """A genes × samples float32 matrix, its names and the planted truth."""

    matrix: np.ndarray
    gene_names: list[str]
    sample_names: list[str]
    modulators: list[int]
    pairs: list[dict] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    modules: dict = field(default_factory=dict)

    def truth(self) -> dict:
        """JSON-ready truth: parameters, modulators (index, name) and planted pairs."""
        return {
            "params": self.params,
            "modulators": [
                {"index": m, "name": self.gene_names[m], "module": self.modules.get(m, []),
                 "module_names": [self.gene_names[g] for g in self.modules.get(m, [])]}
                for m in self.modulators
            ],
            "pairs": self.pairs,
        }


def make_synthetic(
    n_genes: int = 200,
    n_samples: int = 200,
    seed: int = 1,
    *,
    n_modulators: int = 3,
    module_size: int = 30,
    strength: float = 4.0,
    high_frac: float = 0.2,
) -> SyntheticData:
    """Build the matrix and truth (deterministic for the same arguments)."""
    needed = n_modulators * (1 + module_size)
    if needed > n_genes:
        raise ValueError(f"{n_modulators} modulators with modules of {module_size} need {needed} genes, got {n_genes}")
    k = int(n_samples * high_frac + 1e-9)
    if k < 4:
        raise ValueError(f"{n_samples} samples give groups of {k} (< 4)")
    if n_modulators and (n_modulators + 1) * k > n_samples:
        raise ValueError(f"{n_modulators} modulators need (n_modulators + 1) * {k} <= {n_samples} samples")
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n_genes, n_samples))
    chosen = rng.permutation(n_genes)[:needed]
    modulators = sorted(int(m) for m in chosen[:n_modulators])
    modules = [sorted(int(g) for g in chosen[n_modulators + i * module_size : n_modulators + (i + 1) * module_size])
               for i in range(n_modulators)]
    layout = rng.permutation(n_samples)
    shared_low = layout[n_modulators * k : (n_modulators + 1) * k]
    pairs: list[dict] = []
    for index, (m, module) in enumerate(zip(modulators, modules)):
        high = np.sort(layout[index * k : (index + 1) * k])
        middle = np.setdiff1d(np.arange(n_samples), np.concatenate([high, shared_low]))
        values = np.sort(rng.standard_normal(n_samples))
        z[m, rng.permutation(shared_low)] = values[:k]
        z[m, rng.permutation(middle)] = values[k : n_samples - k]
        z[m, rng.permutation(high)] = values[n_samples - k :]
        signs = np.where(rng.random(module_size) < 0.5, -1, 1)
        factor = rng.standard_normal(k)
        for gene, sign in zip(module, signs):
            z[gene, high] += sign * strength * factor
        for a in range(module_size):
            for b in range(a + 1, module_size):
                pairs.append({"modulator": m, "gene_i": module[a], "gene_j": module[b],
                              "sign": int(signs[a] * signs[b]), "direction": "new"})
    mean = rng.uniform(2.0, 10.0, size=(n_genes, 1))
    scale = rng.uniform(0.5, 1.5, size=(n_genes, 1))
    matrix = (mean + scale * z).astype(np.float32)
    width = len(str(n_genes - 1))
    gene_names = [f"G{g:0{width}d}" for g in range(n_genes)]
    sample_names = [f"S{s:0{len(str(n_samples - 1))}d}" for s in range(n_samples)]
    for pair in pairs:
        pair["modulator_name"] = gene_names[pair["modulator"]]
        pair["gene_i_name"] = gene_names[pair["gene_i"]]
        pair["gene_j_name"] = gene_names[pair["gene_j"]]
    params = {
        "n_genes": n_genes, "n_samples": n_samples, "seed": seed, "n_modulators": n_modulators,
        "module_size": module_size, "strength": strength, "high_frac": high_frac, "k": k,
        "expected_r_high": round(strength**2 / (1 + strength**2), 4),
    }
    data = SyntheticData(matrix, gene_names, sample_names, modulators, pairs, params)
    data.modules = {m: module for m, module in zip(modulators, modules)}
    return data


def write_tsv(path: str | os.PathLike, data: SyntheticData) -> Path:
    """Write the matrix as a TSV (``gene_id`` + sample names header; ``.gz`` compresses)."""
    path = Path(path)
    with atomic_output(path) as tmp:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(tmp, "wt", encoding="utf-8", newline="") as handle:
            handle.write("gene_id\t" + "\t".join(data.sample_names) + "\n")
            for name, row in zip(data.gene_names, data.matrix):
                handle.write(name + "\t" + "\t".join(f"{v:.5f}" for v in row.tolist()) + "\n")
    return path


def write_truth(out_dir: str | os.PathLike, data: SyntheticData) -> tuple[Path, Path]:
    """Write ``truth.json`` and ``truth.tsv`` into ``out_dir``."""
    out = Path(out_dir)
    json_path, tsv_path = out / "truth.json", out / "truth.tsv"
    with atomic_output(json_path) as tmp:
        tmp.write_text(json.dumps(data.truth(), indent=1) + "\n")
    columns = ["modulator", "modulator_name", "gene_i", "gene_i_name", "gene_j", "gene_j_name", "sign", "direction"]
    with atomic_output(tsv_path) as tmp:
        lines = ["\t".join(columns)] + ["\t".join(str(p[c]) for c in columns) for p in data.pairs]
        tmp.write_text("\n".join(lines) + "\n")
    return json_path, tsv_path


@click.command(name="dcoex-synthetic")
@click.option("--n-genes", type=click.IntRange(2, None), default=200, show_default=True)
@click.option("--n-samples", type=click.IntRange(10, None), default=200, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--n-modulators", type=click.IntRange(0, None), default=3, show_default=True)
@click.option("--module-size", type=click.IntRange(2, None), default=30, show_default=True, help="Genes sharing each modulator's factor.")
@click.option("--strength", type=float, default=4.0, show_default=True, help="Loading of the shared factor.")
@click.option("--high-frac", type=float, default=0.2, show_default=True, help="Fraction of samples where a modulator acts.")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False), help="Folder for expression.tsv and the truth.")
@click.option("--gzip", "gz", is_flag=True, help="Write expression.tsv.gz.")
def main(*, n_genes, n_samples, seed, n_modulators, module_size, strength, high_frac, out_dir, gz) -> None:
    """Write expression.tsv(.gz), truth.json and truth.tsv with planted rewiring."""
    try:
        data = make_synthetic(n_genes, n_samples, seed, n_modulators=n_modulators, module_size=module_size,
                              strength=strength, high_frac=high_frac)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    tsv = write_tsv(Path(out_dir) / ("expression.tsv.gz" if gz else "expression.tsv"), data)
    write_truth(out_dir, data)
    click.echo(str(tsv))


if __name__ == "__main__":
    from hpc.cli import run_command

    run_command(main)
