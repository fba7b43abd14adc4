"""``python -m dcoex.stages.s03b_collect``: the stage's command line (see cli.py)."""

from hpc.cli import run_command
from dcoex.stages.s03b_collect.cli import main

run_command(main)
