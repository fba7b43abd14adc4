"""Stage 03 shim: see dcoex.stages.network."""
from dcoex.stages.network import main
from dcoex.cli import run_command

run_command(main)
