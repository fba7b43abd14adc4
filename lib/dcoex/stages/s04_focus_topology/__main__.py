"""``python -m dcoex.stages.s04_focus_topology``: the stage's command line (see cli.py)."""

from dcoex.stages.s04_focus_topology.cli import main
from hpc.cli import run_command

run_command(main)
