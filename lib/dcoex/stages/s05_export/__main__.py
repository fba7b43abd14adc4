"""``python -m dcoex.stages.s05_export``: the stage's command line (see cli.py)."""

from dcoex.stages.s05_export.cli import main
from hpc.cli import run_command

run_command(main)
