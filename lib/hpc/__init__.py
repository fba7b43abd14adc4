"""The HPC layer shared by the co-expression driver (dcoex.pipeline) and label transfer.

Modules: ``errors`` (exit codes, InputError), ``cli`` (the CLI error wrapper), ``atomic``
(outputs under a temporary name, then renamed), ``schedulers`` (SLURM / SGE / local adapters,
job-id parsing), ``manifest`` (the typed, locked, versioned ``run_manifest.json``) and
``calibration`` (memfit's per-stage correction factors: one reader and writer). It depends on
memfit, never on the science packages. See docs/hpc.md.
"""
