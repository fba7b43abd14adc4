"""dcoex: bootstrap differential co-expression, memory-safe on SGE and SLURM."""

__version__ = "0.1.0"
