"""Stage 03b shim: see dcoex.stages.collect."""
from dcoex.stages.collect import main
from dcoex.cli import run_command

run_command(main)
