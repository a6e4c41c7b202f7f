"""The pending log: the appends a replica received since its last merge, in arrival order.

Format of ``pending.<token>.log``, one record after another: a JSON header line
``{"id": [client, seq], "ts": ..., "size": N}``, the N bytes, and a trailer line
``{"crc": ...}`` with the CRC-32 of those bytes. The checksum comes after the bytes, so an
append streams to disk as it arrives and is never held whole in memory.

Guarantees:

- `write_records` makes everything it writes durable with one fsync (and a directory fsync
  when it created the log) before it returns the records. If anything fails midway (a
  dropped connection, a stream shorter than its header said, a full disk) the log is cut
  back to its old length, so a retried append cannot be stored twice.
- `scan`, after a restart, returns every complete record. A torn record at the end (the
  crash came mid-append, before its trailer) is cut off, and so is everything from the
  first header or trailer that does not parse; bytes that fail their CRC are corruption
  (`CorruptReplica`) wherever the record is.
- `rewrite` moves the records a merge left pending into a fresh log, checking each against
  its CRC as it streams through.

The log knows nothing of merges or of the replica's state: the store keeps the records in
`FileState.pending` (replica_state.py) and changes them only after this module returned.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
import zlib
from dataclasses import dataclass

from hydfs.checked_read import CorruptReplica, read_piece
from hydfs.durable import fsync_dir

READ_CHUNK = 1 << 20     # how much of a record `scan` reads at once to check its CRC


@dataclass(slots=True)
class Record:
    """One pending append in the pending log."""
    client: str
    seq: int
    ts: float
    size: int
    crc: int
    offset: int          # where its bytes start in the pending log

    @property
    def id(self) -> tuple[str, int]:
        return (self.client, self.seq)

    def header(self) -> dict:
        return {"id": [self.client, self.seq], "ts": self.ts, "size": self.size, "crc": self.crc}


def new_name() -> str:
    """A fresh log's file name, unlike any earlier one in the replica's directory."""
    return f"pending.{uuid.uuid4().hex[:12]}.log"


def write_records(path: str, start: int, items) -> tuple[int, list[Record]]:
    """Write records (client, seq, ts, size, chunks) to the log at `path` from byte `start`
    on, fsync'd; return the log's new length and the records written. On failure the log
    is cut back to `start` and the exception passes on."""
    created = not os.path.exists(path)
    with open(path, "wb" if created else "r+b") as f:
        end, new = start, []
        try:
            f.seek(end)
            for client, seq, ts, size, chunks in items:
                rec, end = _write_record(f, end, client, seq, ts, size, chunks)
                new.append(rec)
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
        except BaseException:
            f.truncate(start)
            raise
    if created:
        fsync_dir(os.path.dirname(path))   # the new log's name must survive a power cut too
    return end, new


def _write_record(f, at: int, client: str, seq: int, ts: float, size: int,
                  chunks) -> tuple[Record, int]:
    """Write one record at `at`, the position of `f`; return it and where it ends. A
    stream that delivers other than `size` bytes is a ValueError."""
    header = json.dumps({"id": [client, seq], "ts": ts, "size": size},
                        separators=(",", ":")).encode() + b"\n"
    f.write(header)
    crc, written = 0, 0
    for chunk in chunks:
        f.write(chunk)
        crc = zlib.crc32(chunk, crc)
        written += len(chunk)
    if written != size:
        raise ValueError(f"append of {size} bytes delivered {written}")
    trailer = b'{"crc":%d}\n' % crc
    f.write(trailer)
    rec = Record(sys.intern(client), seq, ts, size, crc, at + len(header))  # one str per client
    return rec, rec.offset + size + len(trailer)


def rewrite(old_path: str, new_path: str, records: list[Record]) -> tuple[int, list[Record]]:
    """Copy `records` from the log at `old_path` into a new log at `new_path`, streamed and
    checked; return `write_records`' result for the new log."""
    with open(old_path, "rb") as log:
        return write_records(new_path, 0, ((r.client, r.seq, r.ts, r.size,
                                            read_piece(log, r.offset, r.size, [r.crc], False))
                                           for r in records))


def scan(path: str) -> tuple[list[Record], int]:
    """Read the log's records and its length in use; cut a torn last record off the file;
    CorruptReplica on a bad CRC. A missing log holds no records."""
    records, good = [], 0
    if not os.path.exists(path):
        return records, 0
    with open(path, "r+b") as f:
        while (rec := _next_record(f)) is not None:
            records.append(rec)
            good = f.tell()
        f.truncate(good)
    return records, good


def _next_record(f) -> Record | None:
    """The complete record at the position of `f`; None at the end of the log or at a torn
    or unreadable record."""
    header = _parse_header(f.readline())
    if header is None:
        return None
    client, seq, ts, size = header
    offset = f.tell()
    crc, remaining = _crc_of_next(f, size)
    trailer = f.readline()
    if remaining or not trailer.endswith(b"\n"):
        return None                     # torn: the crash came mid-append
    try:
        expected = int(json.loads(trailer)["crc"])
    except (ValueError, KeyError, TypeError):
        return None
    if crc != expected:
        raise CorruptReplica(f"{f.name}: record {(client, seq)} fails its checksum")
    return Record(client, seq, ts, size, crc, offset)


def _parse_header(line: bytes) -> tuple[str, int, float, int] | None:
    """(client, seq, ts, size) of a complete header line, else None."""
    if not line.endswith(b"\n"):
        return None
    try:
        h = json.loads(line)
        return sys.intern(str(h["id"][0])), int(h["id"][1]), float(h["ts"]), int(h["size"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def _crc_of_next(f, size: int) -> tuple[int, int]:
    """The CRC-32 of the next `size` bytes of `f`, and how many of them the file lacks."""
    crc, remaining = 0, size
    while remaining:
        data = f.read(min(READ_CHUNK, remaining))
        if not data:
            break
        crc = zlib.crc32(data, crc)
        remaining -= len(data)
    return crc, remaining
