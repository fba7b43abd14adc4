"""Test-run layout for parallel workers (pytest-xdist, ``--dist loadgroup``: scripts/test.sh).

Every test module is one group, so a module's fixtures are made once. The modules that use the
test clusters (they import ``require_cluster`` or a cluster fixture from cluster_util) share one
group, "cluster": one worker runs them one after the other, as without workers, so no two of
them ever wait on the two-slot SLURM and SGE at once, while the other workers run the rest.
"""

from __future__ import annotations

import pytest

CLUSTER_NAMES = ("require_cluster", "slurm_cluster", "sge_cluster")


def _group(item: pytest.Item) -> str:
    module = getattr(item, "module", None)
    if item.get_closest_marker("cluster") or any(hasattr(module, name) for name in CLUSTER_NAMES):
        return "cluster"
    return item.nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(item)))
