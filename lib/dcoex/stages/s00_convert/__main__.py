"""``python -m dcoex.stages.s00_convert``: the stage's command line (see cli.py)."""

from hpc.cli import run_command
from dcoex.stages.s00_convert.cli import main

run_command(main)
