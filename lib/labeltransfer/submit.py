"""Submit one label-transfer ``run`` to SLURM or SGE, sized by ``diagnose``'s estimate.

Shared by src/SLURM_scripts/run_label_transfer.sh and src/SGE_scripts/run_label_transfer.sh:
memory = estimate (headers only) / memfit safety, in MiB (SGE h_vmem: plus the virtual
overhead, per slot); GPU optional (SLURM ``--gres``, SGE resource flag); the submission is
recorded in ``OUT_DIR/run_manifest.json`` (version 1, stage ``label_transfer``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

import click

from hpc.atomic import atomic_output, ensure_writable_dir
from hpc.errors import InputError
from labeltransfer.cli import common_options, run_options
from memfit.allocation import SAFETY_SCHEDULER, VIRTUAL_OVERHEAD_BYTES
from memfit.units import MiB, format_bytes, parse_bytes

STAGE = "label_transfer"
#: Address space torch + scvi-tools + xgboost map beyond their resident set (SGE h_vmem).
TORCH_VIRTUAL_BYTES = 1024 * MiB
#: The options of ``run`` forwarded to the job (name -> click flag).
RUN_FLAGS = (
    "label_key", "counts_layer", "query_label_key", "min_cells_per_type", "n_hvg", "n_latent", "latent_samples",
    "batch_size", "min_common_genes", "max_epochs", "xgb_tuning", "class_weight", "features", "unknown_threshold", "seed",
)
RUN_SWITCHES = ("allow_non_integer",)


def request_bytes(estimate_bytes: int, safety: float, scheduler: str) -> int:
    """Memory to request (bytes, whole MiB) so the job's own memfit check passes.

    SLURM limits resident memory: estimate / safety. SGE's h_vmem limits virtual memory:
    the job's memfit subtracts VIRTUAL_OVERHEAD_BYTES, and torch maps TORCH_VIRTUAL_BYTES more.
    """
    need = estimate_bytes / safety
    if scheduler == "sge":
        need = (estimate_bytes + VIRTUAL_OVERHEAD_BYTES + TORCH_VIRTUAL_BYTES) / safety
    return int(math.ceil(need / MiB)) * MiB


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


def scheduler_command(scheduler: str, job: list[str], opts: dict, mem_bytes: int, log_dir: Path) -> list[str]:
    """sbatch / qsub argv that runs ``job``."""
    mem_mib = mem_bytes // MiB
    cpus = int(opts["cpus"])
    if scheduler == "slurm":
        argv = ["sbatch", "--parsable", "--job-name", opts["job_name"], f"--mem={mem_mib}M",
                f"--cpus-per-task={cpus}", f"--time={opts['time']}",
                f"--output={log_dir}/label_transfer.%j.out", f"--error={log_dir}/label_transfer.%j.err",
                f"--export=ALL,OMP_NUM_THREADS={cpus},OPENBLAS_NUM_THREADS={cpus},MKL_NUM_THREADS={cpus}"]
        if opts.get("partition"):
            argv.append(f"--partition={opts['partition']}")
        if opts.get("account"):
            argv.append(f"--account={opts['account']}")
        if opts["gpu"]:
            argv.append(f"--gres={opts['gres']}")
        return argv + ["--wrap", shlex.join(job)]
    per_slot = int(math.ceil(mem_mib / cpus))
    argv = ["qsub", "-terse", "-N", opts["job_name"], "-b", "y", "-cwd", "-V",
            "-l", f"h_vmem={per_slot}M,h_rt={opts['time']}",
            "-o", f"{log_dir}/label_transfer.$JOB_ID.out", "-e", f"{log_dir}/label_transfer.$JOB_ID.err",
            "-v", f"OMP_NUM_THREADS={cpus},OPENBLAS_NUM_THREADS={cpus},MKL_NUM_THREADS={cpus}"]
    if cpus > 1:
        argv += ["-pe", opts["pe"], str(cpus)]
    if opts.get("queue"):
        argv += ["-q", opts["queue"]]
    if opts.get("account"):
        argv += ["-P", opts["account"]]
    if opts["gpu"]:
        argv += ["-l", opts["gpu_resource"]]
    return argv + job


def _calibration(path: str | None) -> tuple[float, dict]:
    if not path:
        return 1.0, {"file": None, "factors": {}}
    try:
        data = json.loads(Path(path).read_text())
        factors = data.get("factors", data)
        return float(factors.get(STAGE, 1.0)), {"file": str(path), "factors": factors}
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(f"{path}: not a calibration file ({exc})") from None


def write_manifest(out_dir: Path, scheduler: str, entry: dict, attempt: dict, parameters: dict,
                   data_shape: dict, calibration: dict) -> Path:
    """Create or update ``out_dir/run_manifest.json`` (manifest version 1) atomically."""
    import importlib.metadata as md

    path = out_dir / "run_manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}
    if manifest.get("manifest_version", 1) != 1:
        raise InputError(f"{path}: unsupported manifest version {manifest.get('manifest_version')}")
    try:
        version = md.version("dcoex")
    except md.PackageNotFoundError:
        version = "unknown"
    manifest.update({
        "manifest_version": 1, "scheduler": scheduler, "dcoex_version": version,
        "created": manifest.get("created") or attempt["submitted"], "out_dir": str(out_dir),
        "parameters": parameters, "data_shape": data_shape, "calibration": calibration,
    })
    stages = manifest.setdefault("stages", {})
    previous = stages.get(STAGE, {}).get("attempts", [])
    attempt["attempt"] = len(previous) + 1
    stages[STAGE] = dict(entry, attempts=previous + [attempt])
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    return path


def submit(scheduler: str, opts: dict) -> dict:
    """Estimate, build the scheduler command, submit (or print with --dry-run), record the manifest."""
    from labeltransfer.run import RunOptions, estimate_params, inspect_inputs
    from labeltransfer.estimator import estimate as estimate_memory

    run_fields = {k: opts[k] for k in ("reference", "query", "label_key", "out_dir", "counts_layer",
                                        "query_label_key", "min_cells_per_type", "n_hvg", "n_latent",
                                        "latent_samples", "batch_size", "min_common_genes")}
    run_opts = RunOptions(**run_fields)
    run_opts.validate()
    inputs = inspect_inputs(run_opts)
    device = "gpu" if opts["gpu"] else ("cpu" if opts["device"] == "auto" else opts["device"])
    raw = estimate_memory(**estimate_params(inputs, run_opts, device))
    factor, calibration = _calibration(opts.get("calibration"))
    estimate = raw.scaled(factor) if factor != 1.0 else raw
    safety = float(opts["mem_safety"])
    mem = parse_bytes(opts["mem"]) if opts.get("mem") else request_bytes(estimate.total_bytes, safety, scheduler)
    # with --gpu the job must fail rather than silently train on CPU
    job_device = "gpu" if opts["gpu"] else opts["device"]
    out_dir = Path(opts["out_dir"]).resolve()
    log_dir = out_dir / "logs"
    job = job_command(opts["python"], opts, job_device)
    command = scheduler_command(scheduler, job, opts, mem, log_dir)
    summary = {
        "scheduler": scheduler, "estimate_bytes": estimate.total_bytes, "requested_bytes": mem,
        "request": f"{mem // MiB}M", "command": command, "dry_run": bool(opts["dry_run"]),
    }
    print(estimate.table(), file=sys.stderr)
    print(f"request {format_bytes(mem)} = estimate {format_bytes(estimate.total_bytes)} / safety {safety:g}"
          + (" (+ virtual overhead, h_vmem)" if scheduler == "sge" else ""), file=sys.stderr)
    if opts["dry_run"]:
        print(shlex.join(command))
        return summary
    ensure_writable_dir(log_dir)
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise InputError(f"{command[0]} not found: is this a {scheduler.upper()} submit host?") from None
    if proc.returncode != 0:
        raise InputError(f"{command[0]} failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    job_id = proc.stdout.strip().split(";")[0].split(".")[0]
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    entry = {
        "genes_per_task": None, "n_tasks": 1, "slots": int(opts["cpus"]), "time_limit": opts["time"],
        "raw_estimate_bytes": raw.total_bytes, "calibration_factor": factor, "estimate": estimate.to_dict(),
        "requested_bytes": mem, "request": summary["request"], "gpu": bool(opts["gpu"]),
        "sidecars": "label_transfer.memory.json",
    }
    attempt = {"job_id": job_id, "tasks": None, "requested_bytes": mem, "command": command,
               "submitted": now, "reason": "initial"}
    parameters = {k: v for k, v in opts.items() if k not in ("dry_run", "python")}
    shape = {"n_reference": inputs.reference.n_obs, "n_query": inputs.query.n_obs,
             "n_common_genes": inputs.overlap.n_common, "n_genes": inputs.overlap.n_common,
             "n_samples": inputs.reference.n_obs + inputs.query.n_obs}
    write_manifest(out_dir, scheduler, entry, attempt, parameters, shape, calibration)
    print(job_id)
    summary["job_id"] = job_id
    return summary


@click.command(name="run_label_transfer")
@click.option("--scheduler", type=click.Choice(["slurm", "sge"]), required=True, help="Set by the wrapper script.")
@common_options
@click.option("--out-dir", required=True, type=click.Path())
@run_options
@click.option("--gpu", is_flag=True, help="Request one GPU and run scVI/XGBoost on it (--device gpu).")
@click.option("--gres", default="gpu:1", show_default=True, help="SLURM GPU request (with --gpu).")
@click.option("--gpu-resource", default="gpu=1", show_default=True, help="SGE resource for a GPU, as given to -l (with --gpu).")
@click.option("--time", "time", default="24:00:00", show_default=True, help="Wall-clock limit (SLURM --time, SGE h_rt).")
@click.option("--partition", default=None, help="SLURM partition.")
@click.option("--queue", default=None, help="SGE queue.")
@click.option("--pe", default="smp", show_default=True, help="SGE parallel environment for --cpus > 1.")
@click.option("--account", default=None, help="SLURM account / SGE project.")
@click.option("--cpus", default=2, show_default=True, type=int, help="CPU cores (threads) for the job.")
@click.option("--mem", default=None, help="Override the memory request (e.g. 16G); default: estimate / --mem-safety.")
@click.option("--mem-safety", default=SAFETY_SCHEDULER, show_default=True, type=float, help="memfit safety factor.")
@click.option("--calibration", default=None, type=click.Path(), help="Calibration JSON from memory review ({'factors': {'label_transfer': f}}).")
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
    from dcoex.cli import run_command

    run_command(main)
