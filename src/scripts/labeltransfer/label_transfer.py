"""Label transfer CLI: ``run`` and ``diagnose`` (see docs/label_transfer.md)."""
from labeltransfer.cli import main
from hpc.cli import run_command

if __name__ == "__main__":
    run_command(main)
