"""``python -m dcoex.stages.s03b_collect``: the stage's command line (see cli.py)."""

from dcoex.stages.s03b_collect.cli import main
from hpc.cli import run_command

run_command(main)
