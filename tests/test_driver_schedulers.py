"""Scheduler adaptors' parsing (memory kills from accounting) and the cluster-test gate, with fake commands."""

from __future__ import annotations

import os

import pytest

import cluster_util
from dcoex.pipeline.schedulers import Sge, Slurm


def _fake(tmp_path, monkeypatch, name: str, output: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\n")
    (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


@pytest.mark.parametrize("text,killed", [
    ("failed       37  : qmaster enforced h_rt, h_cpu, or h_vmem limit\nexit_status  137 (Killed)", True),
    ("failed       0    \nexit_status  137", True),
    ("failed       0    \nexit_status  1", False),
])
def test_sge_memory_kill_from_qacct(tmp_path, monkeypatch, text, killed):
    _fake(tmp_path, monkeypatch, "qacct", text)
    assert Sge().killed_for_memory("12", 3, "") is killed


@pytest.mark.parametrize("text,killed", [("OUT_OF_MEMORY|0:125", True), ("FAILED|1:0", False)])
def test_slurm_memory_kill_from_sacct(tmp_path, monkeypatch, text, killed):
    _fake(tmp_path, monkeypatch, "sacct", text)
    assert Slurm().killed_for_memory("12", 3, "") is killed


def test_memory_kill_from_log_text():
    log = "slurmstepd-vm: error: StepId=10.batch exceeded memory limit (230694912 > 209715200), being killed"
    assert Slurm(dry_run=True).killed_for_memory("10", None, log)
    assert Sge(dry_run=True).killed_for_memory("10", None, "numpy._core._exceptions._ArrayMemoryError: ...\nMemoryError")


def test_array_limits_are_read_from_the_scheduler(tmp_path, monkeypatch):
    _fake(tmp_path, monkeypatch, "scontrol", "MaxArraySize            = 501\nMaxJobCount = 10000")
    _fake(tmp_path, monkeypatch, "qconf", "max_aj_instances 2000\nmax_aj_tasks 300")
    assert Slurm().array_limit() == 500  # task ids must be < MaxArraySize
    assert Sge().array_limit() == 300


def test_cluster_gate_skips_with_reason_or_fails_under_ci(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster_util, "STATUS_DIR", tmp_path)
    (tmp_path / "slurm.status").write_text("cannot start test clusters: not root\n")
    monkeypatch.setattr(cluster_util.shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not root"):
        cluster_util.require_cluster("slurm")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        cluster_util.require_cluster("slurm")
