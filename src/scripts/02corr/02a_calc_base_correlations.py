from dcoex.stages.s02a_base_correlations.cli import main
from hpc.cli import run_command

run_command(main)
