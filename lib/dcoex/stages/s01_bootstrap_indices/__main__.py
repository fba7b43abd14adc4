"""``python -m dcoex.stages.s01_bootstrap_indices``: the stage's command line (see cli.py)."""

from hpc.cli import run_command
from dcoex.stages.s01_bootstrap_indices.cli import main

run_command(main)
