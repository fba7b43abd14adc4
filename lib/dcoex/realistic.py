"""Realistic expression data: strong, overlapping, modulated modules (docs/realistic_data.md).

Unlike :mod:`dcoex.synthetic` (a few planted modules in noise, with a truth), this generator
aims at the *density* of differential co-expression that real matrices give, so that memory,
disk and time are measured where many pairs are significant. The model, per sample s:

- ``n_drivers`` global factors (*drivers*) D_0..D_{n-1}: D_0 ~ N(0, 1); each later driver
  is E·exp(g·D_m − g²) with E ~ N(0, 1), g = ``driver_modulation`` and m an earlier driver,
  so its amplitude rises with D_m (unit variance). Every gene loads on every driver with
  loading driver_scale·driver_decay^d·t_df (Student-t: heavy-tailed, both signs): the
  strong global structure of real arrays (a first principal component of ~30 %).
- K = round(n_genes / genes_per_factor) module factors: F_f = E_f·exp(γ_f·D_d(f) − γ_f²),
  E_f ~ N(0, 1), a random driver d(f) and γ_f ~ modulation·U(0, 2): a module's amplitude
  rises with its driver.
- Gene g loads on 1 + Poisson(extra_factors) modules (at most 8; overlapping), chosen with
  log-normal popularity weights (heavy-tailed module sizes), with loadings
  ±loading_scale·|t_df| (random signs), plus N(0, noise_sd²) noise and a mean U(4, 12):
  x_g(s) = mean_g + Σ_d a_gd·D_d(s) + Σ_j l_gj·F_{f_gj}(s) + noise_g(s).

A reference gene follows the drivers it loads on, so its LOW and HIGH groups sit at
different driver levels, where the modulated drivers and modules have different amplitudes:
the share of a pair's covariance that they carry changes, and so does its correlation —
weakly for many pairs (dense edges at α 0.7) and strongly for a few (α 0.05).

Deterministic for a seed and independent of how the rows are requested: the factors come
from one stream, and each block of 256 genes from its own stream (``SeedSequence(seed,
spawn_key=(1, block))``), summed term by term in a fixed order, so ``rows(a, b)`` equals
``rows(0, n)[a:b]`` bit for bit. Memory: the K × S factors (float64) plus one block;
20,000 genes × 1,000 samples streams to a TSV in well under 100 MiB.

Defaults were chosen by ``bench/realistic_density.py`` against a real microarray matrix.

CLI: ``python -m dcoex.realistic --n-genes N --n-samples S --seed K --out expr.tsv[.gz]``.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import click
import numpy as np

from hpc.atomic import atomic_output

BLOCK_GENES = 256
MAX_FACTORS_PER_GENE = 8


@dataclass(frozen=True)
class RealisticParams:
    """Parameters of the generator (units: standard deviations of the unit-variance factors)."""

    n_genes: int
    n_samples: int
    seed: int = 1
    genes_per_factor: float = 30.0
    extra_factors: float = 1.0
    loading_df: float = 3.0
    loading_scale: float = 1.0
    noise_sd: float = 1.0
    n_drivers: int = 4
    driver_scale: float = 1.3
    driver_decay: float = 0.6
    modulation: float = 1.0
    driver_modulation: float = 0.3
    popularity_sigma: float = 1.0

    def check(self) -> None:
        """Raise ValueError naming the first parameter out of range."""
        if self.n_genes < 2 or self.n_samples < 10:
            raise ValueError(f"need at least 2 genes and 10 samples, got {self.n_genes} x {self.n_samples}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        for name in ("genes_per_factor", "loading_df", "loading_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("extra_factors", "noise_sd", "modulation", "popularity_sigma", "driver_scale",
                     "driver_modulation"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.n_drivers < 1:
            raise ValueError(f"n_drivers must be >= 1, got {self.n_drivers}")
        if not 0 < self.driver_decay <= 1:
            raise ValueError(f"driver_decay must be in (0, 1], got {self.driver_decay}")


class RealisticGenerator:
    """Rows of the genes × samples float32 matrix of ``params``, in any order or chunking."""

    def __init__(self, params: RealisticParams) -> None:
        params.check()
        self.params = params
        self.n_factors = max(1, round(params.n_genes / params.genes_per_factor))

    @cached_property
    def _factors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(D × S drivers, K × S module activities, K popularity probabilities), float64."""
        p = self.params
        rng = np.random.default_rng(np.random.SeedSequence(p.seed, spawn_key=(0,)))
        drivers = rng.standard_normal((p.n_drivers, p.n_samples))
        for d in range(1, p.n_drivers):
            g = p.driver_modulation
            drivers[d] *= np.exp(g * drivers[int(rng.integers(0, d))] - g**2)
        base = rng.standard_normal((self.n_factors, p.n_samples))
        driver_of = rng.integers(0, p.n_drivers, size=self.n_factors)
        gamma = p.modulation * rng.uniform(0.0, 2.0, size=(self.n_factors, 1))
        modules = base * np.exp(gamma * drivers[driver_of] - gamma**2)
        weights = rng.lognormal(0.0, p.popularity_sigma, size=self.n_factors)
        return drivers, modules, weights / weights.sum()

    def _block(self, block: int) -> np.ndarray:
        """Rows [block·256, min(N, (block+1)·256)) as float32."""
        p = self.params
        drivers, modules, prob = self._factors
        start = block * BLOCK_GENES
        n = min(p.n_genes, start + BLOCK_GENES) - start
        rng = np.random.default_rng(np.random.SeedSequence(p.seed, spawn_key=(1, block)))
        count = 1 + np.minimum(rng.poisson(p.extra_factors, size=n), MAX_FACTORS_PER_GENE - 1)
        which = rng.choice(self.n_factors, size=(n, MAX_FACTORS_PER_GENE), p=prob)
        loading = p.loading_scale * np.abs(rng.standard_t(p.loading_df, size=(n, MAX_FACTORS_PER_GENE)))
        loading *= np.where(rng.random((n, MAX_FACTORS_PER_GENE)) < 0.5, -1.0, 1.0)
        loading[np.arange(MAX_FACTORS_PER_GENE)[None, :] >= count[:, None]] = 0.0
        on_driver = p.driver_scale * p.driver_decay ** np.arange(p.n_drivers) * rng.standard_t(
            p.loading_df, size=(n, p.n_drivers))
        x = p.noise_sd * rng.standard_normal((n, p.n_samples))
        for d in range(p.n_drivers):
            x += on_driver[:, d, None] * drivers[d]
        for j in range(MAX_FACTORS_PER_GENE):
            x += loading[:, j, None] * modules[which[:, j]]
        x += rng.uniform(4.0, 12.0, size=(n, 1))
        return x.astype(np.float32)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) (float32, (stop − start) × S), equal to the same rows of the whole matrix."""
        if not 0 <= start <= stop <= self.params.n_genes:
            raise ValueError(f"rows {start}:{stop} outside 0:{self.params.n_genes}")
        if start == stop:
            return np.empty((0, self.params.n_samples), np.float32)
        first, last = start // BLOCK_GENES, (stop - 1) // BLOCK_GENES
        parts = [self._block(b) for b in range(first, last + 1)]
        offset = first * BLOCK_GENES
        return np.concatenate(parts)[start - offset : stop - offset]

    def chunks(self, chunk_genes: int = 4 * BLOCK_GENES) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first row, rows) in chunks of ``chunk_genes`` genes."""
        for start in range(0, self.params.n_genes, chunk_genes):
            yield start, self.rows(start, min(self.params.n_genes, start + chunk_genes))

    def matrix(self) -> np.ndarray:
        """The whole genes × samples float32 matrix."""
        return self.rows(0, self.params.n_genes)

    @property
    def gene_names(self) -> list[str]:
        """``G00000``… (zero-padded to the digits of N − 1)."""
        width = len(str(self.params.n_genes - 1))
        return [f"G{g:0{width}d}" for g in range(self.params.n_genes)]

    @property
    def sample_names(self) -> list[str]:
        """``S000``… (zero-padded to the digits of S − 1)."""
        width = len(str(self.params.n_samples - 1))
        return [f"S{s:0{width}d}" for s in range(self.params.n_samples)]


def make_realistic(n_genes: int, n_samples: int, seed: int = 1, **params: float) -> np.ndarray:
    """The whole genes × samples float32 matrix (keyword ``params``: fields of RealisticParams)."""
    return RealisticGenerator(RealisticParams(n_genes, n_samples, seed, **params)).matrix()


def write_realistic_tsv(path: str | Path, generator: RealisticGenerator, *, chunk_genes: int = 1024) -> Path:
    """Stream the matrix to the TSV stage 00 reads (``gene_id`` header, 5 decimals; ``.gz`` compresses)."""
    path = Path(path)
    names = generator.gene_names
    with atomic_output(path) as tmp:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(tmp, "wt", encoding="utf-8", newline="") as handle:
            handle.write("gene_id\t" + "\t".join(generator.sample_names) + "\n")
            for start, rows in generator.chunks(chunk_genes):
                for offset, row in enumerate(rows):
                    handle.write(names[start + offset] + "\t" + "\t".join(f"{v:.5f}" for v in row.tolist()) + "\n")
    return path


_DEFAULTS = RealisticParams(2, 10)


@click.command(name="dcoex-realistic")
@click.option("--n-genes", type=click.IntRange(2, None), required=True)
@click.option("--n-samples", type=click.IntRange(10, None), required=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--genes-per-factor", type=float, default=_DEFAULTS.genes_per_factor, show_default=True,
              help="Genes per latent factor: K = n_genes / this.")
@click.option("--extra-factors", type=float, default=_DEFAULTS.extra_factors, show_default=True,
              help="Mean number of factors per gene beyond the first (module overlap).")
@click.option("--loading-df", type=float, default=_DEFAULTS.loading_df, show_default=True,
              help="Student-t degrees of freedom of the loading magnitudes.")
@click.option("--loading-scale", type=float, default=_DEFAULTS.loading_scale, show_default=True)
@click.option("--noise-sd", type=float, default=_DEFAULTS.noise_sd, show_default=True)
@click.option("--n-drivers", type=int, default=_DEFAULTS.n_drivers, show_default=True,
              help="Global factors every gene loads on; each modulates a share of the modules.")
@click.option("--driver-scale", type=float, default=_DEFAULTS.driver_scale, show_default=True,
              help="Loading scale on the first driver (Student-t).")
@click.option("--driver-decay", type=float, default=_DEFAULTS.driver_decay, show_default=True,
              help="Loading scale ratio of driver d+1 to driver d.")
@click.option("--modulation", type=float, default=_DEFAULTS.modulation, show_default=True,
              help="Mean log-amplitude change of a factor per SD of its driver.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="expr.tsv or expr.tsv.gz")
def main(*, n_genes, n_samples, seed, out, **params) -> None:
    """Write a realistic genes × samples expression TSV (input of stage 00)."""
    try:
        generator = RealisticGenerator(RealisticParams(n_genes, n_samples, seed, **params))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    click.echo(str(write_realistic_tsv(out, generator)))


if __name__ == "__main__":
    from hpc.cli import run_command

    run_command(main)
