"""hpc.calibration: factors from used/estimate ratios, the file the drivers read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hpc.calibration import (
    CalibrationError,
    build_calibration,
    find_calibration,
    load_calibration,
    stage_factor,
    write_calibration,
)


def test_factor_is_a_high_quantile_of_the_ratios():
    rng = np.random.default_rng(3)
    ratios = rng.uniform(1.5, 2.5, size=40)
    entry = stage_factor(ratios, quantile=0.9)
    assert entry["factor"] == pytest.approx(np.percentile(ratios, 90), abs=1e-4)
    assert entry["n"] == 40
    assert entry["ratio_min"] == pytest.approx(ratios.min(), abs=1e-4)
    assert entry["ratio_max"] == pytest.approx(ratios.max(), abs=1e-4)


def test_factor_bounds_and_bad_ratios():
    assert stage_factor([10.0, 12.0], bounds=(0.5, 4.0))["factor"] == 4.0
    assert stage_factor([0.1, 0.2], bounds=(0.5, 4.0))["factor"] == 0.5
    entry = stage_factor([2.0, float("nan"), -1.0, 0.0, float("inf")])
    assert entry["n"] == 1 and entry["factor"] == 2.0
    with pytest.raises(ValueError):
        stage_factor([float("nan")])


def test_round_trip(tmp_path: Path):
    document = build_calibration({"02a": [1.9, 2.0, 2.1], "03": [], "00": [1.0]}, source="run1")
    assert set(document["stages"]) == {"02a", "00"}  # 03 had no usable ratio
    assert find_calibration(tmp_path) is None
    path = write_calibration(tmp_path / "memfit_calibration.json", document)
    assert find_calibration(tmp_path) == path
    factors = load_calibration(path)
    assert factors == {"02a": pytest.approx(np.quantile([1.9, 2.0, 2.1], 0.95), abs=1e-4), "00": 1.0}
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("content,needle", [
    ("{oops", "not valid JSON"),
    ('{"calibration_version": 1}', "no 'stages'"),
    ('{"calibration_version": 2, "stages": {}}', "calibration_version 2"),
    ('{"calibration_version": 1, "stages": {"02a": {"factor": -1}}}', "positive"),
    ('{"calibration_version": 1, "stages": {"02a": {"factor": "2"}}}', "positive"),
    ('{"calibration_version": 1, "stages": {"02a": 2}}', "positive"),
])
def test_bad_files(tmp_path: Path, content, needle):
    path = tmp_path / "memfit_calibration.json"
    path.write_text(content)
    with pytest.raises(CalibrationError, match=needle) as info:
        load_calibration(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path):
    with pytest.raises(CalibrationError, match="not found"):
        load_calibration(tmp_path / "nope.json")
    json.dumps(build_calibration({}))  # an empty document is still valid JSON
