"""Stage 01: extreme groups and bootstrap indices of every reference gene.

Writes ``bootstrap_indices.h5`` (docs/design.md §3.3): ``indices/low`` (N, k_L),
``indices/high`` (N, k_H), ``indices/low_boot`` (N, B, k_rL), ``indices/high_boot``
(N, B, k_rH), int32, one gene per chunk, and ``meta`` attrs. Genes are read and grouped
``--batch-size`` at a time; bootstrap draws and chunk compression run per gene in a
thread pool with a bounded window, so memory does not depend on B × N.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import h5py
import numpy as np

from dcoex.cli import force_option, parse_batch_size
from dcoex.expression_store import content_sha256, open_expression
from dcoex.expression_tsv import TsvExpressionReader
from dcoex.h5chunks import ChunkEncoder, ordered_parallel_map, write_chunk
from dcoex.h5io import filter_options, write_attrs
from dcoex.progress import progress
from dcoex.provenance import Provenance, why_stale, write_provenance
from dcoex.stages.s01_bootstrap_indices.contract import CONTRACT
from dcoex.stages.s01_bootstrap_indices.estimator import estimate
from dcoex.stages.s01_bootstrap_indices.science import (
    RNG_SCHEME,
    GroupSizes,
    bootstrap_indices,
    check_fractions,
    extreme_groups,
    group_sizes,
)
from dcoex.stages.upstream import EXTERNAL_EXPRESSION, FileUpstream
from dcoex.threads import default_threads
from hpc.atomic import atomic_output, ensure_writable_dir
from hpc.errors import InputError
from memfit.allocation import detect_allocation
from memfit.plan import plan_batch
from memfit.record import H5_GROUP as MEMFIT_GROUP
from memfit.record import PeakRecorder, h5_attrs, write_sidecar

STAGE = "01"


class _Source:
    """Rows of the expression matrix from expression.h5 (read per batch) or a TSV (in memory)."""

    def __init__(self, in_h5: str | None, in_tsv: str | None) -> None:
        if (in_h5 is None) == (in_tsv is None):
            raise InputError("give exactly one of --in-h5 or --in-tsv")
        self.name = str(in_h5 or in_tsv)
        self.kind = "h5" if in_h5 else "tsv"
        if in_h5:
            self._store = open_expression(in_h5)
            self._matrix = None
            self.gene_names = self._store.gene_names
            self.n_genes, self.n_samples = self._store.n_genes, self._store.n_samples
            self.content_sha256 = self._store.content_sha256
        else:
            self._store = None
            with TsvExpressionReader(in_tsv) as reader:
                self.gene_names, self._matrix = reader.read_all()
                sample_names = reader.sample_names
            self.n_genes, self.n_samples = self._matrix.shape
            self.content_sha256 = content_sha256(self._matrix, self.gene_names, sample_names)

    def upstream(self) -> FileUpstream:
        """Where stage 01's input provenance comes from: the store, or the TSV's content."""
        if self._store is not None:
            return FileUpstream(files={"00": Path(self.name)})
        external = Provenance(stage="00", format=EXTERNAL_EXPRESSION, format_version=1,
                              inputs={"content_sha256": self.content_sha256})
        return FileUpstream(known={"00": external})

    def rows(self, start: int, stop: int) -> np.ndarray:
        if self._store is not None:
            return self._store.read_rows(slice(start, stop))
        return self._matrix[start:stop]

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


@dataclass(frozen=True)
class _Job:
    gene: int
    low: np.ndarray
    high: np.ndarray


def _jobs(source: _Source, sizes: GroupSizes, batch_size: int, out: h5py.File) -> Iterator[_Job]:
    """Read and group ``batch_size`` genes at a time; store the groups; yield one job per gene."""
    for start in range(0, source.n_genes, batch_size):
        stop = min(start + batch_size, source.n_genes)
        rows = source.rows(start, stop)
        bad = ~np.isfinite(rows)
        if bad.any():
            r, c = (int(x) for x in np.argwhere(bad)[0])
            raise InputError(
                f"{source.name}: gene {source.gene_names[start + r]!r} (row {start + r}), "
                f"sample column {c}: non-finite value {rows[r, c]}"
            )
        del bad
        low, high = extreme_groups(rows, sizes.k_low, sizes.k_high)
        del rows
        out["indices/low"][start:stop] = low
        out["indices/high"][start:stop] = high
        for i in range(stop - start):
            yield _Job(start + i, low[i].copy(), high[i].copy())
        del low, high


def run_indices(
    out_h5: str | Path,
    *,
    in_h5: str | None = None,
    in_tsv: str | None = None,
    low_frac: float,
    high_frac: float,
    n_bootstrap: int,
    bootstrap_frac: float,
    seed: int,
    batch_size: int | str | None,
    compression: str,
    compression_level: int,
    deflate_strategy: str,
    threads: int | None = None,
    force: bool = False,
    quiet: bool = True,
) -> dict:
    """Compute groups and bootstrap indices; write ``out_h5`` atomically. Returns a summary
    (``skipped``: the output was current and is kept, docs/design.md §7.4)."""
    check_fractions(low_frac, high_frac, bootstrap_frac, n_bootstrap)
    if isinstance(batch_size, int) and batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be >= 1 or auto")
    out = Path(out_h5)
    ensure_writable_dir(out.parent)
    threads = threads or default_threads()
    allocation = detect_allocation()
    values = {"low_frac": low_frac, "high_frac": high_frac, "n_bootstrap": n_bootstrap,
              "bootstrap_frac": bootstrap_frac, "seed": seed}
    with PeakRecorder(allocation.limit_bytes) as recorder:
        source = _Source(in_h5, in_tsv)
        wanted = CONTRACT.wanted(values, source.upstream())
        if not force and why_stale(out, wanted) is None:
            source.close()
            return {"skipped": True, "n_genes": source.n_genes}
        try:
            sizes = group_sizes(source.n_samples, low_frac, high_frac, bootstrap_frac, source.name)

            def estimate_for(batch: int):
                return estimate(
                    n_genes=source.n_genes, n_samples=source.n_samples, n_bootstrap=n_bootstrap,
                    k_low=sizes.k_low, k_high=sizes.k_high, kr_low=sizes.kr_low,
                    kr_high=sizes.kr_high, batch_size=batch, threads=threads,
                    input_kind=source.kind, compression=compression,
                )

            plan = plan_batch(batch_size, estimate_for, source.n_genes, allocation, what="batch")
            batch = plan.batch_size
            mode = "vectorized" if batch >= source.n_genes else f"batch_{batch}"
            with atomic_output(out) as tmp:
                _write(tmp, source=source, sizes=sizes, batch=batch, mode=mode, seed=seed, n_bootstrap=n_bootstrap,
                       low_frac=low_frac, high_frac=high_frac, bootstrap_frac=bootstrap_frac,
                       compression=compression, level=compression_level, strategy=deflate_strategy,
                       threads=threads, quiet=quiet, plan_estimate=plan.estimate, allocation=allocation,
                       recorder=recorder, provenance=wanted)
        finally:
            source.close()
    extra = {
        "n_genes": source.n_genes, "n_samples": source.n_samples, "n_bootstrap": n_bootstrap,
        "processing_mode": mode, "threads": threads, "compression": compression,
        "compression_level": compression_level, "deflate_strategy": deflate_strategy,
        "output_bytes": out.stat().st_size, "numpy_version": np.__version__,
    }
    write_sidecar(out, STAGE, plan.estimate, allocation, recorder, batch_size=batch, extra=extra)
    return {**extra, "batch_size": batch, "estimate_bytes": plan.estimate.total_bytes,
            "peak_rss_bytes": recorder.peak_rss_bytes}


def _write(
    path: Path, *, source: _Source, sizes: GroupSizes, batch: int, mode: str, seed: int,
    n_bootstrap: int, low_frac: float, high_frac: float, bootstrap_frac: float,
    compression: str, level: int, strategy: str, threads: int, quiet: bool,
    plan_estimate, allocation, recorder: PeakRecorder, provenance: Provenance,
) -> None:
    n = source.n_genes
    direct = compression in ("gzip", "none")
    encoder = ChunkEncoder(compression, level, strategy) if direct else None
    boot_filters = encoder.dataset_kwargs() if direct else filter_options("lzf")
    small_filters = filter_options("gzip" if compression != "none" else "none")
    with h5py.File(path, "w") as out:
        out.create_dataset("indices/low", (n, sizes.k_low), np.int32, chunks=(1, sizes.k_low), **small_filters)
        out.create_dataset("indices/high", (n, sizes.k_high), np.int32, chunks=(1, sizes.k_high), **small_filters)
        low_boot = out.create_dataset("indices/low_boot", (n, n_bootstrap, sizes.kr_low), np.int32,
                                      chunks=(1, n_bootstrap, sizes.kr_low), **boot_filters)
        high_boot = out.create_dataset("indices/high_boot", (n, n_bootstrap, sizes.kr_high), np.int32,
                                       chunks=(1, n_bootstrap, sizes.kr_high), **boot_filters)

        def work(job: _Job):
            lb, hb = bootstrap_indices(job.low, job.high, seed=seed, gene_index=job.gene, n_bootstrap=n_bootstrap,
                                       kr_low=sizes.kr_low, kr_high=sizes.kr_high)
            if encoder is None:
                return job.gene, lb, hb
            return job.gene, encoder.encode(lb), encoder.encode(hb)

        results = ordered_parallel_map(work, _jobs(source, sizes, batch, out), threads)
        for gene, lb, hb in progress(results, quiet=quiet, total=n, unit="gene"):
            if encoder is None:
                low_boot[gene] = lb
                high_boot[gene] = hb
            else:
                write_chunk(low_boot, (gene, 0, 0), lb)
                write_chunk(high_boot, (gene, 0, 0), hb)
        write_attrs(out.require_group("meta"), {
            "low_frac": float(low_frac), "high_frac": float(high_frac),
            "n_bootstrap": int(n_bootstrap), "bootstrap_frac": float(bootstrap_frac),
            "seed": int(seed), "processing_mode": mode, "rng_scheme": RNG_SCHEME,
            "expr_content_sha256": source.content_sha256,
            "n_genes": int(n), "n_samples": int(source.n_samples),
            "k_low": sizes.k_low, "k_high": sizes.k_high,
            "k_r_low": sizes.kr_low, "k_r_high": sizes.kr_high,
        })
        write_provenance(out, provenance)
        write_attrs(out.require_group(MEMFIT_GROUP), h5_attrs(STAGE, plan_estimate, allocation, recorder, batch))



@click.command(name="01get_extreme_pop_bootstrap")
@click.option("--in-h5", type=click.Path(dir_okay=False), default=None, help="expression.h5 from stage 00.")
@click.option("--in-tsv", type=click.Path(dir_okay=False), default=None, help="Expression TSV instead of --in-h5 (read fully).")
@click.option("--out-h5", required=True, type=click.Path(dir_okay=False), help="Output bootstrap_indices.h5.")
@CONTRACT.click_options
@force_option
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
def main(*, in_h5, in_tsv, out_h5, low_frac, high_frac, n_bootstrap, bootstrap_frac, seed,
         batch_size, compression, compression_level, deflate_strategy, threads, force, quiet) -> None:
    """Extreme groups and bootstrap indices of every gene (docs/design.md §4.1)."""
    info = run_indices(out_h5, in_h5=in_h5, in_tsv=in_tsv, low_frac=low_frac, high_frac=high_frac,
                       n_bootstrap=n_bootstrap, bootstrap_frac=bootstrap_frac, seed=seed,
                       batch_size=parse_batch_size(str(batch_size)), compression=compression,
                       compression_level=compression_level, deflate_strategy=deflate_strategy, threads=threads,
                       force=force, quiet=quiet)
    if info.get("skipped"):
        if not quiet:
            print(f"{out_h5} is current (its provenance matches); kept (--force recomputes)", file=sys.stderr)
        return
    if not quiet:
        print(
            f"wrote {out_h5}: {info['n_genes']} genes, B={n_bootstrap}, {info['processing_mode']}, "
            f"{info['output_bytes']} bytes, peak RSS {info['peak_rss_bytes'] / 2**20:.0f} MiB "
            f"(estimate {info['estimate_bytes'] / 2**20:.0f} MiB)",
            file=sys.stderr,
        )
