from dcoex.stages.s02b_bootstrap_edges.cli import main
from hpc.cli import run_command

run_command(main)
