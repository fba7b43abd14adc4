"""Chunks deflated in threads are ordinary shuffle+gzip chunks any HDF5 reader decodes."""

from __future__ import annotations

import zlib

import h5py
import numpy as np
import pytest

from dcoex.h5chunks import ChunkEncoder, DirectColumns, ordered_parallel_map, shuffle_bytes, write_chunk


def _reference_shuffle(array: np.ndarray) -> bytes:
    raw = np.ascontiguousarray(array).tobytes()
    size = array.dtype.itemsize
    return b"".join(raw[plane::size] for plane in range(size))


@pytest.mark.parametrize("dtype,high", [(np.int32, 938), (np.int32, 2**20), (np.int32, 100), (np.int16, 900),
                                        (np.uint8, 200), (np.float64, 1)])
@pytest.mark.parametrize("shape", [(50, 149), (1, 3), (0, 5), (70000, 2)])
@pytest.mark.parametrize("strategy", ["planes", "rle", "default"])
def test_encoded_chunk_is_a_zlib_stream_of_the_shuffled_bytes(dtype, high, shape, strategy):
    array = (np.random.default_rng(0).integers(0, high, size=shape) if high > 1
             else np.random.default_rng(0).normal(size=shape)).astype(dtype)
    assert shuffle_bytes(array) == _reference_shuffle(array)
    encoded = ChunkEncoder("gzip", 1, strategy).encode(array)
    assert zlib.decompress(encoded) == _reference_shuffle(array)


def test_h5py_reads_direct_chunks(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.integers(0, 938, size=(6, 40, 7)).astype(np.int32)
    for strategy in ("planes", "rle", "default"):
        encoder = ChunkEncoder("gzip", 1, strategy)
        path = tmp_path / f"{strategy}.h5"
        with h5py.File(path, "w") as f:
            dset = f.create_dataset("x", data.shape, np.int32, chunks=(1, 40, 7), **encoder.dataset_kwargs())
            for g in range(6):
                write_chunk(dset, (g, 0, 0), encoder.encode(data[g]))
        with h5py.File(path) as f:
            np.testing.assert_array_equal(f["x"][()], data)
            assert f["x"].compression == "gzip" and f["x"].shuffle


def test_ordered_parallel_map_keeps_order():
    assert list(ordered_parallel_map(lambda x: x * x, range(50), threads=3, window=4)) == [x * x for x in range(50)]
    assert list(ordered_parallel_map(lambda x: x + 1, range(5), threads=1)) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint8])
def test_direct_columns_store_what_h5py_would_store(tmp_path, dtype):
    """Writes at increasing offsets, gaps and pieces across chunk borders: the file reads back
    exactly as the same writes made through h5py (gaps as 0), and every stored chunk is the one
    HDF5's own shuffle + gzip 4 filter stores; an unfiltered small dataset goes through h5py."""
    rng = np.random.default_rng(5)
    n, chunk = 10_007, 1_000
    data = (rng.normal(size=n) * 100).astype(dtype)
    pieces = [(0, 13), (13, 2_500), (4_000, 4_001), (4_001, 7_777), (9_990, n)]
    paths = {mode: tmp_path / f"{mode}.h5" for mode in ("direct", "h5py")}
    for mode, path in paths.items():
        with h5py.File(path, "w") as f:
            big = f.create_dataset("big", (n,), dtype, chunks=(chunk,), compression="gzip", compression_opts=4,
                                   shuffle=True)
            small = f.create_dataset("small", (50,), dtype)
            if mode == "direct":
                with DirectColumns(threads=2, window=1) as columns:
                    for a, b in pieces:
                        columns.write(big, a, data[a:b])
                    columns.write(small, 5, data[:20])
            else:
                for a, b in pieces:
                    big[a:b] = data[a:b]
                small[5:25] = data[:20]
    with h5py.File(paths["direct"], "r") as d, h5py.File(paths["h5py"], "r") as h:
        expected = np.zeros(n, dtype)
        for a, b in pieces:
            expected[a:b] = data[a:b]
        np.testing.assert_array_equal(d["big"][:], expected)
        np.testing.assert_array_equal(d["small"][:], h["small"][:])
        stored = [d["big"].id.get_chunk_info(i) for i in range(d["big"].id.get_num_chunks())]
        assert sorted(info.chunk_offset[0] for info in stored) == [0, 1000, 2000, 4000, 5000, 6000, 7000, 9000, 10000]
        for info in stored:
            mine = d["big"].id.read_direct_chunk(info.chunk_offset)[1]
            theirs = h["big"].id.read_direct_chunk(info.chunk_offset)[1]
            assert zlib.decompress(mine) == zlib.decompress(theirs)


def test_direct_columns_refuse_going_back(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        ds = f.create_dataset("x", (5_000,), np.float32, chunks=(1_000,), compression="gzip", shuffle=True)
        columns = DirectColumns(threads=1)
        columns.write(ds, 2_500, np.ones(10, np.float32))
        with pytest.raises(ValueError, match="forward"):
            columns.write(ds, 100, np.ones(10, np.float32))
        columns.abandon()
