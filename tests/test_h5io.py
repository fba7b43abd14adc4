"""dcoex.h5io: the attribute coercion, the compression policy and hard-linked names, checked
on the HDF5 types h5py reports (not on dcoex's own reading code)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from dcoex.h5io import (
    CHUNK_BYTES,
    GZIP_LEVEL,
    dataset_options,
    filter_options,
    link_dataset,
    plain_attr,
    read_meta,
    write_attrs,
    write_dataset,
)


def _type_class(obj: h5py.HLObject, key: str) -> int:
    return obj.attrs.get_id(key).get_type().get_class()


def test_write_attrs_types(tmp_path):
    values = {
        "flag_true": True, "flag_false": np.bool_(False), "count": np.int32(7), "big": 2**40,
        "ratio": np.float32(0.5), "undefined": float("nan"), "name": "gène", "raw": b"abc",
        "path": Path("/x/y.h5"), "flags": [True, False, True], "sizes": np.arange(3, dtype=np.int16),
        "labels": ["a", "bé"], "skipped": None,
    }
    with h5py.File(tmp_path / "a.h5", "w") as f:
        write_attrs(f, values)
        attrs = f.attrs
        assert "skipped" not in attrs
        for key in ("flag_true", "flag_false", "count", "big", "flags", "sizes"):
            assert _type_class(f, key) == h5py.h5t.INTEGER, key
            assert attrs[key].dtype == np.int64, key
        assert attrs["flag_true"] == 1 and attrs["flag_false"] == 0
        np.testing.assert_array_equal(attrs["flags"], [1, 0, 1])
        for key in ("ratio", "undefined"):
            assert _type_class(f, key) == h5py.h5t.FLOAT and attrs[key].dtype == np.float64
        for key in ("name", "raw", "path", "labels"):
            string_type = f.attrs.get_id(key).get_type()
            assert string_type.get_class() == h5py.h5t.STRING, key
            assert string_type.is_variable_str() and string_type.get_cset() == h5py.h5t.CSET_UTF8, key
        meta = read_meta(f)
    assert meta["name"] == "gène" and meta["raw"] == "abc" and meta["path"] == "/x/y.h5"
    assert meta["labels"] == ["a", "bé"] and meta["flags"] == [1, 0, 1] and meta["big"] == 2**40
    assert np.isnan(meta["undefined"]) and meta["ratio"] == 0.5 and meta["count"] == 7
    assert {type(meta[k]) for k in ("flag_true", "count", "big")} == {int}
    assert plain_attr(True) == 1 and plain_attr(np.float32(0.25)) == 0.25 and plain_attr(None) is None


def test_write_attrs_none_keeps_existing_and_rejects_objects(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        write_attrs(f, {"x": 3})
        write_attrs(f, {"x": None, "y": "new"})
        assert f.attrs["x"] == 3 and f.attrs["y"] == "new"
        write_attrs(f, {"y": "replaced"})
        assert f.attrs["y"] == "replaced"
        with pytest.raises(TypeError, match="dict"):
            write_attrs(f, {"z": {"a": 1}})


def test_dataset_options_policy():
    assert dataset_options((0,), np.float32) == {}
    assert dataset_options((1023,), np.float32) == {}  # under 4 KiB: contiguous, no filter
    big = dataset_options((1_000_000,), np.float64)
    assert big["compression"] == "gzip" and big["compression_opts"] == GZIP_LEVEL and big["shuffle"]
    assert big["chunks"] == (CHUNK_BYTES // 8,)
    rows = dataset_options((50_000, 300), np.float32)
    assert rows["chunks"][1] == 300 and rows["chunks"][0] * 300 * 4 <= CHUNK_BYTES
    assert dataset_options((5000,), np.int32, chunks=(100,))["chunks"] == (100,)
    assert dataset_options((5000,), np.int32, compression="lzf")["compression"] == "lzf"
    assert "compression" not in dataset_options((5000,), np.int32, compression="none")
    assert filter_options("gzip", None)["compression_opts"] == GZIP_LEVEL
    with pytest.raises(ValueError, match="zstd"):
        filter_options("zstd")


def test_write_dataset_and_links(tmp_path):
    values = np.arange(5000, dtype=np.int64)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        ds = write_dataset(f, "edges/pair_index", values)
        assert ds.compression == "gzip" and ds.shuffle and ds.compression_opts == GZIP_LEVEL
        small = write_dataset(f, "edges/r_low", [0.5, 1.5], dtype=np.float32)
        assert small.dtype == np.float32 and small.compression is None and small.chunks is None
        names = write_dataset(f, "gene_names", np.array(["a", "bé"], dtype=object))
        assert h5py.check_string_dtype(names.dtype).encoding == "utf-8"
        link_dataset(f, "significant/indices", "edges/pair_index")
        assert f["significant/indices"].id == f["edges/pair_index"].id  # one object, two names
    with h5py.File(tmp_path / "a.h5", "r") as f:
        np.testing.assert_array_equal(f["significant/indices"][()], values)
        assert [s.decode() for s in f["gene_names"][()]] == ["a", "bé"]
