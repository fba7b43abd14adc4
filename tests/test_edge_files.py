"""Per-gene file helpers of dcoex.edge_files: gene names, q tables."""

from __future__ import annotations

import h5py
import numpy as np

from dcoex.edge_files import q_from_table, write_gene_names
from dcoex.h5io import write_dataset
from dcoex.stages.s03_network.io import read_gene_names


def test_gene_names_round_trip_and_size(tmp_path):
    """Fixed-length UTF-8 names read back as written (multi-byte ones too) and take far less
    space than the variable-length strings they replace."""
    names = [f"G{i:05d}" for i in range(12_625)] + ["bé", "ü-γ", ""]
    with h5py.File(tmp_path / "fixed.h5", "w") as f:
        write_gene_names(f, names)
        assert h5py.check_string_dtype(f["gene_names"].dtype).encoding == "utf-8"
    with h5py.File(tmp_path / "vlen.h5", "w") as f:
        write_dataset(f, "gene_names", np.array(names, dtype=object))
    assert read_gene_names(tmp_path / "fixed.h5") == names == read_gene_names(tmp_path / "vlen.h5")
    fixed, vlen = ((tmp_path / n).stat().st_size for n in ("fixed.h5", "vlen.h5"))
    assert fixed < vlen / 5, (fixed, vlen)


def test_q_from_table_is_the_last_entry_at_or_below():
    """The q of a statistic is that of the last table entry <= it (naive loop), NaN below."""
    rng = np.random.default_rng(3)
    stat = np.sort(rng.uniform(0.2, 1.0, 50))
    q = np.sort(rng.uniform(0, 0.05, 50))[::-1]
    values = np.concatenate([rng.uniform(0, 1, 500), stat])
    want = [q[max(i for i in range(stat.size) if stat[i] <= v)] if v >= stat[0] else np.nan for v in values]
    np.testing.assert_array_equal(q_from_table((stat, q), values), want)
    assert np.isnan(q_from_table((np.empty(0), np.empty(0)), values)).all()
