"""FastCDC chunking: the vectorised hash is the byte-at-a-time Gear hash, cuts respect the sizes, a stream fed in
pieces is cut as it would be whole, and an insertion changes only the chunks around it."""

from __future__ import annotations

import hashlib
import random

import numpy as np
from cloudseat.images import chunking
from hypothesis import given, settings
from hypothesis import strategies as st

SMALL = chunking.Params(min_size=64, normal_size=256, max_size=1024)


def _sequential_hash(data: bytes) -> list[int]:
    h, out = 0, []
    for b in data:
        h = ((h << 1) + int(chunking.GEAR[b])) & 0xFFFFFFFF
        out.append(h)
    return out


def _noise(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_the_vectorised_hash_is_the_gear_hash_once_the_window_is_full() -> None:
    data = _noise(5000, 1)
    fast = chunking.gear_hash(data)
    slow = _sequential_hash(data)
    assert [int(x) for x in fast[31:]] == slow[31:]


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=6000), st.integers(min_value=1, max_value=3000))
def test_cuts_cover_the_stream_within_the_sizes_and_pieces_change_nothing(data: bytes, piece: int) -> None:
    whole = chunking.chunk_lengths(data, SMALL)
    assert sum(whole) == len(data)
    assert all(SMALL.min_size <= n <= SMALL.max_size for n in whole[:-1])
    assert all(0 < n <= SMALL.max_size for n in whole)
    chunker = chunking.Chunker(SMALL)
    got: list[bytes] = []
    for i in range(0, len(data), piece):
        got += chunker.feed(data[i : i + piece])
    got += chunker.finish()
    assert [len(c) for c in got] == whole
    assert b"".join(got) == data


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=1, max_value=200))
def test_an_insertion_changes_only_the_chunks_around_it(seed: int, inserted: int) -> None:
    data = _noise(40_000, seed)
    at = random.Random(seed).randrange(len(data))
    changed = data[:at] + _noise(inserted, seed + 1) + data[at:]

    def chunks(d: bytes) -> dict[str, int]:
        out, o = {}, 0
        for n in chunking.chunk_lengths(d, SMALL):
            out[hashlib.sha256(d[o : o + n]).hexdigest()] = n
            o += n
        return out

    before, after = chunks(data), chunks(changed)
    # Only the chunks around the insertion are new: the cuts fall in step again within a few chunks (a cut the
    # old stream had is met again), so all but a few max-size spans of the old bytes are shared.
    new_bytes = sum(n for d, n in after.items() if d not in before)
    assert new_bytes <= inserted + 6 * SMALL.max_size
    assert sum(n for d, n in before.items() if d in after) >= len(data) - 6 * SMALL.max_size


def test_default_sizes_average_near_the_normal_size() -> None:
    lengths = chunking.chunk_lengths(_noise(16 << 20, 7))
    body = lengths[:-1]
    assert chunking.DEFAULT.min_size <= min(body) and max(body) <= chunking.DEFAULT.max_size
    assert 0.7 * chunking.DEFAULT.normal_size < sum(body) / len(body) < 1.5 * chunking.DEFAULT.normal_size


def test_bad_params_are_refused() -> None:
    for bad in ((16, 256, 1024), (64, 300, 1024), (64, 2048, 1024)):
        try:
            chunking.Params(*bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} accepted")
