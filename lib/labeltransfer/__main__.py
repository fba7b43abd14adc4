"""``python -m labeltransfer run|diagnose ...`` (what the submit scripts run on the node)."""
from hpc.cli import run_command
from labeltransfer.cli import main

run_command(main)
