"""Reading a replica's stored bytes, each piece checked against its CRC before it is passed on.

A stored piece is either a run of BLOCK-sized blocks with one CRC-32 each (a base file) or one
record with a single CRC-32 (a pending append). It is read in windows of at most `window`
bytes (positional reads, so readers never share a file position), which keeps memory bounded
whatever the file size: a reader holds at most two windows at a time.

Each `Span` is (open file, offset in it, the checked bytes). A sender that has no MAC to
compute passes just the file range on to the kernel (`socket.sendfile`, from the page cache),
so the bytes were read once to be checked and are never copied again in user space. (Plain
reads rather than memory maps: a disk error on a mapped page would kill the whole node with
SIGBUS; a read fails with EIO, which fails one request.)

Ordering guarantee: a block is passed on only after its CRC matched. A record larger than a
window is passed on window by window, but the window holding the last byte asked for only
after the whole record's CRC matched. So a reader that stops at `CorruptReplica` has never
passed on the end of what it was asked for: a receiver sees a truncated payload, never a
complete wrong one.

`early` spans (for a receiver that commits nothing before the payload is whole, such as a
get into a local file, renamed into place at its end) pass a block on in PART-sized parts
as they are read, with the same guarantee: the part holding the last byte asked for only
after every block's CRC matched. The receiver then writes a block while the sender still
checks it, instead of waiting for the check (0.5 ms per MiB here) before the first byte.
"""

from __future__ import annotations

import os
import zlib
from typing import BinaryIO, Iterator, NamedTuple

BLOCK = 1 << 20          # a base file's checksum unit
WINDOW = 4 * BLOCK       # the most bytes read at once for one window
PART = 1 << 18           # what `early` spans pass on at once


class CorruptReplica(Exception):
    """Stored bytes do not match their checksum (or are missing)."""


class Span(NamedTuple):
    file: BinaryIO       # the open stored file
    offset: int          # where the checked bytes start in it
    data: memoryview     # the checked bytes


def piece_spans(f: BinaryIO, offset: int, size: int, crcs: list[int], per_block: bool,
                lo: int = 0, hi: int | None = None, window: int = WINDOW,
                early: bool = False) -> Iterator[Span]:
    """Checked spans of bytes [lo, hi) of the piece at `offset` in `f` (`size` bytes long),
    each at most `window` bytes (a multiple of BLOCK); `early`: see the module's docstring.
    Blocks outside [lo, hi) are not read; a record is always checked whole."""
    hi = size if hi is None else min(hi, size)
    if per_block and early:
        yield from _early_block_spans(f, offset, size, crcs, lo, hi)
    elif per_block:
        yield from CheckedBlocks(f, offset, size, crcs).spans(lo, hi, window)
    else:
        yield from _record_spans(f, offset, size, crcs[0], lo, hi, window)


def _early_block_spans(f, offset, size, crcs, lo, hi, part: int = PART):
    """Bytes [lo, hi) of a per-block piece in parts, each passed on as soon as it is read;
    the part with byte hi - 1 only once its block's CRC matched: each block is read as a
    record is, with its own CRC."""
    for k in range(lo // BLOCK, (hi - 1) // BLOCK + 1 if lo < hi else 0):
        start = k * BLOCK
        yield from _record_spans(f, offset + start, min(BLOCK, size - start), crcs[k],
                                 lo - start, hi - start, part, f"block {k}")


def read_piece(f: BinaryIO, offset: int, size: int, crcs: list[int], per_block: bool,
               lo: int = 0, hi: int | None = None) -> Iterator[bytes]:
    """`piece_spans` as bytes, for readers that keep or write them."""
    for span in piece_spans(f, offset, size, crcs, per_block, lo, hi):
        yield as_bytes(span)


def as_bytes(span: Span) -> bytes:
    """A span's bytes: the window read itself when the span is all of it, else a copy."""
    whole = span.data.obj
    return whole if len(span.data) == len(whole) else bytes(span.data)


class CheckedBlocks:
    """Checked spans of one per-block piece (a base), for a reader that asks for many
    ranges of it in turn (a view, store.py): the window read last stays in memory, checked,
    so ranges that share a block (small appends side by side) do not read and check it
    again. Holds at most one window."""

    def __init__(self, f: BinaryIO, offset: int, size: int, crcs: list[int]):
        self.f, self.offset, self.size, self.crcs = f, offset, size, crcs
        self._start, self._data = 0, memoryview(b"")    # the window kept, checked

    def spans(self, lo: int, hi: int, window: int = WINDOW) -> Iterator[Span]:
        """Checked spans of bytes [lo, hi) of the piece, each at most `window` bytes."""
        hi = min(hi, self.size)
        while lo < hi:
            if not self._start <= lo < self._start + len(self._data):
                self._load(lo // BLOCK, (hi - 1) // BLOCK, max(window // BLOCK, 1))
            yield _clip(self.f, self.offset, self._start, self._data, lo, hi)
            lo = min(hi, self._start + len(self._data))

    def _load(self, first: int, last: int, per_window: int) -> None:
        """Read and check blocks `first` .. at most `last` (one window's worth)."""
        end_block = min(first + per_window, last + 1)
        start, end = first * BLOCK, min(end_block * BLOCK, self.size)
        data = _read(self.f, self.offset + start, end - start)
        for k in range(first, end_block):
            if zlib.crc32(data[(k - first) * BLOCK:(k - first + 1) * BLOCK]) != self.crcs[k]:
                raise CorruptReplica(f"{self.f.name}: block {k} fails its checksum")
        self._start, self._data = start, data


def _record_spans(f, offset, size, expected_crc, lo, hi, window, what: str = ""):
    """Spans of bytes [lo, hi) of one piece under one CRC (`what` it is, for the error),
    read in windows; the window with byte hi - 1 only once the CRC matched."""
    crc, held = 0, None     # held: the window with byte hi-1, passed on once the CRC matched
    for start in range(0, size, window):
        data = _read(f, offset + start, min(window, size - start))
        crc = zlib.crc32(data, crc)
        end = start + len(data)
        if start < hi <= end and lo < hi:
            held = _clip(f, offset, start, data, lo, hi)
        elif lo < end and start < hi:
            yield _clip(f, offset, start, data, lo, hi)
    if crc != expected_crc:
        raise CorruptReplica(f"{f.name}: {what or f'the record at {offset}'} fails its checksum")
    if held is not None:
        yield held


def _read(f, at: int, length: int) -> memoryview:
    data = os.pread(f.fileno(), length, at)
    if len(data) != length:
        raise CorruptReplica(f"{f.name}: {length - len(data)} bytes at {at + len(data)} "
                             "are missing")
    return memoryview(data)


def _clip(f, offset: int, start: int, data: memoryview, lo: int, hi: int) -> Span:
    """The part of a window (at `start` in the piece) that lies in [lo, hi)."""
    a, b = max(start, lo), min(start + len(data), hi)
    return Span(f, offset + a, data[a - start:b - start])
