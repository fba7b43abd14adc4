"""Chunks deflated in threads are ordinary shuffle+gzip chunks any HDF5 reader decodes."""

from __future__ import annotations

import zlib

import h5py
import numpy as np
import pytest

from dcoex.h5chunks import ChunkEncoder, ordered_parallel_map, shuffle_bytes, write_chunk


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
