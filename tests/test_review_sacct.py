"""sacct parsing on output captured from the test SLURM (22.05) and hand-written older forms."""

from __future__ import annotations

from pathlib import Path

import pytest

from memfit.accounting import AccountingError, expand_task_range, sacct_tasks
from memfit.accounting.sacct import parse_duration, parse_sacct_size

FIXTURES = Path(__file__).parent / "fixtures" / "accounting"
K, M, G, T = 1024, 1024**2, 1024**3, 1024**4


def records(name: str, **kwargs) -> dict[str, object]:
    return {r.label(): r for r in sacct_tasks((FIXTURES / name).read_text(), **kwargs)}


def test_captured_units_k_jobs_and_steps():
    recs = records("slurm_22.05_jobs_unitsK.sacct.txt")
    assert sorted(recs) == sorted(["2", "3", "4", "5_1", "5_2", "5_3", "6", "7", "8", "9", "10"])
    # job 3: --mem=600M; batch step MaxRSS 333572K, MaxVMSize 448752K; 4 s
    job3 = recs["3"]
    assert job3.requested_bytes == 600 * M
    assert job3.used_bytes == 333572 * K and job3.used_metric == "MaxRSS"
    assert job3.max_vmem_bytes == 448752 * K
    assert job3.elapsed_s == 4 and job3.ok and not job3.oom
    # very short job: no MaxRSS at all
    assert recs["2"].used_bytes is None and recs["2"].ok


def test_captured_oom_kill_without_cgroups():
    """--mem=200M, killed by OverMemoryKill: FAILED 0:9 / 'CANCELLED by 0', MaxRSS above ReqMem."""
    job4 = records("slurm_22.05_jobs_unitsK.sacct.txt")["4"]
    assert job4.state == "FAILED" and job4.signal == 9 and job4.exit_code == 0
    assert job4.steps[0]["state"] == "CANCELLED"
    assert job4.requested_bytes == 200 * M and job4.used_bytes == 231300 * K
    assert job4.oom and "signal 9" in job4.oom_reason
    assert not job4.ok


def test_captured_other_states():
    recs = records("slurm_22.05_jobs_unitsK.sacct.txt")
    assert recs["6"].state == "FAILED" and recs["6"].exit_code == 3 and not recs["6"].oom
    assert recs["8"].state == "CANCELLED" and recs["8"].used_bytes is None  # cancelled while pending
    assert recs["9"].state == "TIMEOUT" and recs["9"].elapsed_s == 95 and recs["9"].time_limit_s == 60
    assert not recs["9"].oom


def test_exit_3_is_oom_only_when_asked():
    """memfit stages exit 3 when out of memory; other jobs' exit 3 means nothing."""
    assert not records("slurm_22.05_jobs_unitsK.sacct.txt")["6"].oom
    job6 = records("slurm_22.05_jobs_unitsK.sacct.txt", oom_exit_codes=(3,))["6"]
    assert job6.oom and "exit code 3" in job6.oom_reason


def test_captured_srun_step_and_per_cpu_and_array():
    recs = records("slurm_22.05_jobs_unitsK.sacct.txt")
    # the srun step 7.0 did the work (178380K), the batch shell only 10628K
    assert recs["7"].used_bytes == 178380 * K
    assert {s["step"] for s in recs["7"].steps} == {"batch", "0"}
    # --mem-per-cpu=150M -c 2: 22.05 prints the 300M total, no suffix
    assert recs["10"].requested_bytes == 300 * M and recs["10"].cpus == 2
    # array tasks keep their array job id, whatever JobIDRaw says
    assert [recs[f"5_{t}"].task_id for t in (1, 2, 3)] == [1, 2, 3]
    assert {recs[f"5_{t}"].job_id for t in (1, 2, 3)} == {"5"}
    assert [recs[f"5_{t}"].used_bytes for t in (1, 2, 3)] == [108552 * K, 190488 * K, 272428 * K]


@pytest.mark.parametrize("name,tolerance", [
    ("slurm_22.05_jobs_unitsM.sacct.txt", 0.01 * M),
    ("slurm_22.05_jobs_nounits.sacct.txt", 1),
    ("slurm_22.05_jobs_unitsG.sacct.txt", 0.01 * G),
])
def test_units_agree_with_kib_output(name, tolerance):
    """The same jobs printed with --units=M / G / none parse to the same bytes (within print precision)."""
    reference = records("slurm_22.05_jobs_unitsK.sacct.txt")
    other = records(name)
    assert other
    for label, rec in other.items():
        ref = reference[label]
        for attr in ("requested_bytes", "used_bytes", "max_vmem_bytes"):
            a, b = getattr(rec, attr), getattr(ref, attr)
            assert (a is None) == (b is None), (label, attr)
            if a is not None:
                assert abs(a - b) <= tolerance, (label, attr, a, b)


def test_pending_array_ranges():
    pending = records("slurm_22.05_pending_only.sacct.txt")
    assert set(pending) == {"13_[1-9]", "14_[1-6%1]"}
    assert pending["13_[1-9]"].state == "PENDING" and not pending["13_[1-9]"].finished
    assert expand_task_range(pending["14_[1-6%1]"].pending_tasks) == [1, 2, 3, 4, 5, 6]
    later = records("slurm_22.05_pending_arrays.sacct.txt")
    assert [later[f"13_{t}"].ok for t in range(1, 9)] == [True] * 8
    assert "13_[1-9]" in later


def test_handwritten_old_suffixes_and_states():
    recs = records("slurm_old_suffixes.handwritten.sacct.txt")
    oom = recs["1001"]
    assert oom.requested_bytes == 4000 * M  # 4000Mn, one node
    assert oom.state == "OUT_OF_MEMORY" and oom.oom and oom.signal == 125
    assert oom.used_bytes == round(4095.88 * M)  # the batch step; extern is smaller
    task1 = recs["1002_1"]
    assert task1.requested_bytes == 2000 * M * 4  # 2000Mc x 4 CPUs
    assert task1.used_bytes == round(5.91 * G) and task1.ok
    assert recs["1002_2"].state == "CANCELLED" and recs["1002_2"].state_raw == "CANCELLED by 1234"
    assert recs["1002_3"].state == "TIMEOUT" and recs["1002_3"].used_bytes == 1536000 * K
    assert recs["1002_4"].state == "RUNNING" and not recs["1002_4"].finished
    assert expand_task_range(recs["1002_[5-9]"].pending_tasks) == [5, 6, 7, 8, 9]
    assert recs["1003"].requested_bytes == 2 * G  # 1Gn x 2 nodes
    assert recs["1003"].used_bytes is None
    assert recs["1004"].used_bytes == round(1.02 * T)  # the largest step, in T
    assert recs["1004"].elapsed_s == 86400 + 2 * 3600 + 3 * 60 + 4
    assert recs["1005"].used_bytes == 204800  # plain bytes
    assert recs["1005"].exit_code == 1 and recs["1005"].state == "FAILED"
    assert recs["1006+0"].used_bytes == 900 * M and recs["1006+1"].requested_bytes == 2000 * M
    assert recs["1007"].state == "NODE_FAIL" and not recs["1007"].ok


@pytest.mark.parametrize("text,expected", [
    ("525.66M", (round(525.66 * M), "")), ("333572K", (333572 * K, "")), ("0.59G", (round(0.59 * G), "")),
    ("2T", (2 * T, "")), ("4000Mn", (4000 * M, "n")), ("4000Mc", (4000 * M, "c")), ("", (None, "")),
    ("0", (None, "")), ("1024", (1024, "")), (".5G", (G // 2, "")),
])
def test_sizes(text, expected):
    assert parse_sacct_size(text) == expected


@pytest.mark.parametrize("text,seconds", [
    ("00:00:04", 4), ("1-02:03:04", 93784), ("05:06.500", 306.5), ("UNLIMITED", None), ("", None), ("61", 61),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_lower_case_p_trailing_separator():
    text = "JobID|State|ExitCode|ReqMem|MaxRSS|\n42|COMPLETED|0:0|1G||\n42.batch|COMPLETED|0:0||100M|\n"
    (rec,) = sacct_tasks(text)
    assert rec.requested_bytes == G and rec.used_bytes == 100 * M


def test_bad_output_is_an_accounting_error():
    with pytest.raises(AccountingError, match="header"):
        sacct_tasks("42|COMPLETED|0:0\n")
    with pytest.raises(AccountingError, match="line 2"):
        sacct_tasks("JobID|State\n42|COMPLETED|extra|fields\n")
    with pytest.raises(AccountingError, match="not understood"):
        sacct_tasks("JobID|State\nabc|COMPLETED\n")
    assert sacct_tasks("") == []
    assert sacct_tasks("JobID|State|MaxRSS\n") == []
