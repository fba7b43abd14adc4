"""The co-expression pipeline imports nothing of the label-transfer extra.

`scripts/demo.sh` installs only the core dependencies (`scripts/setup.sh --core`: no
PyTorch, scvi-tools or XGBoost), so the driver, every stage and memfit must import without
them. Each check runs in a fresh interpreter and lists the heavy modules found in
``sys.modules`` after importing every module of the packages the pipeline runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib"
# the label-transfer extra and what it pulls in
HEAVY = ("torch", "scvi", "xgboost", "scanpy", "anndata", "sklearn", "lightning", "pyro", "jax")
# packages the co-expression pipeline runs (hpc: scheduler adapters, when present)
CORE_PACKAGES = ("dcoex", "memfit", "hpc")

PROBE = """
import importlib, json, sys
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
print(json.dumps(sorted(k for k in json.loads(sys.argv[2]) if k in sys.modules)))
"""


def core_modules() -> list[str]:
    """Every importable module under lib/{dcoex,memfit,hpc} except ``__main__`` files."""
    names = []
    for package in CORE_PACKAGES:
        root = LIB / package
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*.py")):
            if path.name == "__main__.py":
                continue
            parts = path.relative_to(LIB).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def heavy_modules_after_import(modules: list[str], *, extra_path: Path | None = None) -> list[str]:
    """The HEAVY modules present in a fresh interpreter after importing ``modules``."""
    paths = [str(LIB)] + ([str(extra_path)] if extra_path else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(modules), json.dumps(HEAVY)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_core_module_list_covers_the_driver_and_every_stage():
    names = set(core_modules())
    stage_clis = {f"dcoex.stages.{p.parent.name}.cli" for p in (LIB / "dcoex" / "stages").glob("s*/cli.py")}
    assert len(stage_clis) >= 6
    assert stage_clis <= names
    assert {"dcoex.pipeline", "dcoex.pipeline.cli", "dcoex.pipeline.task", "memfit.review"} <= names


def test_pipeline_imports_no_label_transfer_dependency():
    assert heavy_modules_after_import(core_modules()) == []


def test_probe_detects_a_heavy_import(tmp_path):
    # control: a module that loads one of the HEAVY names is reported
    (tmp_path / "pulls_heavy.py").write_text("import sys, types\nsys.modules['torch'] = types.ModuleType('torch')\n")
    assert heavy_modules_after_import(["dcoex.pipeline", "pulls_heavy"], extra_path=tmp_path) == ["torch"]
