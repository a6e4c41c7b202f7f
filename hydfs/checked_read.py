"""Reading a replica's stored bytes, each piece checked against its CRC before it is passed on.

A stored piece is either a run of BLOCK-sized blocks with one CRC-32 each (a base file) or one
record with a single CRC-32 (a pending append). Bytes are read through short-lived read-only
memory maps of at most WINDOW bytes, which gives three things at once:

- the check costs no copy (the CRC runs over the mapped page cache);
- memory stays bounded whatever the file size: a reader maps at most two windows at a time;
- a sender can hand the very same file range to the kernel (`socket.sendfile`) once it is
  checked, so serving a get copies nothing in user space.

Each `Span` is (open file, offset in it, memoryview of the checked bytes). The view is valid
until the next span is asked for: copy it (`bytes(view)`) to keep it.

Ordering guarantee: a block is yielded only after its CRC matched. A record larger than a
window is yielded window by window, but its last window only after the whole record's CRC
matched. So a reader that stops at `CorruptReplica` has never passed on the end of a piece,
and a receiver of the bytes sees a truncated payload, never a wrong one.
"""

from __future__ import annotations

import mmap
import zlib
from typing import BinaryIO, Iterator, NamedTuple

BLOCK = 1 << 20          # a base file's checksum unit
WINDOW = 4 * BLOCK       # the most bytes mapped at once for one window


class CorruptReplica(Exception):
    """Stored bytes do not match their checksum (or are missing)."""


class Span(NamedTuple):
    file: BinaryIO       # the open stored file
    offset: int          # where the checked bytes start in it
    view: memoryview     # the checked bytes; valid until the next span is asked for


def piece_spans(f: BinaryIO, offset: int, size: int, crcs: list[int], per_block: bool,
                lo: int = 0, hi: int | None = None, window: int = WINDOW) -> Iterator[Span]:
    """Checked spans of bytes [lo, hi) of the piece at `offset` in `f` (`size` bytes long),
    each at most `window` bytes (a multiple of BLOCK). Blocks outside [lo, hi) are not
    read; a record is always checked whole."""
    hi = size if hi is None else min(hi, size)
    if per_block:
        yield from _block_spans(f, offset, size, crcs, lo, hi, window)
    else:
        yield from _record_spans(f, offset, size, crcs[0], lo, hi, window)


def read_piece(f: BinaryIO, offset: int, size: int, crcs: list[int], per_block: bool,
               lo: int = 0, hi: int | None = None) -> Iterator[bytes]:
    """`piece_spans` as bytes (one copy each): for readers that keep or write the bytes."""
    for span in piece_spans(f, offset, size, crcs, per_block, lo, hi):
        yield bytes(span.view)


def _block_spans(f, offset, size, crcs, lo, hi, window):
    if lo >= hi:
        return
    per_window = max(window // BLOCK, 1)
    first, last = lo // BLOCK, (hi - 1) // BLOCK
    for i in range(first, last + 1, per_window):
        j = min(i + per_window, last + 1)                   # blocks i .. j-1 in this window
        start, end = i * BLOCK, min(j * BLOCK, size)
        with _Window(f, offset + start, end - start) as window:
            for k in range(i, j):
                with window.view[(k - i) * BLOCK:(k - i + 1) * BLOCK] as block:
                    if zlib.crc32(block) != crcs[k]:
                        raise CorruptReplica(f"{f.name}: block {k} fails its checksum")
            a, b = max(start, lo), min(end, hi)
            yield Span(f, offset + a, window.slice(a - start, b - start))


def _record_spans(f, offset, size, expected_crc, lo, hi, window):
    crc, pos = 0, 0
    held = mapped = None       # held: the last window, passed on once the CRC is known
    try:
        while pos < size:
            n = min(window, size - pos)
            mapped = _Window(f, offset + pos, n)
            crc = zlib.crc32(mapped.open(), crc)
            if held is not None:
                yield from _clipped(f, offset, held, lo, hi)
                held[1].close()
            held, mapped, pos = (pos, mapped), None, pos + n
        if crc != expected_crc:
            raise CorruptReplica(f"{f.name}: the record at {offset} fails its checksum")
        if held is not None:
            yield from _clipped(f, offset, held, lo, hi)
    finally:
        for w in (mapped, held and held[1]):
            if w is not None:
                w.close()


def _clipped(f, offset, held, lo, hi):
    start, window = held
    a, b = max(start, lo), min(start + window.length, hi)
    if a < b:
        yield Span(f, offset + a, window.slice(a - start, b - start))


class _Window:
    """A read-only map of `length` bytes at `offset` of `f` (mmap wants the map to start on
    a page boundary, so it starts earlier and the view skips the difference). Closing it
    releases every view handed out, so a stale span fails loudly instead of reading freed
    memory, and the map can go."""

    def __init__(self, f, offset: int, length: int):
        self.f, self.offset, self.length = f, offset, length
        self._map, self.view, self._given = None, None, []

    def open(self) -> memoryview:
        skip = self.offset % mmap.ALLOCATIONGRANULARITY
        try:
            self._map = mmap.mmap(self.f.fileno(), self.length + skip, access=mmap.ACCESS_READ,
                                  offset=self.offset - skip)
        except ValueError:        # the file ends before the piece does
            raise CorruptReplica(f"{self.f.name}: {self.length} bytes at {self.offset} "
                                 "are missing") from None
        self.view = memoryview(self._map)[skip:skip + self.length]
        return self.view

    def slice(self, a: int, b: int) -> memoryview:
        part = self.view[a:b]
        self._given.append(part)
        return part

    def close(self) -> None:
        if self._map is not None:
            for part in self._given:
                part.release()
            self.view.release()
            self._map.close()
            self._map, self.view, self._given = None, None, []

    def __enter__(self) -> "_Window":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
