import sys

from dcoex.pipeline.cli import main

sys.exit(main())
