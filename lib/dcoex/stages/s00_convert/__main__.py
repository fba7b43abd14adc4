"""``python -m dcoex.stages.s00_convert``: the stage's command line (see cli.py)."""

from dcoex.stages.s00_convert.cli import main
from hpc.cli import run_command

run_command(main)
