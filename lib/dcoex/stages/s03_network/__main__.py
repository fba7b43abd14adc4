"""``python -m dcoex.stages.s03_network``: the stage's command line (see cli.py)."""

from dcoex.stages.s03_network.cli import main
from hpc.cli import run_command

run_command(main)
