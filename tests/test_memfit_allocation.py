"""memfit.allocation: each source of the binding limit, precedence and safety factors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from memfit.allocation import (
    SAFETY_SCHEDULER,
    SAFETY_SHARED,
    VIRTUAL_OVERHEAD_BYTES,
    cgroup_limit,
    detect_allocation,
)
from memfit.units import GiB, MiB

NO_CGROUP = "0::/\n"


def detect(env, tmp_path, **kw):
    kw.setdefault("cgroup_root", tmp_path / "no-cgroup")
    kw.setdefault("proc_cgroup", NO_CGROUP)
    kw.setdefault("rlimit_as", -1)
    return detect_allocation(environ=env, **kw)


def test_slurm_mem_per_node_wins_over_per_cpu(tmp_path):
    alloc = detect({"SLURM_MEM_PER_NODE": "4096", "SLURM_MEM_PER_CPU": "100", "SLURM_CPUS_ON_NODE": "2"}, tmp_path)
    assert alloc.limit_bytes == 4096 * MiB
    assert alloc.source == "slurm:SLURM_MEM_PER_NODE"
    assert alloc.safety == SAFETY_SCHEDULER and alloc.under_scheduler


@pytest.mark.parametrize(
    "cpu_var, value, expected_cpus",
    [
        ("SLURM_CPUS_ON_NODE", "4", 4),
        ("SLURM_CPUS_PER_TASK", "3", 3),
        ("SLURM_JOB_CPUS_PER_NODE", "2(x3)", 2),
    ],
)
def test_slurm_mem_per_cpu_times_cpus(tmp_path, cpu_var, value, expected_cpus):
    alloc = detect({"SLURM_MEM_PER_CPU": "1000", cpu_var: value}, tmp_path)
    assert alloc.limit_bytes == 1000 * expected_cpus * MiB
    assert alloc.source == f"slurm:SLURM_MEM_PER_CPU*{cpu_var}"


def test_slurm_cpus_on_node_precedes_cpus_per_task(tmp_path):
    env = {"SLURM_MEM_PER_CPU": "1000", "SLURM_CPUS_ON_NODE": "2", "SLURM_CPUS_PER_TASK": "8"}
    assert detect(env, tmp_path).limit_bytes == 2000 * MiB


def test_sge_rlimit_as_is_virtual(tmp_path):
    env = {"JOB_ID": "17", "SGE_TASK_ID": "undefined"}
    alloc = detect(env, tmp_path, rlimit_as=2 * GiB)
    assert alloc.source == "sge:RLIMIT_AS"
    assert alloc.limit_bytes == 2 * GiB
    assert alloc.limits_virtual
    assert alloc.usable_bytes == int(2 * GiB * SAFETY_SCHEDULER) - VIRTUAL_OVERHEAD_BYTES


def test_sge_rlimit_from_setrlimit_in_a_subprocess(tmp_path):
    """A real RLIMIT_AS set in a child process is found without being passed in."""
    script = textwrap.dedent(
        """
        import json, resource
        resource.setrlimit(resource.RLIMIT_AS, (3 * 1024**3, 3 * 1024**3))
        from memfit.allocation import detect_allocation
        a = detect_allocation(environ={"JOB_ID": "5", "SGE_TASK_ID": "2"},
                              cgroup_root="/nonexistent", proc_cgroup="0::/\\n")
        print(json.dumps(a.to_dict()))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["limit_bytes"] == 3 * 1024**3
    assert result["source"] == "sge:RLIMIT_AS"
    assert result["limits_virtual"] is True


def test_rlimit_without_sge_job_is_ignored(tmp_path):
    alloc = detect({}, tmp_path, rlimit_as=2 * GiB)
    assert alloc.source == "psutil:available"


def write_cgroup(root, rel, name, value):
    directory = root.joinpath(*[p for p in rel.strip("/").split("/") if p])
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(value + "\n")


def test_cgroup_v2_memory_max_smallest_ancestor(tmp_path):
    root = tmp_path / "cg"
    write_cgroup(root, "/user.slice/job", "memory.max", str(3 * GiB))
    write_cgroup(root, "/user.slice", "memory.max", str(2 * GiB))
    write_cgroup(root, "/", "memory.max", "max")
    alloc = detect({}, tmp_path, cgroup_root=root, proc_cgroup="0::/user.slice/job\n")
    assert alloc.limit_bytes == 2 * GiB
    assert alloc.source.startswith("cgroup2:") and alloc.source.endswith("user.slice/memory.max")
    assert alloc.safety == SAFETY_SCHEDULER


def test_cgroup_v2_max_means_unlimited(tmp_path):
    root = tmp_path / "cg"
    write_cgroup(root, "/a", "memory.max", "max")
    assert cgroup_limit(root, "0::/a\n") is None


def test_cgroup_v1_limit_in_bytes(tmp_path):
    root = tmp_path / "cg"
    write_cgroup(root, "/memory/slurm/uid_0/job_5", "memory.limit_in_bytes", str(1536 * MiB))
    write_cgroup(root, "/memory", "memory.limit_in_bytes", "9223372036854771712")
    proc = "4:memory:/slurm/uid_0/job_5\n0::/\n"
    alloc = detect({}, tmp_path, cgroup_root=root, proc_cgroup=proc)
    assert alloc.limit_bytes == 1536 * MiB
    assert alloc.source.startswith("cgroup1:")


def test_binding_limit_is_the_smallest(tmp_path):
    root = tmp_path / "cg"
    write_cgroup(root, "/job", "memory.max", str(1 * GiB))
    alloc = detect({"SLURM_MEM_PER_NODE": "4096"}, tmp_path, cgroup_root=root, proc_cgroup="0::/job\n")
    assert alloc.limit_bytes == 1 * GiB and alloc.source.startswith("cgroup2:")


def test_psutil_fallback_is_shared_node(tmp_path):
    alloc = detect({}, tmp_path)
    assert alloc.source == "psutil:available"
    assert alloc.safety == SAFETY_SHARED and not alloc.under_scheduler
    assert alloc.limit_bytes > 0


def test_safety_overrides(tmp_path):
    env = {"SLURM_MEM_PER_NODE": "1000", "MEMFIT_SAFETY": "0.5"}
    assert detect(env, tmp_path).safety == 0.5
    assert detect(env, tmp_path, safety=0.9).safety == 0.9
    with pytest.raises(ValueError):
        detect({}, tmp_path, safety=1.5)


def test_limit_override_env(tmp_path):
    alloc = detect({"MEMFIT_MEM_LIMIT": "512M"}, tmp_path)
    assert alloc.limit_bytes == 512 * MiB
    assert alloc.source == "override:MEMFIT_MEM_LIMIT"
    assert alloc.usable_bytes == int(512 * MiB * SAFETY_SCHEDULER)
