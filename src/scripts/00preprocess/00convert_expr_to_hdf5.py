from dcoex.stages.convert import main
from dcoex.cli import run_command
run_command(main)
