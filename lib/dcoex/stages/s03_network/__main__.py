"""``python -m dcoex.stages.s03_network``: the stage's command line (see cli.py)."""

from hpc.cli import run_command
from dcoex.stages.s03_network.cli import main

run_command(main)
