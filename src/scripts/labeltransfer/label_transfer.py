"""Label transfer CLI: ``run`` and ``diagnose`` (see docs/label_transfer.md)."""
from hpc.cli import run_command
from labeltransfer.cli import main

if __name__ == "__main__":
    run_command(main)
