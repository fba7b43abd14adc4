"""Stage 03 shim: see dcoex.stages.s03_network."""
from dcoex.stages.s03_network.cli import main
from hpc.cli import run_command

run_command(main)
