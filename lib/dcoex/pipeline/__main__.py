import os
import sys

from dcoex.pipeline.cli import main

try:
    sys.exit(main())
except BrokenPipeError:  # output piped into e.g. head
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)
