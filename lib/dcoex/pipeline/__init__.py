"""The pipeline drivers' shared implementation: plan, submit (SLURM, SGE, local), supervise.

``python -m dcoex.pipeline --scheduler slurm|sge ...`` is what both
``run_bootstrap_pipeline.sh`` scripts run; :mod:`dcoex.pipeline.task` runs one array task
inside a job, :mod:`dcoex.pipeline.finalise` checks a stage's tasks after they end and
resubmits the ones killed for memory.
"""
