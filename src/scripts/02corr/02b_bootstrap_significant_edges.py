from dcoex.stages.bootstrap_edges import main
from dcoex.cli import run_command
run_command(main)
