"""``OUT_DIR/run_manifest.json``: what was planned and submitted, updated on every retry.

Finaliser jobs of different stages may update it at the same time: every change is a
read-modify-write under an exclusive ``flock`` on ``OUT_DIR/.dcoex/manifest.lock``,
written under a temporary name and renamed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Iterator

MANIFEST = "run_manifest.json"
MANIFEST_VERSION = 1
STATE_DIR = ".dcoex"


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def state_dir(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / STATE_DIR


def manifest_path(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / MANIFEST


def read_manifest(out_dir: str | os.PathLike) -> dict:
    return json.loads(manifest_path(out_dir).read_text())


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def locked_manifest(out_dir: str | os.PathLike) -> Iterator[dict]:
    """Yield the manifest for changes; it is written back when the block ends without error."""
    lock_file = state_dir(out_dir) / "manifest.lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = read_manifest(out_dir) if manifest_path(out_dir).exists() else {}
            yield data
            write_json_atomic(manifest_path(out_dir), data)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def latest_attempt(stage_entry: dict, task: int | None) -> dict | None:
    """The last attempt of a stage that covers ``task`` (any attempt if ``task`` is None)."""
    for attempt in reversed(stage_entry.get("attempts", [])):
        tasks = attempt.get("task_list")
        if task is None or tasks is None or task in tasks:
            return attempt
    return None
