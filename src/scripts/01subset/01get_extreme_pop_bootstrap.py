from dcoex.stages.s01_bootstrap_indices.cli import main
from hpc.cli import run_command

run_command(main)
