"""``python -m dcoex.stages.s07_permutation_null``: the stage's command line (see cli.py)."""

from dcoex.stages.s07_permutation_null.cli import main
from hpc.cli import run_command

run_command(main)
