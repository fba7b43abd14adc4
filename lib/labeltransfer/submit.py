"""Submit one label-transfer ``run`` to SLURM or SGE, sized by ``diagnose``'s estimate.

Shared by src/SLURM_scripts/run_label_transfer.sh and src/SGE_scripts/run_label_transfer.sh, and
a client of the HPC layer (``hpc``): the job is a :class:`hpc.schedulers.JobSpec` (a command line,
SLURM ``--wrap`` / SGE ``-b y``) that the scheduler adaptor turns into the sbatch / qsub command,
submits and parses the job id of, as for the co-expression driver's single-job stages. Memory =
the adaptor's request for the estimate × the calibration factor of stage ``label_transfer``
(hpc.calibration, the file ``memory_review --calibrate`` writes) / memfit safety (SGE h_vmem: plus
the virtual overhead and torch's mappings, per slot); GPU optional (SLURM ``--gres``, SGE resource);
the submission is recorded in the locked ``OUT_DIR/run_manifest.json`` (hpc.manifest, stage
``label_transfer``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from hpc.atomic import ensure_writable_dir
from hpc.calibration import load_calibration
from hpc.errors import InputError
from hpc.manifest import CalibrationRecord, attempt_record, locked_manifest, manifest_path, new_manifest, read_manifest
from hpc.schedulers import (
    DEFAULT_SGE_GPU_RESOURCE,
    DEFAULT_SLURM_GRES,
    JobSpec,
    Scheduler,
    get_scheduler,
    thread_env,
)
from labeltransfer.cli import common_options, run_options
from memfit.allocation import SAFETY_SCHEDULER
from memfit.units import MiB, format_bytes, parse_bytes

STAGE = "label_transfer"
#: Address space torch + scvi-tools + xgboost map beyond their resident set (SGE h_vmem).
TORCH_VIRTUAL_BYTES = 1024 * MiB
#: The options of ``run`` forwarded to the job (name -> click flag).
RUN_FLAGS = (
    "label_key", "counts_layer", "query_label_key", "min_cells_per_type", "n_hvg", "n_latent", "latent_samples",
    "batch_size", "min_common_genes", "method", "ensemble", "max_epochs", "xgb_tuning", "class_weight", "features", "unknown_rule",
    "unknown_quantile", "unknown_k", "unknown_latent", "unknown_threshold", "seed",
)
RUN_SWITCHES = ("allow_non_integer",)


def job_command(python: str, opts: dict, device: str) -> list[str]:
    """argv of the job: ``python -m labeltransfer run ...`` with the run flags."""
    argv = [os.path.abspath(python), "-m", "labeltransfer", "run", "--reference", str(Path(opts["reference"]).resolve()),
            "--query", str(Path(opts["query"]).resolve()), "--out-dir", str(Path(opts["out_dir"]).resolve()),
            "--device", device, "--quiet"]
    for name in RUN_FLAGS:
        value = opts.get(name)
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    argv += [f"--{name.replace('_', '-')}" for name in RUN_SWITCHES if opts.get(name)]
    return argv


def transfer_job(scheduler: Scheduler, job: list[str], opts: dict, mem_bytes: int, log_dir: Path) -> JobSpec:
    """The scheduler-neutral job that runs ``job`` (argv) with ``mem_bytes`` (bytes, whole job),
    ``--cpus`` threads and, with ``--gpu``, one GPU; logs ``log_dir/label_transfer.<job id>.1.log``."""
    cpus = int(opts["cpus"])
    gpu = (opts["gres"] if scheduler.name == "slurm" else opts["gpu_resource"]) if opts["gpu"] else None
    return JobSpec(name=opts["job_name"], script=None, command=job, log=log_dir, log_stem=STAGE, mem_bytes=mem_bytes,
                   slots=cpus, time_limit=opts["time"], queue=opts.get("partition") or opts.get("queue"),
                   account=opts.get("account"), env=thread_env(cpus), gpu=gpu, parallel_env=opts["pe"])


def calibration_factor(path: str | None) -> tuple[float, CalibrationRecord]:
    """The factor of stage ``label_transfer`` in calibration file ``path`` (1.0 without a file or
    without that stage) and the manifest's record of the calibration; CalibrationError if bad."""
    if not path:
        return 1.0, {"file": None, "factors": {}}
    factors = load_calibration(path)
    return factors.get(STAGE, 1.0), {"file": str(path), "factors": factors}


def record_submission(out_dir: Path, manifest_fields: dict, entry: dict, attempt: dict) -> None:
    """Add the submission to ``out_dir/run_manifest.json`` under its lock: the top level is
    replaced by this submission's, the stage's earlier attempts are kept."""
    with locked_manifest(out_dir) as manifest:
        previous = manifest.get("stages", {}).get(STAGE, {}).get("attempts", [])
        attempt["attempt"] = len(previous) + 1
        stages = dict(manifest.get("stages", {}), **{STAGE: dict(entry, attempts=[*previous, attempt])})
        fresh = new_manifest(**manifest_fields, stages=stages)
        fresh["created"] = manifest.get("created") or fresh["created"]
        manifest.update(fresh)


def submit(scheduler_name: str, opts: dict) -> dict:
    """Estimate, submit through the scheduler adaptor (or print the command with --dry-run),
    record the submission in the manifest; returns a summary (bytes, the command, the job id)."""
    from labeltransfer.estimator import estimate as estimate_memory
    from labeltransfer.run import RunOptions, estimate_params, inspect_inputs

    run_fields = {k: opts[k] for k in ("reference", "query", "label_key", "out_dir", "counts_layer",
                                        "query_label_key", "min_cells_per_type", "n_hvg", "n_latent",
                                        "latent_samples", "batch_size", "min_common_genes")}
    run_opts = RunOptions(**run_fields)
    run_opts.validate()
    scheduler = get_scheduler(scheduler_name, dry_run=bool(opts["dry_run"]))
    scheduler.require()
    out_dir = Path(opts["out_dir"]).resolve()
    if manifest_path(out_dir).exists():
        read_manifest(out_dir)  # another version's or a corrupt manifest: refused before anything
    inputs = inspect_inputs(run_opts)
    device = "gpu" if opts["gpu"] else ("cpu" if opts["device"] == "auto" else opts["device"])
    raw = estimate_memory(**estimate_params(inputs, run_opts, device))
    factor, calibration = calibration_factor(opts.get("calibration"))
    estimate = raw.scaled(factor) if factor != 1.0 else raw
    safety = float(opts["mem_safety"])
    slots = int(opts["cpus"])
    mem = parse_bytes(opts["mem"]) if opts.get("mem") else scheduler.request_bytes(
        estimate.total_bytes, safety, slots, extra_virtual_bytes=TORCH_VIRTUAL_BYTES)
    request = scheduler.request_string(mem, slots)
    # with --gpu the job must fail rather than silently train on CPU
    job_device = "gpu" if opts["gpu"] else opts["device"]
    log_dir = out_dir / "logs"
    job = transfer_job(scheduler, job_command(opts["python"], opts, job_device), opts, mem, log_dir)
    summary = {
        "scheduler": scheduler.name, "estimate_bytes": estimate.total_bytes, "calibration_factor": factor,
        "requested_bytes": mem, "request": request, "command": scheduler.command(job),
        "dry_run": bool(opts["dry_run"]),
    }
    print(estimate.table(), file=sys.stderr)
    print(f"request {format_bytes(mem)} = estimate {format_bytes(estimate.total_bytes)}"
          + (f" (calibration x{factor:g})" if factor != 1.0 else "") + f" / safety {safety:g}"
          + (" (+ virtual overhead, h_vmem)" if scheduler.name == "sge" else ""), file=sys.stderr)
    if opts["dry_run"]:
        scheduler.submit(job)  # prints the command
        return summary
    ensure_writable_dir(log_dir)
    job_id, command = scheduler.submit(job)
    entry = {
        "genes_per_task": None, "n_tasks": 1, "slots": slots, "time_limit": opts["time"],
        "raw_estimate_bytes": raw.total_bytes, "calibration_factor": factor, "estimate": estimate.to_dict(),
        "requested_bytes": mem, "request": request, "gpu": bool(opts["gpu"]),
        "sidecars": "label_transfer.memory.json",
    }
    shape = {"n_reference": inputs.reference.n_obs, "n_query": inputs.query.n_obs,
             "n_common_genes": inputs.overlap.n_common, "n_genes": inputs.overlap.n_common,
             "n_samples": inputs.reference.n_obs + inputs.query.n_obs}
    record_submission(out_dir, {
        "scheduler": scheduler.name, "out_dir": out_dir, "calibration": calibration, "data_shape": shape,
        "parameters": {k: v for k, v in opts.items() if k not in ("dry_run", "python")},
    }, entry, attempt_record(1, job_id, None, requested=mem, request=request, argv=command,
                              reason="initial"))
    print(job_id)
    summary["job_id"] = job_id
    return summary


@click.command(name="run_label_transfer")
@click.option("--scheduler", type=click.Choice(["slurm", "sge"]), required=True, help="Set by the wrapper script.")
@common_options
@click.option("--out-dir", required=True, type=click.Path())
@run_options
@click.option("--gpu", is_flag=True, help="Request one GPU and run scVI/XGBoost on it (--device gpu).")
@click.option("--gres", default=DEFAULT_SLURM_GRES, show_default=True, help="SLURM GPU request (with --gpu).")
@click.option("--gpu-resource", default=DEFAULT_SGE_GPU_RESOURCE, show_default=True, help="SGE resource for a GPU, as given to -l (with --gpu).")
@click.option("--time", "time", default="24:00:00", show_default=True, help="Wall-clock limit (SLURM --time, SGE h_rt).")
@click.option("--partition", default=None, help="SLURM partition.")
@click.option("--queue", default=None, help="SGE queue.")
@click.option("--pe", default="smp", show_default=True, help="SGE parallel environment for --cpus > 1.")
@click.option("--account", default=None, help="SLURM account / SGE project.")
@click.option("--cpus", default=2, show_default=True, type=int, help="CPU cores (threads) for the job.")
@click.option("--mem", default=None, help="Override the memory request (e.g. 16G); default: estimate / --mem-safety.")
@click.option("--mem-safety", default=SAFETY_SCHEDULER, show_default=True, type=float, help="memfit safety factor.")
@click.option("--calibration", default=None, type=click.Path(), help="Calibration file of memory_review --calibrate (memfit_calibration.json); uses its stage 'label_transfer'.")
@click.option("--job-name", default="label_transfer", show_default=True)
@click.option("--python", default=sys.executable, show_default=True, help="Python of the job (with dcoex[labels]).")
@click.option("--dry-run", is_flag=True, help="Print the submit command; submit and write nothing.")
def main(scheduler: str, **opts) -> None:
    """Submit `label_transfer.py run` to SLURM or SGE with memory from the estimate."""
    if scheduler == "slurm" and opts.get("queue"):
        raise InputError("--queue is for SGE; use --partition with SLURM")
    if scheduler == "sge" and opts.get("partition"):
        raise InputError("--partition is for SLURM; use --queue with SGE")
    if not 0 < opts["mem_safety"] <= 1:
        raise InputError(f"--mem-safety must be in (0, 1], got {opts['mem_safety']}")
    submit(scheduler, opts)


if __name__ == "__main__":
    from hpc.cli import run_command

    run_command(main)
