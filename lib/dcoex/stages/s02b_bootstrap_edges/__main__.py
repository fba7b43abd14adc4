"""``python -m dcoex.stages.s02b_bootstrap_edges``: the stage's command line (see cli.py)."""

from hpc.cli import run_command
from dcoex.stages.s02b_bootstrap_edges.cli import main

run_command(main)
