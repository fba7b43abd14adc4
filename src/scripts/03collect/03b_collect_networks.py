"""Stage 03b shim: see dcoex.stages.s03b_collect."""
from dcoex.stages.s03b_collect.cli import main
from hpc.cli import run_command

run_command(main)
