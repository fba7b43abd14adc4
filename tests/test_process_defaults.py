"""Importing dcoex sets its process defaults before numpy and OpenBLAS read them, and a value
the user exported wins (lib/dcoex/__init__.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib"
DEFAULTS = {"NUMPY_MADVISE_HUGEPAGE": "0", "OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}
PROBE = """
import json, os, sys
import dcoex
assert "numpy" not in sys.modules, "dcoex imported numpy before setting its defaults"
print(json.dumps({name: os.environ.get(name) for name in json.loads(sys.argv[1])}))
"""


def _probe(env: dict[str, str]) -> dict[str, str]:
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(list(DEFAULTS))], env=env, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout)


def test_defaults_are_set_before_numpy_loads() -> None:
    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS}
    env["PYTHONPATH"] = str(LIB)
    assert _probe(env) == DEFAULTS


def test_a_value_the_user_exported_wins() -> None:
    env = {**os.environ, "PYTHONPATH": str(LIB), "OPENBLAS_THREAD_TIMEOUT": "20", "OMP_WAIT_POLICY": "ACTIVE"}
    got = _probe(env)
    assert got["OPENBLAS_THREAD_TIMEOUT"] == "20"
    assert got["OMP_WAIT_POLICY"] == "ACTIVE"
