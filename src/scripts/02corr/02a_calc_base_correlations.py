from dcoex.stages.s02a_base_correlations.cli import main
from dcoex.cli import run_command
run_command(main)
