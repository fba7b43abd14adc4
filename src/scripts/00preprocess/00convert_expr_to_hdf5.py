from dcoex.stages.s00_convert.cli import main
from hpc.cli import run_command

run_command(main)
