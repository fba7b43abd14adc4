"""``python -m dcoex.stages.s02b_bootstrap_edges``: the stage's command line (see cli.py)."""

from dcoex.stages.s02b_bootstrap_edges.cli import main
from hpc.cli import run_command

run_command(main)
