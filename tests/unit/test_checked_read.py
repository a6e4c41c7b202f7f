"""Checked reads of stored pieces (checked_read.py) and checking ahead of a sender
(read_ahead.py): right bytes for every range, and corruption never passed on unseen."""

from __future__ import annotations

import os
import threading
import zlib

import pytest

from hydfs.checked_read import BLOCK, PART, WINDOW, CorruptReplica, piece_spans, read_piece
from hydfs.read_ahead import CheckedRanges

pytestmark = pytest.mark.timeout(30)

DATA = os.urandom(9 * BLOCK + 12345)        # blocks 0..9, the last one partial
PREFIX = b"header line\n"                   # the piece starts off a page boundary
BLOCK_CRCS = [zlib.crc32(DATA[i:i + BLOCK]) for i in range(0, len(DATA), BLOCK)]
RECORD_CRC = [zlib.crc32(DATA)]


@pytest.fixture
def stored(tmp_path):
    path = tmp_path / "piece"
    path.write_bytes(PREFIX + DATA + b"trailer")
    with open(path, "rb") as f:
        yield f


def corrupt(f, at: int) -> None:
    with open(f.name, "r+b") as w:
        w.seek(len(PREFIX) + at)
        w.write(bytes([DATA[at] ^ 0xFF]))


RANGES = [(0, None), (5, 100), (BLOCK - 1, 5 * BLOCK + 7), (len(DATA) - 10, len(DATA)),
          (3 * BLOCK, 3 * BLOCK), (WINDOW, 2 * WINDOW + 1), (0, len(DATA) + 100)]


@pytest.mark.parametrize("per_block", [True, False], ids=["blocks", "record"])
@pytest.mark.parametrize("lo,hi", RANGES)
def test_every_range_reads_the_right_bytes(stored, per_block, lo, hi):
    crcs = BLOCK_CRCS if per_block else RECORD_CRC
    got = b"".join(read_piece(stored, len(PREFIX), len(DATA), crcs, per_block, lo, hi))
    assert got == DATA[lo:hi]


@pytest.mark.parametrize("window", [BLOCK, WINDOW])
def test_spans_are_bounded_by_the_window_and_point_into_the_file(stored, window):
    spans = [(s.offset, bytes(s.data)) for s in
             piece_spans(stored, len(PREFIX), len(DATA), BLOCK_CRCS, True, window=window)]
    assert max(len(b) for _, b in spans) <= window
    for offset, data in spans:
        assert os.pread(stored.fileno(), len(data), offset) == data


def test_a_bad_block_stops_the_read_before_its_bytes(stored):
    corrupt(stored, 4 * BLOCK + 17)
    seen = []
    with pytest.raises(CorruptReplica, match="block 4"):
        for span in piece_spans(stored, len(PREFIX), len(DATA), BLOCK_CRCS, True, window=BLOCK):
            seen.append(bytes(span.data))
    assert b"".join(seen) == DATA[:4 * BLOCK]


def test_blocks_outside_the_range_are_not_checked(stored):
    corrupt(stored, 7 * BLOCK)
    assert b"".join(read_piece(stored, len(PREFIX), len(DATA), BLOCK_CRCS, True, 0, 100)) == \
        DATA[:100]


@pytest.mark.parametrize("lo,hi", RANGES)
def test_early_spans_read_the_right_bytes_in_parts(stored, lo, hi):
    spans = list(piece_spans(stored, len(PREFIX), len(DATA), BLOCK_CRCS, True, lo, hi,
                             early=True))
    assert b"".join(bytes(s.data) for s in spans) == DATA[lo:hi]
    assert all(len(s.data) <= PART for s in spans)
    for span in spans:
        assert os.pread(stored.fileno(), len(span.data), span.offset) == bytes(span.data)


@pytest.mark.parametrize("bad", [4 * BLOCK + 17, len(DATA) - 1, 9 * BLOCK])
def test_early_spans_of_a_bad_block_never_pass_on_the_last_byte(stored, bad):
    """Parts of a bad block may go out before its check fails (the receiver of early spans
    commits nothing before the payload is whole), but never the payload's end: it sees a
    truncated payload, never a complete wrong one; and nothing after the bad block."""
    corrupt(stored, bad)
    seen = b""
    with pytest.raises(CorruptReplica, match=f"block {bad // BLOCK}"):
        for span in piece_spans(stored, len(PREFIX), len(DATA), BLOCK_CRCS, True, early=True):
            seen += bytes(span.data)
    assert len(seen) < len(DATA) and len(seen) <= (bad // BLOCK + 1) * BLOCK
    assert seen[:bad // BLOCK * BLOCK] == DATA[:bad // BLOCK * BLOCK]


def test_a_bad_record_never_passes_on_its_last_window(stored):
    """Even a flaw in the record's first byte is only found at its end: by then every window
    but the last went out, so a receiver sees a truncated payload, never a complete one."""
    corrupt(stored, 0)
    seen = 0
    with pytest.raises(CorruptReplica, match="record"):
        for span in piece_spans(stored, len(PREFIX), len(DATA), RECORD_CRC, False):
            seen += len(span.data)
    assert 0 < seen < len(DATA)


def test_a_record_is_checked_whole_even_for_a_small_range(stored):
    corrupt(stored, len(DATA) - 1)
    with pytest.raises(CorruptReplica):
        list(read_piece(stored, len(PREFIX), len(DATA), RECORD_CRC, False, 0, 10))


def test_a_file_shorter_than_its_piece_is_corrupt(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(DATA[:BLOCK + 5])
    with open(path, "rb") as f, pytest.raises(CorruptReplica, match="missing"):
        list(read_piece(f, 0, len(DATA), BLOCK_CRCS, True))


def test_an_empty_record_reads_as_nothing(stored):
    assert list(read_piece(stored, 0, 0, [0], False)) == []
    with pytest.raises(CorruptReplica):
        list(read_piece(stored, 0, 0, [1], False))


def test_a_range_of_a_bad_record_never_gets_its_last_byte(stored):
    """The range ends in the record's first window; the flaw is in its last. The window
    with the range's last byte must wait for the whole record's check."""
    corrupt(stored, len(DATA) - 1)
    seen = 0
    with pytest.raises(CorruptReplica):
        for span in piece_spans(stored, len(PREFIX), len(DATA), RECORD_CRC, False,
                                100, BLOCK + 100, window=BLOCK):
            seen += len(span.data)
    assert seen == BLOCK - 100         # the first window's part only


# -- checking ahead of the sender ---------------------------------------------------------------

def ranges(f, crcs, per_block=True, **kwargs):
    spans = piece_spans(f, len(PREFIX), len(DATA), crcs, per_block, window=BLOCK)
    return CheckedRanges(spans, len(DATA), **kwargs)


@pytest.mark.parametrize("inline_below", [0, 1 << 40], ids=["thread", "inline"])
def test_checked_ranges_cover_the_piece_in_order(stored, inline_below):
    with ranges(stored, BLOCK_CRCS, inline_below=inline_below) as checked:
        got = b"".join(os.pread(f.fileno(), n, off) for f, off, n in checked)
    assert got == DATA


def test_a_sender_of_a_bad_record_range_stops_before_its_end(stored):
    corrupt(stored, 9 * BLOCK)
    sent = 0
    spans = piece_spans(stored, len(PREFIX), len(DATA), RECORD_CRC, False, 0, 10, window=BLOCK)
    with pytest.raises(CorruptReplica), CheckedRanges(spans, 10, inline_below=0) as checked:
        for _, _, n in checked:
            sent += n
    assert sent == 0


@pytest.mark.parametrize("per_block", [True, False], ids=["blocks", "record"])
def test_corruption_reaches_the_sender_after_the_good_ranges(stored, per_block):
    corrupt(stored, 6 * BLOCK + 1)
    crcs = BLOCK_CRCS if per_block else RECORD_CRC
    sent = 0
    with pytest.raises(CorruptReplica), ranges(stored, crcs, per_block, inline_below=0) as checked:
        for _, _, n in checked:
            sent += n
    assert sent == (6 * BLOCK if per_block else 9 * BLOCK)


def test_a_sender_that_stops_early_stops_the_helper(stored):
    before = threading.active_count()
    with ranges(stored, BLOCK_CRCS, depth=1, inline_below=0) as checked:
        next(iter(checked))
    assert threading.active_count() == before
