"""Stage implementations: one module per pipeline stage, each with a click ``main``."""
