from dcoex.stages.bootstrap_indices import main
from dcoex.cli import run_command
run_command(main)
