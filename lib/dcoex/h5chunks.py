"""Compress HDF5 chunks in worker threads and write them with ``write_direct_chunk``.

HDF5 runs its filters in the writing thread, one chunk at a time. For big, write-bound
outputs (stage 01: 10 GB of int32 at production shape) we apply the same built-in
filters ourselves — byte shuffle, then deflate — in a thread pool (zlib releases the
GIL) and hand HDF5 the finished bytes. The file is an ordinary shuffle+gzip dataset:
any HDF5 reader decodes it without plugins.

Deflate strategies for the shuffled bytes (all produce one standard zlib stream):

- ``"planes"`` (default): the stream is assembled plane by plane. Byte plane 0 goes into
  *stored* deflate blocks (the low bytes of sample indices are near-uniform: deflate
  saves < 5 % on them at most of the cost), plane 1 is Huffman-coded only (few distinct
  values), planes 2.. use run-length matching (zeros). 3-4x faster than ``"rle"`` for
  about 8 % more bytes on stage-01 indices;
- ``"rle"``: zlib Z_RLE over the whole chunk (2x faster than level-1 deflate, slightly
  smaller than gzip level 4 on shuffled small integers);
- ``"default"``: zlib's normal strategy at the given level (the established choice).
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import h5py
import numpy as np

from dcoex.h5io import filter_options

T = TypeVar("T")
R = TypeVar("R")

STRATEGIES = {"planes": None, "rle": zlib.Z_RLE, "default": zlib.Z_DEFAULT_STRATEGY}
#: Largest payload of one stored deflate block (bytes).
_STORED_MAX = 65535
#: zlib header: deflate, 32 KiB window, "fastest" flag; 0x7801 % 31 == 0.
_ZLIB_HEADER = b"\x78\x01"


def shuffle_bytes(array: np.ndarray) -> bytes:
    """HDF5's shuffle filter: byte plane 0 of every element, then plane 1, ... (C order)."""
    itemsize = array.dtype.itemsize
    flat = np.ascontiguousarray(array).view(np.uint8).reshape(-1, itemsize)
    return flat.T.tobytes()


class ChunkEncoder:
    """Encode an array into the bytes HDF5 stores for one chunk of a dataset.

    ``compression``: "gzip" (shuffle + deflate at ``level`` with zlib ``strategy``),
    "none" (raw bytes). The dataset must be created with ``dataset_kwargs()``.
    """

    def __init__(self, compression: str = "gzip", level: int = 1, strategy: str = "planes") -> None:
        if compression not in ("gzip", "none"):
            raise ValueError(f"direct chunk writing supports gzip or none, not {compression!r}")
        self.compression = compression
        self.level = int(level)
        self.strategy = STRATEGIES[strategy]

    def dataset_kwargs(self) -> dict:
        """h5py ``create_dataset`` filter arguments matching the encoded bytes."""
        return filter_options(self.compression, self.level)

    def encode(self, array: np.ndarray) -> bytes:
        """The stored bytes of one chunk holding ``array`` (little-endian, C order)."""
        if self.compression == "none":
            return np.ascontiguousarray(array).tobytes()
        shuffled = shuffle_bytes(array)
        if self.strategy is None:
            return deflate_planes(shuffled, array.dtype.itemsize, self.level)
        compressor = zlib.compressobj(self.level, zlib.DEFLATED, 15, 8, self.strategy)
        return compressor.compress(shuffled) + compressor.flush()


def deflate_planes(shuffled: bytes, itemsize: int, level: int = 1) -> bytes:
    """One zlib stream of shuffled bytes: plane 0 stored, plane 1 Huffman-only, rest RLE."""
    plane = len(shuffled) // itemsize
    view = memoryview(shuffled)
    parts = [_ZLIB_HEADER]
    first = view[:plane] if itemsize > 1 else view
    for start in range(0, len(first), _STORED_MAX):
        block = first[start : start + _STORED_MAX]
        parts.append(struct.pack("<BHH", 0, len(block), len(block) ^ 0xFFFF))
        parts.append(block)
    if itemsize > 1:
        huffman = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_HUFFMAN_ONLY)
        parts.append(huffman.compress(view[plane : 2 * plane]))
        parts.append(huffman.flush(zlib.Z_SYNC_FLUSH))
    rest = view[2 * plane :] if itemsize > 1 else view[:0]
    if len(rest) and not np.frombuffer(rest, dtype=np.uint8).any():
        parts.append(_zero_segment(len(rest), level))
        checksum = _adler32_zeros(zlib.adler32(view[: 2 * plane]), len(rest))
    else:
        runs = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_RLE)
        parts.append(runs.compress(rest))
        parts.append(runs.flush())
        checksum = zlib.adler32(shuffled)
    parts.append(struct.pack(">I", checksum))
    return b"".join(parts)


@functools.lru_cache(maxsize=8)
def _zero_segment(length: int, level: int) -> bytes:
    """Final raw-deflate (Z_RLE) segment of ``length`` zero bytes (cached: planes of zeros
    recur in every chunk of a dataset)."""
    runs = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_RLE)
    return runs.compress(bytes(length)) + runs.flush()


def _adler32_zeros(adler: int, length: int) -> int:
    """Adler-32 after appending ``length`` zero bytes: s1 is unchanged, s2 += length·s1."""
    s1, s2 = adler & 0xFFFF, adler >> 16
    return (((s2 + length * s1) % 65521) << 16) | s1


def ordered_parallel_map(
    function: Callable[[T], R], items: Iterable[T], threads: int, window: int | None = None
) -> Iterator[R]:
    """``map(function, items)`` on ``threads`` threads, in order, with at most ``window``
    results in flight (bounds memory). ``threads <= 1`` runs inline."""
    if threads <= 1:
        for item in items:
            yield function(item)
        return
    window = window or 2 * threads
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dcoex-chunk") as pool:
        try:
            for item in items:
                pending.append(pool.submit(function, item))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def write_chunk(dataset: h5py.Dataset, offset: tuple[int, ...], data: bytes) -> None:
    """Store pre-encoded bytes as the chunk at ``offset`` (all filters applied)."""
    dataset.id.write_direct_chunk(offset, data, 0)
