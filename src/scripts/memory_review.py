"""Memory review of a pipeline run: see docs/memory_review.md (``python -m memfit review``)."""
from memfit.__main__ import run_review

run_review()
