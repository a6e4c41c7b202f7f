"""The files this node holds as a HyDFS replica, on disk, crash-safe and checksummed.

Layout, under ``data_dir/vmNN/hydfs/<percent-encoded name>/``:

- ``meta.json``: the replica's committed state: the file's id (which create made it), the
  merge generation, the set of append ids merged into the base, the base file's name, size
  and one CRC-32 per 1 MiB block. Replaced only by write-temp, fsync, rename: its rename is
  the commit point of every change except an append.
- ``base.<token>``: the content as of the last merge (the create's content at generation 0).
  A merge appends to it in place and then commits a larger size; bytes beyond the committed
  size are a crashed merge's leftovers and are cut off when the file is loaded.
- ``pending.<token>.log``: appends received since the last merge, in arrival order, each a
  JSON header line ``{"id": [client, seq], "ts": ..., "size": N}``, N bytes, and a trailer
  line ``{"crc": ...}`` (so an append streams to disk as it arrives, never whole in memory).
  An append is one fsync. A torn record at the end (a crash mid-append: no trailer yet) is
  cut off when the file is loaded; a bad CRC anywhere is corruption.

Reads verify every block and record against its CRC before passing it on (checked_read.py);
corruption raises `CorruptReplica`, and the caller quarantines the copy so re-replication
restores it from another replica. Files being created are assembled in a temporary
directory and renamed into place, so a crash never leaves a half-created file. Each file has
a lock; readers take a `Snapshot` (open file handles and the piece list) under it and stream
without holding it, and writers take it only once their bytes are in (never while a peer is
still sending).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field

from hydfs.checked_read import (BLOCK, WINDOW, CorruptReplica, as_bytes, piece_spans,
                                 read_piece)
from hydfs.idset import IdSet
from hydfs.names import disk_name, is_disk_name, name_from_disk
from hydfs.spool import spool

log = logging.getLogger("hydfs")

READ_CHUNK = 1 << 20


class FileExists(Exception):
    """The name is held already; raised before a byte of the new content was read."""


class LostCreateRace(FileExists):
    """Another create of the name committed while ours streamed in (our bytes were read)."""


class NoSuchFile(Exception):
    pass


@dataclass
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


@dataclass
class FileState:
    name: str
    file_id: str                  # which create made this file ("client@ts")
    gen: int                      # merge generation
    merge_id: str                 # which merge made this generation
    merged: IdSet                 # append ids contained in the base
    base_file: str
    base_size: int
    base_crcs: list[int]          # CRC-32 per BLOCK of the base; the last may be partial
    pending_file: str
    pending: list[Record] = field(default_factory=list)
    pending_ids: IdSet = field(default_factory=IdSet)
    pending_size: int = 0         # bytes of the pending log in use
    create_size: int = 0          # the base starts with the create's content, this long
    index: list = field(default_factory=list)   # merged appends: [client, seq, ts, offset, size]

    def meta(self) -> dict:
        return {"name": self.name, "file_id": self.file_id, "gen": self.gen,
                "merge_id": self.merge_id, "merged": self.merged.to_wire(),
                "base_file": self.base_file, "base_size": self.base_size,
                "base_crcs": self.base_crcs, "pending_file": self.pending_file,
                "create_size": self.create_size, "index": self.index}

    def summary(self) -> dict:
        """What a peer needs to compare replicas (manifests, merge, re-replication)."""
        return {"name": self.name, "file_id": self.file_id, "gen": self.gen,
                "merge_id": self.merge_id, "merged": self.merged.to_wire(),
                "pending": self.pending_ids.to_wire(), "size": self.size}

    @property
    def size(self) -> int:
        return self.base_size + sum(r.size for r in self.pending)

    def version(self) -> list:
        """Changes whenever this replica's content changes (used by the client cache)."""
        return [self.file_id, self.gen, len(self.pending), self.size]

    def holds(self, append_id: tuple[str, int]) -> bool:
        return append_id in self.merged or append_id in self.pending_ids

    def held(self) -> IdSet:
        return self.merged.union(self.pending_ids)


@dataclass
class Snapshot:
    """A consistent view for streaming a file, taken under its lock: the summary, the
    pending records and open handles to the bytes, as (file, offset, length, crcs,
    per_block) pieces. Merges and installs after it do not change what it reads."""
    state_version: list
    size: int
    summary: dict = field(default_factory=dict)
    pending: list = field(default_factory=list)
    pieces: list = field(default_factory=list)
    index: list = field(default_factory=list)
    create_size: int = 0

    def close(self) -> None:
        for f, *_ in self.pieces:
            f.close()


class ReplicaStore:
    def __init__(self, root: str):
        self.root = root
        os.makedirs(root, exist_ok=True)
        self._files: dict[str, FileState] = {}
        self._locks: dict[str, threading.RLock] = {}
        self._guard = threading.Lock()
        self._load_all()

    # -- locking and lookup -----------------------------------------------------------------

    def lock(self, name: str) -> threading.RLock:
        with self._guard:
            return self._locks.setdefault(name, threading.RLock())

    def names(self) -> list[str]:
        with self._guard:
            return sorted(self._files)

    def get_state(self, name: str) -> FileState | None:
        with self._guard:
            return self._files.get(name)

    def state(self, name: str) -> FileState:
        st = self.get_state(name)
        if st is None:
            raise NoSuchFile(name)
        return st

    def _dir(self, name: str) -> str:
        return os.path.join(self.root, disk_name(name))

    # -- create, append, read ---------------------------------------------------------------

    # No file's lock is held while bytes come off the network: a coordinator streams a write
    # on to the other replicas while it receives it, so two coordinators of one file that
    # each held their lock while waiting for the other's bytes would wait forever.

    def create(self, name: str, file_id: str, chunks, expected_size: int) -> FileState:
        """Create `name` from an iterable of byte chunks: FileExists if held already (before
        a byte is read), LostCreateRace if another create committed while ours streamed."""
        if self.get_state(name) is not None:
            raise FileExists(name)
        tmp, st = self._receive_base(name, file_id, 0, "create", IdSet(), chunks,
                                     expected_size, expected_size, [])
        try:
            with self.lock(name):
                if self.get_state(name) is not None:
                    raise LostCreateRace(name)
                return self._commit_install(name, tmp, st, [], replace=False)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def append(self, name: str, client: str, seq: int, ts: float, data: bytes) -> bool:
        """Add one append to the pending log; False if this id is already held (a retry)."""
        return self.append_stream(name, client, seq, ts, len(data), [data])

    def append_stream(self, name: str, client: str, seq: int, ts: float, size: int,
                      chunks) -> bool:
        """Add one append whose bytes arrive as chunks; False if its id is already held (a
        retry: the caller drains whatever of `chunks` is left). The bytes are taken in first
        (`spool`), and the lock only to write them to the log."""
        if self.state(name).holds((client, seq)):
            return False
        with spool(chunks, size, self.root) as spooled:
            with self.lock(name):
                st = self.state(name)
                if st.holds((client, seq)):
                    return False
                self._write_streams(st, [(client, seq, ts, size, spooled)])
                return True

    def append_chunks(self, name: str, append_id: tuple[str, int]):
        """(size, ts, chunks) of a held append, pending or merged, read from a snapshot."""
        snap = self.snapshot(name)
        pieces = [p for p in snap.pieces if not p[4]]
        for rec, (f, offset, size, crcs, _) in zip(snap.pending, pieces):
            if rec.id == append_id:
                return size, rec.ts, _closing(snap, read_piece(f, offset, size, crcs, False))
        for client, seq, ts, offset, size in snap.index:
            if (client, seq) == append_id:
                return size, ts, _closing(snap, self.read_range(snap, offset, size))
        snap.close()
        raise NoSuchFile(f"{name} holds no append {append_id}")

    def add_records(self, name: str, records) -> None:
        """Add records (header, chunks), each written to disk as its bytes arrive; ids
        already held are skipped (their bytes drained)."""
        with self.lock(name):
            st = self.state(name)
            self._write_streams(st, _unheld(st, records))

    def _write_streams(self, st: FileState, items, folder: str | None = None) -> None:
        """Append records (client, seq, ts, size, chunks) to the pending log, fsync'd. The
        in-memory state changes only once they are on disk; a failed write (a dropped
        connection mid-append, a full disk) is cut back off, so a retry cannot double."""
        folder = folder or self._dir(st.name)
        path = os.path.join(folder, st.pending_file)
        created = not os.path.exists(path)
        with open(path, "wb" if created else "r+b") as f:
            end, new = st.pending_size, []
            try:
                f.seek(end)
                for client, seq, ts, size, chunks in items:
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
                    rec = Record(client, seq, ts, size, crc, end + len(header))
                    end = rec.offset + size + len(trailer)
                    new.append(rec)
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
            except BaseException:
                f.truncate(st.pending_size)
                raise
        if created:
            _fsync_dir(folder)          # the new log's name must survive a power cut too
        st.pending_size = end
        for rec in new:
            st.pending.append(rec)
            st.pending_ids.add(rec.client, rec.seq)

    def snapshot(self, name: str) -> Snapshot:
        """Open the file's pieces for streaming; the caller closes the snapshot."""
        with self.lock(name):
            st = self.state(name)
            folder = self._dir(name)
            snap = Snapshot(st.version(), st.size, st.summary(), list(st.pending),
                            index=list(st.index), create_size=st.create_size)
            if st.base_size:
                base = open(os.path.join(folder, st.base_file), "rb")
                snap.pieces.append((base, 0, st.base_size, list(st.base_crcs), True))
            if st.pending:
                log = open(os.path.join(folder, st.pending_file), "rb")
                snap.pieces += [(log, r.offset, r.size, [r.crc], False) for r in st.pending]
            return snap

    def read_chunks(self, snap: Snapshot):
        """Yield the snapshot's bytes in order, verified; raises CorruptReplica."""
        return self.read_range(snap, 0, snap.size)

    def read_range(self, snap: Snapshot, start: int, length: int):
        """Yield bytes [start, start + length) of the snapshot, verifying every block and
        record it touches; blocks before `start` are skipped unread."""
        for span in self.spans(snap, start, length):
            yield as_bytes(span)

    def spans(self, snap: Snapshot, start: int, length: int, window: int = WINDOW):
        """The verified `Span`s (checked_read.py) of bytes [start, start + length) of the
        snapshot, at most `window` bytes each: a sender can `sendfile` their ranges."""
        end, pos = start + length, 0
        for f, offset, size, crcs, per_block in snap.pieces:
            if pos < end and start < pos + size:
                yield from piece_spans(f, offset, size, crcs, per_block,
                                       max(start - pos, 0), min(end - pos, size), window)
            pos += size

    def snapshot_records(self, snap: Snapshot, exclude: IdSet, merged_too: bool = False) -> list:
        """(header, chunks) of the snapshot's appends not in `exclude`: its pending records,
        and with `merged_too` also those merged into its base (via the index). The chunks
        are read lazily, verified, in order: consume each before the next, while `snap`
        is open. Nothing is held whole in memory."""
        out = []
        if merged_too:
            for client, seq, ts, offset, size in snap.index:
                if (client, seq) not in exclude:
                    out.append(({"id": [client, seq], "ts": ts, "size": size},
                                self.read_range(snap, offset, size)))
        pieces = [p for p in snap.pieces if not p[4]]
        for rec, (f, offset, size, crcs, _) in zip(snap.pending, pieces):
            if rec.id not in exclude:
                out.append(({"id": [rec.client, rec.seq], "ts": rec.ts, "size": size},
                            read_piece(f, offset, size, crcs, False)))
        return out

    # -- merge and whole-file installs --------------------------------------------------------

    def apply_merge(self, name: str, gen: int, merge_id: str, target: IdSet) -> list:
        """Merge: the base becomes the create's content, then every append in `target` or
        already merged, sorted by (timestamp, client, seq) (merge.py). The content is thus a
        function of the set of appends alone, whatever merges came before or ran at once.

        Returns the ids of `target` this replica lacks (nothing is changed then); the caller
        sends them and calls again. Appends not in `target` stay pending.
        """
        with self.lock(name):
            st = self.state(name)
            missing = [list(i) for i in target if not st.holds(i)]
            if missing:
                return missing
            new = sorted((r for r in st.pending if r.id in target), key=_order_key)
            if not new:
                return []
            folder = self._dir(name)
            last = max((_order_key(e) for e in _entries(st.index)), default=None)
            if last is None or _order_key(new[0]) > last:
                self._append_to_base(st, folder, new)       # the common case: all later
            else:
                self._rebuild_base(st, folder, new)
            merged = st.merged.union(IdSet.of(r.id for r in new))
            remaining = [r for r in st.pending if r.id not in merged]
            self._rewrite_pending(st, folder, remaining)
            st.gen, st.merge_id, st.merged = max(st.gen + 1, gen), merge_id, merged
            self._commit_meta(st)
            return []

    def _rebuild_base(self, st: FileState, folder: str, new: list[Record]) -> None:
        """Write a new base: the create's content, then old and new appends in order."""
        order = sorted(_entries(st.index) + new, key=_order_key)
        base_path = os.path.join(folder, st.base_file)
        log_path = os.path.join(folder, st.pending_file)
        new_file = f"base.{uuid.uuid4().hex[:12]}"
        index, offset = [], st.create_size
        for item in order:
            index.append([item.client, item.seq, item.ts, offset, item.size])
            offset += item.size

        def chunks():
            with open(base_path, "rb") as base, open(log_path, "rb") as log:
                yield from _read_base(base, st, 0, st.create_size)
                for item in order:
                    if isinstance(item, Record):
                        yield from read_piece(log, item.offset, item.size, [item.crc], False)
                    else:
                        yield from _read_base(base, st, item.offset, item.size)
        size, crcs = _write_blocks(os.path.join(folder, new_file), chunks())
        st.base_file, st.base_size, st.base_crcs, st.index = new_file, size, crcs, index

    def _append_to_base(self, st: FileState, folder: str, records: list[Record]) -> None:
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
        offset = st.base_size
        for rec in records:
            st.index.append([rec.client, rec.seq, rec.ts, offset, rec.size])
            offset += rec.size
        st.base_crcs = crcs.result()
        st.base_size = new_size

    def _rewrite_pending(self, st: FileState, folder: str, remaining: list[Record]) -> None:
        """Move the appends a merge left pending into a fresh log, streamed."""
        old_file = st.pending_file
        st.pending_file = f"pending.{uuid.uuid4().hex[:12]}.log"
        st.pending, st.pending_ids, st.pending_size = [], IdSet(), 0
        with open(os.path.join(folder, old_file), "rb") as log:
            self._write_streams(st, ((r.client, r.seq, r.ts, r.size,
                                      read_piece(log, r.offset, r.size, [r.crc], False))
                                     for r in remaining), folder)

    def install(self, name: str, summary: dict, chunks, size: int, records,
                create_size: int = 0, index: list = ()) -> FileState:
        """Replace our copy with a peer's base (from `chunks`, laid out as `index` says) and
        add `records`, keeping any appends of ours that the new base does not contain.

        The base streams into a temporary directory without the file's lock (appends and
        reads of our copy go on meanwhile); the lock is taken only to add our appends and
        swap the copies."""
        tmp, st = self._receive_base(name, summary["file_id"], summary["gen"],
                                     summary["merge_id"], IdSet(summary["merged"]), chunks,
                                     size, create_size, index)
        try:
            with self.lock(name):
                old = self.get_state(name)
                keep, snap = [], None
                if old is not None and old.file_id == summary["file_id"]:
                    snap = self.snapshot(name)
                    keep = self.snapshot_records(snap, st.merged, merged_too=True)
                try:
                    return self._commit_install(name, tmp, st, keep + list(records),
                                                replace=old is not None)
                finally:
                    if snap is not None:
                        snap.close()
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _receive_base(self, name, file_id, gen, merge_id, merged, chunks, size, create_size,
                      index) -> tuple[str, FileState]:
        """A new copy's base, written into a temporary directory (removed on failure)."""
        tmp = os.path.join(self.root, f".tmp-{uuid.uuid4().hex}")
        os.makedirs(tmp)
        try:
            st = FileState(name, file_id, gen, merge_id, merged, f"base.{uuid.uuid4().hex[:12]}",
                           0, [], f"pending.{uuid.uuid4().hex[:12]}.log",
                           create_size=create_size, index=[list(e) for e in index])
            st.base_size, st.base_crcs = _write_blocks(os.path.join(tmp, st.base_file), chunks)
            if st.base_size != size:
                raise ValueError(f"expected {size} bytes, received {st.base_size}")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return tmp, st

    def _commit_install(self, name: str, tmp: str, st: FileState, records,
                        replace: bool) -> FileState:
        """Add the records, write the metadata, swap the copy in (caller holds the lock)."""
        self._write_streams(st, _unheld(st, records), folder=tmp)
        _write_json(os.path.join(tmp, "meta.json"), st.meta())
        self._swap_in(tmp, self._dir(name), replace)
        with self._guard:
            self._files[name] = st
        return st

    def _swap_in(self, tmp: str, final: str, replace: bool) -> None:
        """Put a complete copy in place of the old one; a crash in between leaves one of the
        two intact (`_load_all` puts back an old copy whose replacement never arrived)."""
        old = None
        if replace and os.path.exists(final):
            old = os.path.join(self.root, f".old-{uuid.uuid4().hex}")
            os.rename(final, old)
        os.rename(tmp, final)
        _fsync_dir(self.root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def remove(self, name: str, reason: str = "") -> None:
        """Drop our copy (not a replica any more, or corrupt: then it is kept aside)."""
        with self.lock(name):
            folder = self._dir(name)
            with self._guard:
                self._files.pop(name, None)
            if reason == "corrupt":
                aside = os.path.join(self.root, f".corrupt-{int(time.time())}-{uuid.uuid4().hex}")
                os.rename(folder, aside)
            else:
                shutil.rmtree(folder, ignore_errors=True)

    def _commit_meta(self, st: FileState) -> None:
        folder = self._dir(st.name)
        _write_json(os.path.join(folder, "meta.json"), st.meta())
        for entry in os.listdir(folder):   # files of older generations
            if entry not in ("meta.json", st.base_file, st.pending_file):
                os.unlink(os.path.join(folder, entry))

    # -- loading after a restart --------------------------------------------------------------

    def _load_all(self) -> None:
        for entry in os.listdir(self.root):       # first, what a crash left half done
            path = os.path.join(self.root, entry)
            if entry.startswith(".tmp-"):
                shutil.rmtree(path, ignore_errors=True)   # an install that never committed
            elif entry.startswith(".spool-"):
                os.unlink(path)                           # an append that never got written
            elif entry.startswith(".old-"):
                self._recover_old(path)
        for entry in os.listdir(self.root):
            path = os.path.join(self.root, entry)
            if is_disk_name(entry) and os.path.isdir(path):
                try:
                    st = self._load(path)
                except (OSError, ValueError, KeyError, CorruptReplica) as exc:
                    # Kept aside, not deleted: re-replication restores the file, and a
                    # person can still look at what failed to load.
                    log.error("CORRUPT copy %s could not be loaded (%s); set aside", entry, exc)
                    os.rename(path, os.path.join(self.root, f".unloadable-{uuid.uuid4().hex}"))
                    continue
                self._files[st.name] = st
                self._commit_meta(st)

    def _recover_old(self, old: str) -> None:
        """A copy moved aside by an install: drop it if its replacement is in place, else
        put it back (the crash came between the two renames)."""
        try:
            with open(os.path.join(old, "meta.json"), encoding="utf-8") as f:
                final = self._dir(json.load(f)["name"])
        except (OSError, ValueError, KeyError):
            shutil.rmtree(old, ignore_errors=True)
            return
        if os.path.exists(final):
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(old, final)

    def _load(self, folder: str) -> FileState:
        with open(os.path.join(folder, "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
        st = FileState(meta["name"], meta["file_id"], meta["gen"], meta["merge_id"],
                       IdSet(meta["merged"]), meta["base_file"], meta["base_size"],
                       meta["base_crcs"], meta["pending_file"],
                       create_size=meta["create_size"], index=meta["index"])
        if name_from_disk(os.path.basename(folder)) != st.name:
            raise ValueError("meta.json names another file")
        base_path = os.path.join(folder, st.base_file)
        if st.base_size:
            with open(base_path, "r+b") as base:   # cut a crashed merge's leftovers
                base.truncate(st.base_size)
        st.pending, st.pending_size = _scan_pending(os.path.join(folder, st.pending_file))
        st.pending_ids = IdSet.of(r.id for r in st.pending)
        return st


@dataclass(frozen=True)
class _Merged:
    """A merged append as the base index describes it."""
    client: str
    seq: int
    ts: float
    offset: int
    size: int


def _entries(index: list) -> list[_Merged]:
    return [_Merged(*e) for e in index]


def _order_key(item) -> tuple:
    """The merge order (merge.py): client timestamp, then client id, then sequence number."""
    return (item.ts, item.client, item.seq)


def _read_base(base, st: FileState, offset: int, size: int):
    """Bytes [offset, offset+size) of the base, checked against its block CRCs."""
    return read_piece(base, 0, st.base_size, st.base_crcs, True, offset, offset + size)


def _scan_pending(path: str) -> tuple[list[Record], int]:
    """Read the pending log's records; cut a torn last record; CorruptReplica on bad CRCs."""
    records, good = [], 0
    if not os.path.exists(path):
        return records, 0
    with open(path, "r+b") as f:
        while True:
            line = f.readline()
            if not line.endswith(b"\n"):
                break
            try:
                h = json.loads(line)
                client, seq, ts, size = str(h["id"][0]), int(h["id"][1]), float(h["ts"]), int(h["size"])
            except (ValueError, KeyError, IndexError, TypeError):
                break
            offset, crc, remaining = f.tell(), 0, size
            while remaining:
                data = f.read(min(READ_CHUNK, remaining))
                if not data:
                    break
                crc = zlib.crc32(data, crc)
                remaining -= len(data)
            trailer = f.readline()
            if remaining or not trailer.endswith(b"\n"):
                break                           # torn: the crash came mid-append
            try:
                expected = int(json.loads(trailer)["crc"])
            except (ValueError, KeyError, TypeError):
                break
            if crc != expected:
                raise CorruptReplica(f"{path}: record {(client, seq)} fails its checksum")
            records.append(Record(client, seq, ts, size, crc, offset))
            good = f.tell()
        f.truncate(good)
    return records, good


def _unheld(st: FileState, records):
    """(client, seq, ts, size, chunks) of the records `st` does not hold yet; the bytes of
    the others are read and dropped, so a stream of records stays in step."""
    for header, chunks in records:
        client, seq = str(header["id"][0]), int(header["id"][1])
        if st.holds((client, seq)):
            for _ in chunks:
                pass
            continue
        yield (client, seq, float(header["ts"]), int(header["size"]), chunks)


def _closing(snap: Snapshot, chunks):
    """Yield chunks, then close the snapshot they are read from."""
    try:
        yield from chunks
    finally:
        snap.close()


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


def _write_blocks(path: str, chunks) -> tuple[int, list[int]]:
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


def _write_json(path: str, doc: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path))


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
