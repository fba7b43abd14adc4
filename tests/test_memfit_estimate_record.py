"""MemoryEstimate arithmetic and printing; PeakRecorder against known allocations."""

from __future__ import annotations

import json

import h5py
import numpy as np

from dcoex.h5io import write_attrs
from memfit.allocation import Allocation
from memfit.estimate import MemoryEstimate
from memfit.record import H5_GROUP, PeakRecorder, h5_attrs, sidecar_path, task_sidecar_path, write_sidecar
from memfit.units import GiB, MiB, format_bytes, parse_bytes


def test_units_round_trip():
    assert parse_bytes("4G") == 4 * GiB
    assert parse_bytes("1.5GiB") == int(1.5 * GiB)
    assert parse_bytes("512m") == 512 * MiB
    assert parse_bytes("1024") == 1024
    assert format_bytes(1536 * MiB) == "1.50 GiB"


def test_estimate_total_table_and_dict():
    est = MemoryEstimate("01", {"a": 3 * MiB, "b": 1 * GiB}, {"n": 5})
    assert est.total_bytes == 3 * MiB + GiB
    table = est.table()
    assert table.index(" b ") < table.index(" a ")  # largest first
    assert "total" in table and "1.00 GiB" in table
    again = MemoryEstimate.from_dict(json.loads(json.dumps(est.to_dict())))
    assert again.total_bytes == est.total_bytes
    assert est.scaled(2.0).total_bytes == 2 * est.total_bytes


def test_recorder_sees_a_large_allocation():
    with PeakRecorder(interval_s=0.01) as rec:
        base = rec.sample()
        block = np.ones(300 * MiB // 8)
        rec.sample()
        del block
    assert rec.peak_rss_bytes >= base + 250 * MiB
    assert rec.summary()["wall_s"] >= 0


def test_recorder_warns_once_past_fraction(capsys):
    with PeakRecorder(limit_bytes=1, interval_s=0.01) as rec:
        rec.sample()
        rec.sample()
    err = capsys.readouterr().err
    assert err.count("warning: RSS") == 1 and rec.warned


def test_sidecar_and_attrs(tmp_path):
    out = tmp_path / "x.h5"
    est = MemoryEstimate("00", {"python": 80 * MiB})
    allocation = Allocation(GiB, "test", 0.7, True)
    with PeakRecorder() as rec:
        with h5py.File(out, "w") as f:
            write_attrs(f.require_group(H5_GROUP), h5_attrs("00", est, allocation, rec, batch_size=7))
    path = write_sidecar(out, "00", est, allocation, rec, batch_size=7)
    assert path == sidecar_path(out) == tmp_path / "x.h5.memory.json"
    record = json.loads(path.read_text())
    assert record["estimate_bytes"] == 80 * MiB
    assert record["limit_bytes"] == GiB and record["batch_size"] == 7
    assert record["peak_rss_bytes"] > 10 * MiB
    with h5py.File(out) as f:
        assert f["memfit"].attrs["batch_size"] == 7
        assert f["memfit"].attrs["estimate_bytes"] == 80 * MiB


def test_task_sidecar_path(tmp_path):
    path = task_sidecar_path(tmp_path, "02a", [12, 3, 7], width=5)
    assert path == tmp_path / "memory" / "02a.genes_00003-00012.memory.json"
