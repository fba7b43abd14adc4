"""qacct parsing on output captured from the test SGE (SoGE 8.1.9) and hand-written variants."""

from __future__ import annotations

from pathlib import Path

import pytest

from memfit.accounting import AccountingError, qacct_tasks
from memfit.accounting.qacct import parse_category, parse_qacct_size, parse_sge_memory

FIXTURES = Path(__file__).parent / "fixtures" / "accounting"
K, M, G = 1024, 1024**2, 1024**3


def records(name: str, **kwargs) -> dict[str, object]:
    return {r.label(): r for r in qacct_tasks((FIXTURES / name).read_text(), **kwargs)}


def naive_field(text: str, job: str, task: str, field: str) -> str:
    """The raw value of ``field`` in the record of job/task: an independent, line-by-line read."""
    blocks = text.split("==============================================================")
    for block in blocks:
        fields = {}
        for line in block.strip().splitlines():
            parts = line.split(None, 1)
            if len(parts) == 2:
                fields[parts[0]] = parts[1].strip()
        if fields.get("jobnumber") == job and fields.get("taskid") == task:
            return fields[field]
    raise KeyError((job, task, field))


def test_captured_records_multi_task_and_plain():
    recs = records("sge_8.1.9_jobs.qacct.txt")
    assert sorted(recs) == sorted(["2", "3", "4", "5", "6_1", "6_2", "6_3", "7", "8", "9", "10", "11"])
    assert {recs[f"6_{t}"].task_id for t in (1, 2, 3)} == {1, 2, 3}
    assert recs["3"].task_id is None and recs["3"].job_id == "3"


def test_captured_maxvmem_and_ru_maxrss_units():
    text = (FIXTURES / "sge_8.1.9_jobs.qacct.txt").read_text()
    recs = records("sge_8.1.9_jobs.qacct.txt")
    # maxvmem "324.602MB" -> 324.602 MiB
    assert naive_field(text, "3", "undefined", "maxvmem") == "324.602MB"
    assert recs["3"].used_bytes == round(324.602 * M) and recs["3"].used_metric == "maxvmem"
    # ru_maxrss "324.309KB" is 324.309 x 1024 KiB (SoGE 8.1.9 prints KiB as if bytes)
    assert naive_field(text, "3", "undefined", "ru_maxrss") == "324.309KB"
    assert recs["3"].max_rss_bytes == round(324.309 * K) * K
    # maxvmem 1.101GB
    assert recs["5"].used_bytes == round(1.101 * G)
    # too short to be sampled: 0.000B -> missing
    assert recs["2"].used_bytes is None and recs["2"].ok


def test_captured_requests_from_category():
    recs = records("sge_8.1.9_jobs.qacct.txt")
    assert recs["3"].requested_bytes == 2 * G  # -l h_vmem=2G
    assert recs["4"].requested_bytes == 600 * M  # -l h_vmem=600M
    assert recs["9"].requested_bytes == 2 * G and recs["9"].cpus == 2  # -l h_vmem=1G -pe smp 2: per slot
    assert recs["2"].requested_bytes is None  # category NONE (the queue default applied)
    assert recs["8"].time_limit_s == 3  # -l h_rt=3


def test_captured_failures():
    recs = records("sge_8.1.9_jobs.qacct.txt")
    killed = recs["11"]  # h_vmem=800M, three processes summing to 1.1 GB: execd SIGKILL
    assert killed.failed_code == 37 and "h_vmem" in killed.failed_text
    assert killed.exit_code == 137 and killed.signal == 9
    assert killed.oom and killed.used_bytes > killed.requested_bytes == 800 * M
    assert killed.state == "FAILED"
    h_rt = recs["8"]  # failed 37 as well, but for h_rt: not memory
    assert h_rt.failed_code == 37 and h_rt.exit_code == 137 and not h_rt.oom and h_rt.state == "TIMEOUT"
    assert recs["10"].state == "CANCELLED" and recs["10"].failed_code == 100  # qdel
    assert recs["4"].exit_code == 1 and recs["4"].state == "FAILED" and not recs["4"].oom  # malloc failed
    assert recs["7"].exit_code == 3 and not recs["7"].oom
    assert records("sge_8.1.9_jobs.qacct.txt", oom_exit_codes=(3,))["7"].oom


def test_handwritten_variants():
    recs = records("sge_variants.handwritten.qacct.txt")
    t1, t2, t3 = recs["5001_1"], recs["5001_2"], recs["5001_3"]
    assert t1.requested_bytes == 4 * G * 4 and t1.cpus == 4  # h_vmem=4G per slot, 4 slots
    assert t1.used_bytes == round(14.25 * G) and t1.elapsed_s == pytest.approx(720.051)
    assert t1.time_limit_s == 7200 and t1.ok
    assert t1.max_rss_bytes == round(3.5 * G) * K
    assert t2.failed_code == 100 and t2.exit_code == 152 and t2.state == "FAILED" and t2.elapsed_s == 175
    assert not t2.oom  # SIGXCPU from s_vmem is not a kill by signal 9
    assert t3.exit_code == 3 and not t3.oom
    small = recs["5002"]
    assert small.requested_bytes == 1_500_000_000  # lower-case g is decimal in SGE
    assert small.used_bytes is None and small.max_rss_bytes is None


@pytest.mark.parametrize("text,expected", [
    ("424.621MB", round(424.621 * M)), ("1.101GB", round(1.101 * G)), ("0.000B", None), ("12345", 12345),
    ("4.430KB", round(4.43 * K)), ("", None),
])
def test_sizes(text, expected):
    assert parse_qacct_size(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("600M", 600 * M), ("2G", 2 * G), ("1.5g", 1_500_000_000), ("500m", 500_000_000), ("1024", 1024),
    ("lots", None),
])
def test_sge_memory(text, expected):
    assert parse_sge_memory(text) == expected


def test_category():
    assert parse_category("-U lab -l h_rt=7200,h_vmem=4G -pe smp 4") == {"h_rt": "7200", "h_vmem": "4G", "pe": "smp 4"}
    assert parse_category("NONE") == {}


def test_error_lines_and_garbage():
    text = (FIXTURES / "sge_8.1.9_jobs.qacct.txt").read_text()
    assert len(qacct_tasks("error: job id 99999 not found\n" + text)) == 12
    with pytest.raises(AccountingError, match="before any"):
        qacct_tasks("jobnumber 4\n")
    with pytest.raises(AccountingError, match="jobnumber"):
        qacct_tasks("==============================================================\nqname all.q\n")
