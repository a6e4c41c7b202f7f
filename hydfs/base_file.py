"""The base file: a replica's content as of its last merge, with a CRC-32 per 1 MiB block.

``base.<token>`` holds the create's content (its first `create_size` bytes), then every
merged append in merge order (merge.py: client timestamp, client id, sequence number); the
state's `index` says where each merged append lies. One CRC-32 covers each BLOCK of it; the
last may cover a partial block.

A merge (`merge_in`) changes the base in one of two ways:

- In place, in the common case where every newly merged append sorts after all those merged
  before: the records are appended and the block CRCs carried on from the old last block.
  Until meta.json commits the larger size, the bytes beyond the committed size are a
  crashed merge's leftover: reads stop at the committed size, and loading (layout.py) or
  the next append in place cuts them off, so the old base stands as it was.
- Rebuilt under a new name, when one sorts earlier: the create's content, then the old and
  the new appends interleaved in merge order, each read back checked against its CRC. The
  old base stays until meta.json names the new one.

Either way the new bytes, and the index rows that say where they lie (merged_index.py),
are fsync'd before the state's base fields (`base_file`, `base_size`, `base_crcs`,
`index`) change. Nothing is committed here: the caller commits the
merge by writing meta.json (layout.py).
"""

from __future__ import annotations

import heapq
import os
import uuid
import zlib
from dataclasses import dataclass

from hydfs.checked_read import BLOCK, CheckedBlocks, as_bytes, piece_spans, read_piece
from hydfs.idset import IdSet
from hydfs.merged_index import IndexWriter
from hydfs.pending_log import Record
from hydfs.replica_state import FileState


def new_name() -> str:
    """A fresh base's file name, unlike any earlier one in the replica's directory."""
    return f"base.{uuid.uuid4().hex[:12]}"


def write_blocks(path: str, chunks) -> tuple[int, list[int]]:
    """Write chunks to `path` (fsync'd); return its size and per-BLOCK CRCs."""
    crcs, size = _BlockCrcs(), 0
    with open(path, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
            crcs.update(chunk)
            size += len(chunk)
        f.flush()
        os.fsync(f.fileno())
    return size, crcs.result()


def in_merge_order(items) -> list:
    """Records or merged appends sorted in the merge order (merge.py): client timestamp,
    then client id, then sequence number."""
    return sorted(items, key=_order_key)


def merge_in(st: FileState, folder: str, new: list[Record]) -> None:
    """Put pending records (at least one, `in_merge_order`) into the base of `st`."""
    last = st.index.last()          # the index is in merge order: its last is greatest
    if last is None or _order_key(new[0]) > _order_key(_Merged(*last)):
        _append_in_place(st, folder, new)
    else:
        _rebuild(st, folder, new)


def _append_in_place(st: FileState, folder: str, records: list[Record]) -> None:
    base_path = os.path.join(folder, st.base_file)
    with open(base_path, "r+b" if os.path.exists(base_path) else "wb") as base, \
            open(os.path.join(folder, st.pending_file), "rb") as log:
        base.truncate(st.base_size)
        base.seek(st.base_size)
        crcs = _BlockCrcs(st.base_crcs, st.base_size)
        for rec in records:                       # in bounded windows, no copies
            for span in piece_spans(log, rec.offset, rec.size, [rec.crc], False):
                base.write(span.data)
                crcs.update(span.data)
        base.flush()
        os.fsync(base.fileno())
        new_size = base.tell()
    entries, offset = [], st.base_size
    for rec in records:
        entries.append((rec.client, rec.seq, rec.ts, offset, rec.size))
        offset += rec.size
    st.index.extend(folder, entries)     # fsync'd; on failure the index is as it was
    st.base_crcs = crcs.result()
    st.base_size = new_size


def _rebuild(st: FileState, folder: str, new: list[Record]) -> None:
    """Write a new base: the create's content, then old and new appends in order (the old
    ones stream from the index, already in order, merged with the few new ones)."""
    view = st.index.view(folder)
    try:
        _rewrite(st, folder, heapq.merge((_Merged(*e) for e in view),
                                         in_merge_order(new), key=_order_key))
    finally:
        view.close()


def rebuild_without(st: FileState, folder: str, drop) -> None:
    """Write a new base without the merged appends whose ids are in `drop` (a fence refused
    them after they were merged: fences.py)."""
    view = st.index.view(folder)
    try:
        _rewrite(st, folder, (_Merged(*e) for e in view if (e[0], e[1]) not in drop))
    finally:
        view.close()
    st.merged = st.merged.difference(IdSet.of(i for i in drop if i in st.merged))


def _rewrite(st: FileState, folder: str, order) -> None:
    """A new base of the create's content, then `order`'s appends (merged ones read from
    the base, pending `Record`s from the log), each checked against its CRC, and its index,
    written as the appends stream past: neither is ever whole in memory."""
    base_path = os.path.join(folder, st.base_file)
    log_path = os.path.join(folder, st.pending_file)
    new_file = new_name()
    rows = IndexWriter(folder)

    def chunks():
        offset = st.create_size
        with open(base_path, "rb") as base, open(log_path, "rb") as log:
            # one checked window of the old base at a time: small appends side by side
            # do not read and check their block again each
            old = CheckedBlocks(base, 0, st.base_size, st.base_crcs)
            yield from map(as_bytes, old.spans(0, st.create_size))
            for item in order:
                rows.add(item.client, item.seq, item.ts, offset, item.size)
                offset += item.size
                if isinstance(item, Record):
                    yield from read_piece(log, item.offset, item.size, [item.crc], False)
                else:
                    yield from map(as_bytes, old.spans(item.offset, item.offset + item.size))
    try:
        size, crcs = write_blocks(os.path.join(folder, new_file), chunks())
        index = rows.finish()
    except BaseException:
        rows.abort()
        raise
    st.base_file, st.base_size, st.base_crcs, st.index = new_file, size, crcs, index


@dataclass(frozen=True)
class _Merged:
    """A merged append as the base index describes it."""
    client: str
    seq: int
    ts: float
    offset: int
    size: int


def _order_key(item) -> tuple:
    return (item.ts, item.client, item.seq)


class _BlockCrcs:
    """CRC-32 per BLOCK of a file as it is written, continuing after `size` bytes whose
    block CRCs are `crcs` (the last one may be of a partial block)."""

    def __init__(self, crcs: list[int] = (), size: int = 0):
        full = size // BLOCK
        self.crcs = list(crcs[:full])
        self.fill = size - full * BLOCK
        self.crc = crcs[full] if self.fill else 0

    def update(self, chunk) -> None:
        view = memoryview(chunk)
        while len(view):
            take = min(BLOCK - self.fill, len(view))
            self.crc = zlib.crc32(view[:take], self.crc)
            self.fill += take
            view = view[take:]
            if self.fill == BLOCK:
                self.crcs.append(self.crc)
                self.crc, self.fill = 0, 0

    def result(self) -> list[int]:
        return self.crcs + ([self.crc] if self.fill else [])
