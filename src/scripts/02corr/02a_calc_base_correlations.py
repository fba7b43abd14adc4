from dcoex.stages.base_correlations import main
from dcoex.cli import run_command
run_command(main)
