"""Content-defined chunking (FastCDC with normalised chunking), vectorised with NumPy. Pure: bytes in, cut lengths out.

Why content-defined: a cut falls where the last 32 bytes hash to a pattern, not at a fixed offset, so an insertion
moves only the cuts around it and a new version shares every other chunk with the old one (casync, desync, restic
and borg chunk the same way).

The hash is FastCDC's Gear hash on 32 bits, h = (h << 1) + GEAR[byte], so bit k of h depends on the last k + 1 bytes
and h as a whole on the last 32. That makes it a sum over a window, h(i) = Σ_{k<32} GEAR[b(i-k)] << k, which NumPy
computes for a whole buffer in five doubling steps (windows of 1, 2, 4, 8, 16, 32) instead of a Python loop per byte.
The masks test the high bits (the ones that saw the most bytes). Because the minimum chunk is longer than the window,
the hash at every position we test covers only bytes of the current chunk, which is what a byte-at-a-time FastCDC
that resets h at each cut computes: the cuts are the same.

Normalised chunking (FastCDC level 2): before the normal size a stricter mask (2 more bits) makes a cut unlikely,
after it a looser one (2 fewer bits) makes one likely, which narrows the spread of chunk sizes around the normal size.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import numpy.typing as npt

_WINDOW = 32


def _gear() -> npt.NDArray[np.uint32]:
    # Fixed forever: the table decides where cuts fall, so changing it would share no chunk with older images.
    # Derived from SHA-256 rather than a seeded generator, whose stream NumPy does not promise to keep.
    values = [
        int.from_bytes(hashlib.sha256(b"cloudseat-gear-%d" % i).digest()[:4], "little") for i in range(256)
    ]
    return np.array(values, dtype=np.uint32)


GEAR = _gear()


@dataclasses.dataclass(frozen=True, slots=True)
class Params:
    """Chunk sizes in bytes: every chunk but a stream's last is min_size..max_size long, most near normal_size."""

    min_size: int = 32 * 1024
    normal_size: int = 128 * 1024
    max_size: int = 512 * 1024

    def __post_init__(self) -> None:
        if not _WINDOW < self.min_size < self.normal_size < self.max_size:
            raise ValueError("chunk sizes must satisfy 32 < min_size < normal_size < max_size")
        if self.normal_size & (self.normal_size - 1):
            raise ValueError("normal_size must be a power of two")

    def masks(self) -> tuple[int, int]:
        """(strict, loose): high-bit masks with log2(normal)+2 and log2(normal)-2 bits set."""
        bits = self.normal_size.bit_length() - 1
        strict = ((1 << (bits + 2)) - 1) << (32 - (bits + 2))
        loose = ((1 << (bits - 2)) - 1) << (32 - (bits - 2))
        return strict, loose


DEFAULT = Params()


def gear_hash(data: bytes | bytearray | memoryview) -> npt.NDArray[np.uint32]:
    """The Gear hash at every position of data (positions below 31 see zeros before the start)."""
    h = GEAR[np.frombuffer(data, dtype=np.uint8)]
    span = 1
    while span < _WINDOW:
        # h(i) over a window of 2·span = h(i) over span + (h(i - span) over span) << span; uint32 wraps like the
        # byte-at-a-time hash does.
        h[span:] += h[:-span] << np.uint32(span)  # the right side is computed whole before the add
        span *= 2
    return h


def _cuts(data: bytes | bytearray | memoryview, params: Params, final: bool) -> tuple[list[int], int]:
    """Chunk lengths decided within data, and how many bytes they cover (the rest waits for more data)."""
    n = len(data)
    if n == 0:
        return [], 0
    strict, loose = params.masks()
    h = gear_hash(data)
    # Positions p where a chunk may end (its last byte is p).
    at_strict = np.flatnonzero((h & np.uint32(strict)) == 0)
    at_loose = np.flatnonzero((h & np.uint32(loose)) == 0)
    lengths: list[int] = []
    start = 0
    while True:
        left = n - start
        if left == 0:
            break
        if left < params.max_size and not final:
            break  # the cut may lie beyond what we have
        if left <= params.min_size:
            lengths.append(left)
            break
        last = _first(at_strict, start + params.min_size - 1, start + params.normal_size - 1)
        if last < 0:
            last = _first(at_loose, start + params.normal_size - 1, start + params.max_size - 1)
        length = last + 1 - start if last >= 0 else min(params.max_size, left)
        lengths.append(length)
        start += length
    return lengths, start


def _first(positions: npt.NDArray[np.intp], lo: int, hi: int) -> int:
    """The first position in [lo, hi), or -1."""
    i = int(np.searchsorted(positions, lo))
    if i < len(positions) and positions[i] < hi:
        return int(positions[i])
    return -1


def chunk_lengths(data: bytes | bytearray | memoryview, params: Params = DEFAULT) -> list[int]:
    """Cut one whole stream; the lengths add up to len(data)."""
    lengths, _ = _cuts(data, params, final=True)
    return lengths


class Chunker:
    """Cuts a stream fed in pieces of any size into the same chunks chunk_lengths would cut from it whole.

    feed() returns the chunks completed so far (as bytes); finish() the rest. Holds at most one piece plus
    max_size bytes.
    """

    def __init__(self, params: Params = DEFAULT) -> None:
        self.params = params
        self._pending = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        self._pending += data
        if len(self._pending) < 2 * self.params.max_size:
            return []
        return self._take(final=False)

    def finish(self) -> list[bytes]:
        return self._take(final=True)

    def _take(self, final: bool) -> list[bytes]:
        view = memoryview(self._pending)
        try:
            lengths, used = _cuts(view, self.params, final)
            out = []
            at = 0
            for length in lengths:
                out.append(bytes(view[at : at + length]))
                at += length
        finally:
            view.release()
        del self._pending[:used]
        return out
