"""Test-run layout for parallel workers (pytest-xdist: scripts/test.sh).

Every test module is one scheduling unit, so a module's fixtures are made once. The modules
that use the test clusters (they name ``require_cluster`` or a cluster fixture of cluster_util,
or the ``cluster`` mark) form one unit together: one worker runs them one after the other, as
without workers, so no two of them ever wait on the two-slot SLURM and SGE at once, while the
other worker runs the rest. (A scheduler of our own: xdist's ``loadgroup`` marks do not reach
its scheduling under pytest 9, whose node ids no longer carry xdist's group suffix.)
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

CLUSTER_NAMES = ("require_cluster", "slurm_cluster", "sge_cluster", "mark.cluster")


@functools.cache
def _uses_clusters(path: Path) -> bool:
    try:
        text = path.read_text()
    except OSError:
        return False
    return any(name in text for name in CLUSTER_NAMES)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        """Scope of a test: "cluster" for the cluster modules, else its module."""

        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "cluster" if _uses_clusters(config.rootpath / module) else module

    return ModuleScheduling(config, log)
