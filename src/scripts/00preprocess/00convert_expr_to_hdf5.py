from dcoex.stages.s00_convert.cli import main
from dcoex.cli import run_command
run_command(main)
