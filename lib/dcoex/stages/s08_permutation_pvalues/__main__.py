"""``python -m dcoex.stages.s08_permutation_pvalues``: the stage's command line (see cli.py)."""

from dcoex.stages.s08_permutation_pvalues.cli import main
from hpc.cli import run_command

run_command(main)
