"""The files this node holds as a HyDFS replica: `ReplicaStore`, crash-safe and checksummed.

The store is the one entry point; the concepts it is built of live in their own modules:
layout.py (the directory of each file, meta.json as the commit point, recovery after a
crash), pending_log.py (appends since the last merge, one fsync'd record each),
base_file.py (the content as of the last merge, and how a merge changes it),
replica_state.py (`FileState` and `Snapshot`, in memory), view.py (a chosen set of appends
in merge order, the same bytes on every replica) and checked_read.py (reading stored bytes
against their checksums).

Reads verify every block and record against its CRC before passing it on; corruption raises
`CorruptReplica`, and the caller quarantines the copy (`remove(name, "corrupt")`) so
re-replication restores it from another replica. Files being created or installed are
assembled in a temporary directory and renamed into place, so a crash never leaves a
half-created file. Each file has a lock; readers take a `Snapshot` (open file handles and
the piece list) under it and stream without holding it, and writers take it only once their
bytes are in (never while a peer is still sending).

Watching: `wait_for_new` blocks until a file holds an append a reader does not know of yet.
Every change that may add appends (a record written, a create or install committed, a
merge) counts up the file's change number under one condition variable, taken after the
file lock and never before it, so a waiter holds no file lock while it waits.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import threading
import time

from cluster.chunks import drain
from hydfs import base_file, checked_read, layout, pending_log
from hydfs.checked_read import WINDOW, CorruptReplica, as_bytes, piece_spans, read_piece
from hydfs.fences import Fence, Fences, lower_epochs, stronger
from hydfs.idset import IdSet
from hydfs.pending_log import Record
from hydfs.replica_state import FileState, Piece, Snapshot
from hydfs.spool import spool
from hydfs.view import LacksAppends, View
from hydfs.view import plan as plan_view

log = logging.getLogger("hydfs")

VIEW_PLANS = 32               # view plans kept (a few per source reading this node)

__all__ = ["ReplicaStore", "FileExists", "LostCreateRace", "NoSuchFile", "Fenced",
           "CorruptReplica", "LacksAppends", "FileState", "Snapshot", "Record", "View"]


class FileExists(Exception):
    """The name is held already; raised before a byte of the new content was read."""


class LostCreateRace(FileExists):
    """Another create of the name committed while ours streamed in (our bytes were read)."""


class NoSuchFile(Exception):
    pass


class Fenced(Exception):
    """An append or a fence from a writer that a newer one has replaced (fences.py)."""


class ReplicaStore:
    def __init__(self, root: str):
        self.root = root
        os.makedirs(root, exist_ok=True)
        self._files: dict[str, FileState] = layout.load_all(root)
        self._locks: dict[str, threading.RLock] = {}
        self._guard = threading.Lock()
        self._changed = threading.Condition()      # after a file lock, never before one
        self._changes: dict[str, int] = {}         # name -> changes that may add appends
        self._views: dict = {}                     # plans of merged-only views, oldest first

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
        return layout.folder(self.root, name)

    # -- create, append, read ---------------------------------------------------------------

    # No file's lock is held while bytes come off the network: a coordinator streams a write
    # on to the other replicas while it receives it, so two coordinators of one file that
    # each held their lock while waiting for the other's bytes would wait forever.

    def create(self, name: str, file_id: str, chunks, expected_size: int) -> FileState:
        """Create `name` from an iterable of byte chunks: FileExists if held already (before
        a byte is read), LostCreateRace if another create committed while ours streamed."""
        if self.get_state(name) is not None:
            raise FileExists(name)
        tmp, st = layout.receive_copy(self.root, name, file_id, 0, "create", IdSet(), chunks,
                                      expected_size, expected_size, None)
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
        retry: the caller drains whatever of `chunks` is left); Fenced if the file's fences
        refuse it (before a byte is read, or after). The bytes are taken in first (`spool`),
        and the lock only to write them to the log."""
        if self._held_or_fenced(self.state(name), client, seq):
            return False
        with spool(chunks, size, self.root) as spooled:
            with self.lock(name):
                st = self.state(name)
                if self._held_or_fenced(st, client, seq):
                    return False
                self._write_streams(st, [(client, seq, ts, size, spooled)])
                self._note_change(name)
                return True

    @staticmethod
    def _held_or_fenced(st: FileState, client: str, seq: int) -> bool:
        """True if the append is held already; Fenced if its writer was replaced."""
        if st.holds((client, seq)):
            return True
        if not st.fences.accepts(client):
            raise Fenced(f"{st.name}: {client} was replaced by a newer writer")
        return False

    def append_chunks(self, name: str, append_id: tuple[str, int]):
        """(size, ts, chunks) of a held append, pending or merged, read from a snapshot."""
        snap = self.snapshot(name)
        try:
            for rec, (f, offset, size, crcs, _) in snap.pending_pieces():
                if rec.id == append_id:
                    return size, rec.ts, _closing(snap, read_piece(f, offset, size, crcs, False))
            if append_id in IdSet(snap.summary["merged"]):   # newest first: catch-ups want those
                for client, seq, ts, offset, size in reversed(snap.index):
                    if (client, seq) == append_id:
                        return size, ts, _closing(snap, self.read_range(snap, offset, size))
        except BaseException:
            snap.close()
            raise
        snap.close()
        raise NoSuchFile(f"{name} holds no append {append_id}")

    def add_records(self, name: str, records) -> None:
        """Add records (header, chunks), each written to disk as its bytes arrive; ids
        already held, and those the file's fences refuse, are skipped (their bytes
        drained)."""
        with self.lock(name):
            st = self.state(name)
            self._write_streams(st, _unheld(st, records))
            self._note_change(name)

    def _write_streams(self, st: FileState, items, folder: str | None = None) -> None:
        """Append records (client, seq, ts, size, chunks) to the pending log, fsync'd; a
        failed write is cut back off (pending_log.py), so a retry cannot double. The
        in-memory state changes only once they are on disk."""
        folder = folder or self._dir(st.name)
        log_size, written = pending_log.write_records(os.path.join(folder, st.pending_file),
                                                      st.pending_size, items)
        st.add_pending(log_size, written)

    def snapshot(self, name: str) -> Snapshot:
        """Open the file's pieces for streaming; the caller closes the snapshot."""
        with self.lock(name):
            st = self.state(name)
            folder = self._dir(name)
            snap = Snapshot(st.version(), st.size, st.summary(), list(st.pending),
                            index=st.index.view(folder), create_size=st.create_size)
            try:
                if st.base_size:
                    base = open(os.path.join(folder, st.base_file), "rb")
                    snap.pieces.append(Piece(base, 0, st.base_size, list(st.base_crcs), True))
                if st.pending:
                    log = open(os.path.join(folder, st.pending_file), "rb")
                    snap.pieces += [Piece(log, r.offset, r.size, [r.crc], False)
                                    for r in st.pending]
            except BaseException:
                snap.close()
                raise
            return snap

    def read_chunks(self, snap: Snapshot):
        """Yield the snapshot's bytes in order, verified; raises CorruptReplica."""
        return self.read_range(snap, 0, snap.size)

    def read_range(self, snap: Snapshot, start: int, length: int):
        """Yield bytes [start, start + length) of the snapshot, verifying every block and
        record it touches; blocks before `start` are skipped unread."""
        for span in self.spans(snap, start, length):
            yield as_bytes(span)

    def spans(self, snap: Snapshot, start: int, length: int, window: int = WINDOW,
              early: bool = False):
        """The verified `Span`s (checked_read.py) of bytes [start, start + length) of the
        snapshot, at most `window` bytes each: a sender can `sendfile` their ranges.
        `early`: for a receiver that commits nothing before it has the whole payload
        (checked_read.py)."""
        end, pos = start + length, 0
        for f, offset, size, crcs, per_block in snap.pieces:
            if pos < end and start < pos + size:
                yield from piece_spans(f, offset, size, crcs, per_block,
                                       max(start - pos, 0), min(end - pos, size), window,
                                       early)
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
        for rec, (f, offset, size, crcs, _) in snap.pending_pieces():
            if rec.id not in exclude:
                out.append(({"id": [rec.client, rec.seq], "ts": rec.ts, "size": size},
                            read_piece(f, offset, size, crcs, False)))
        return out

    # -- views (view.py) ------------------------------------------------------------------------

    def view(self, snap: Snapshot, ids: IdSet, create: bool) -> View:
        """The view of `ids` (after the create's content if `create`) in the snapshot:
        its parts and size; LacksAppends if the snapshot does not hold every id.

        A view of merged appends only depends on the base alone, so its plan is kept for
        the next read of the same view (a source reads its partition piece by piece, and
        planning a view of a file of many appends is O(n log n))."""
        key = (tuple(snap.state_version[:3]), len(snap.index), create,
               json.dumps(ids.to_wire(), sort_keys=True))
        with self._guard:
            cached = self._views.get(key)
        if cached is not None:
            return cached
        try:
            v = plan_view(snap.index, [], ids, create, snap.create_size)
        except LacksAppends:          # some are pending here: planned afresh each time
            return plan_view(snap.index, snap.pending, ids, create, snap.create_size)
        with self._guard:
            self._views[key] = v
            while len(self._views) > VIEW_PLANS:
                self._views.pop(next(iter(self._views)))
        return v

    def view_spans(self, snap: Snapshot, v: View, start: int, length: int,
                   window: int = WINDOW):
        """The verified `Span`s of bytes [start, start + length) of view `v` of the
        snapshot, at most `window` bytes each; parts before `start` are skipped unread, and
        a block of the base that several parts share is read and checked once."""
        base = snap.base
        blocks = None if base is None else \
            checked_read.CheckedBlocks(base.file, base.offset, base.size, base.crcs)
        records = [p for p in snap.pieces if not p.per_block]
        end, pos = start + length, 0
        for part in v.parts:
            if pos >= end:
                return
            if start < pos + part.size:
                lo, hi = max(start - pos, 0), min(end - pos, part.size)
                if part.record is None:
                    yield from blocks.spans(part.lo + lo, part.lo + hi, window)
                else:
                    f, offset, size, crcs, _ = records[part.record]
                    yield from piece_spans(f, offset, size, crcs, False, lo, hi, window)
            pos += part.size

    @staticmethod
    def where_in_base(snap: Snapshot, v: View) -> dict | None:
        """Where view `v` of the snapshot lies in its base file, if wholly there, for a
        reader that reads the file itself: {"path", "inode", "base_size", "crcs", "parts"
        ([lo, size] stretches of the base, in view order), "size"}; None if some of it is
        in the pending log. Below `base_size` the base's bytes never change while the file
        keeps its inode (a merge in place only appends; one that reorders writes a new
        base), so the reader checks the inode and every block's CRC, as this store does
        (stream/local_view.py)."""
        base = snap.base
        if base is None or any(part.record is not None for part in v.parts):
            return None
        return {"path": os.path.abspath(base.file.name),
                "inode": os.fstat(base.file.fileno()).st_ino, "base_size": base.size,
                "crcs": list(base.crcs), "parts": [[p.lo, p.size] for p in v.parts],
                "size": v.size}

    # -- watching for new appends ---------------------------------------------------------------

    def _note_change(self, name: str) -> None:
        """The file may hold new appends: wake its watchers."""
        with self._changed:
            self._changes[name] = self._changes.get(name, 0) + 1
            self._changed.notify_all()

    def wait_for_new(self, name: str, known: IdSet, timeout: float) -> dict | None:
        """Wait until our copy of `name` holds an append (merged or pending) not in `known`,
        or there is no copy, or `timeout` seconds passed; then its summary (None: no copy).
        No file lock is held while waiting, and nothing polls: changes wake the wait."""
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                seen = self._changes.get(name, 0)
            with self.lock(name):           # a moment's look, the state stays consistent
                st = self.get_state(name)
                summary = st.summary() if st is not None else None
                fresh = st is None or not known.covers(st.held())
            left = deadline - time.monotonic()
            if fresh or left <= 0:
                return summary
            with self._changed:
                if self._changes.get(name, 0) == seen:
                    self._changed.wait(left)

    # -- merge and whole-file installs --------------------------------------------------------

    def apply_merge(self, name: str, gen: int, merge_id: str, target: IdSet,
                    fences: Fences | None = None) -> list:
        """Merge: the base becomes the create's content, then every append in `target` or
        already merged, sorted by (timestamp, client, seq) (merge.py). The content is thus a
        function of the set of appends alone, whatever merges came before or ran at once.
        The coordinator's `fences` (the strongest any replica has) are adopted first.

        Returns the ids of `target` this replica lacks (nothing is changed then); the caller
        sends them and calls again. Appends not in `target` stay pending.
        """
        if fences is not None:
            self.learn_fences(name, fences)
        with self.lock(name):
            st = self.state(name)
            missing = [list(i) for i in target.difference(st.held())]
            if missing:
                return missing
            new = base_file.in_merge_order(r for r in st.pending if r.id in target)
            if not new:
                return []
            # The merge works on a copy, swapped in once committed: if anything fails on
            # the way (a full disk), the copy in use is still the one meta.json names.
            folder, st = self._dir(name), dataclasses.replace(st, index=st.index.copy())
            base_file.merge_in(st, folder, new)
            merged = st.merged.union(IdSet.of(r.id for r in new))
            remaining = [r for r in st.pending if r.id not in merged]
            self._rewrite_pending(st, folder, remaining)
            st.gen, st.merge_id, st.merged = max(st.gen + 1, gen), merge_id, merged
            layout.commit_meta(self.root, st)
            with self._guard:
                self._files[name] = st
            self._note_change(name)
            return []

    def _rewrite_pending(self, st: FileState, folder: str, remaining: list[Record]) -> None:
        """Move the appends a merge left pending into a fresh log."""
        old_file = st.pending_file
        st.pending_file = pending_log.new_name()
        st.pending, st.pending_ids, st.pending_size = [], IdSet(), 0
        log_size, written = pending_log.rewrite(os.path.join(folder, old_file),
                                                os.path.join(folder, st.pending_file), remaining)
        st.add_pending(log_size, written)

    def install(self, name: str, summary: dict, chunks, size: int, records,
                create_size: int = 0, index: dict | None = None) -> FileState:
        """Replace our copy with a peer's base (from `chunks`: `size` bytes of base, then
        the rows of its index, whose "count" and "clients" `index` gives) and add `records`,
        keeping any appends of ours that the new base does not contain.

        The base streams into a temporary directory without the file's lock (appends and
        reads of our copy go on meanwhile); the lock is taken only to add our appends and
        swap the copies."""
        tmp, st = layout.receive_copy(self.root, name, summary["file_id"], summary["gen"],
                                      summary["merge_id"], IdSet(summary["merged"]), chunks,
                                      size, create_size, index)
        st.fences = Fences.from_wire(summary.get("fences"))
        try:
            with self.lock(name):
                old = self.get_state(name)
                keep, snap = [], None
                if old is not None and old.file_id == summary["file_id"]:
                    st.fences = st.fences.merged_with(old.fences)
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

    def _commit_install(self, name: str, tmp: str, st: FileState, records,
                        replace: bool) -> FileState:
        """Add the records, write the metadata, swap the copy in (caller holds the lock)."""
        self._write_streams(st, _unheld(st, records), folder=tmp)
        self._enforce_fences(st, tmp)
        layout.write_meta(tmp, st)
        layout.swap_in(self.root, tmp, name, replace)
        with self._guard:
            self._files[name] = st
        self._note_change(name)
        return st

    # -- fences (fences.py) ---------------------------------------------------------------------

    def begin_fence(self, name: str, key: str, epoch: int,
                    rnd: int = 0) -> tuple[Fence | None, IdSet]:
        """Refuse new appends of writer `key` from epochs below `epoch` from now on (a
        provisional fence, durable before this returns); Fenced if a newer epoch, or a later
        try of this one, fenced the file already. Returns the fence of `key` before, and the
        ids of `key`'s appends from lower epochs this copy holds."""
        with self.lock(name):
            st = self.state(name)
            prior = _not_newer(name, st.fences.get(key), epoch, rnd)
            begun = stronger(prior, Fence(epoch, None, rnd))
            if begun != prior:
                self._commit_fences(st, st.fences.with_fence(key, begun))
            return prior, lower_epochs(st.held(), key, epoch)

    def seal_fence(self, name: str, key: str, epoch: int, sealed: IdSet,
                   rnd: int = 0) -> list:
        """Seal the fence of `key` at (`epoch`, `rnd`) with `sealed`: drop the appends of
        lower epochs not in it. Returns the ids of `sealed` this copy lacks (to be sent)."""
        with self.lock(name):
            st = self.state(name)
            current = _not_newer(name, st.fences.get(key), epoch, rnd)
            fence = stronger(current, Fence(epoch, sealed, rnd))
            st = self._commit_fences(st, st.fences.with_fence(key, fence))
            return [list(i) for i in fence.sealed if not st.holds(i)]

    def learn_fences(self, name: str, fences: Fences) -> None:
        """Adopt what `fences` knows that ours do not (from a peer), dropping appends they
        refuse."""
        if not fences:
            return
        with self.lock(name):
            st = self.get_state(name)
            if st is None or st.fences.covers(fences):
                return
            self._commit_fences(st, st.fences.merged_with(fences))

    def _commit_fences(self, st: FileState, fences: Fences) -> FileState:
        """Make `fences` the copy's (caller holds the lock): drop what they refuse, commit,
        and only then let readers see the new state; if that fails the copy stays as it
        was."""
        new = dataclasses.replace(st, fences=fences)
        self._enforce_fences(new, self._dir(st.name))
        layout.commit_meta(self.root, new)
        with self._guard:
            self._files[st.name] = new
        return new

    def _enforce_fences(self, st: FileState, folder: str) -> None:
        """Drop what the fences of `st` refuse: a copy holds only appends they admit (a
        replica that was cut off may have taken some its peers had refused)."""
        refused = set(st.fences.refused(st.held()))
        if not refused:
            return
        log.warning("FENCE %s: dropping %d appends of replaced writers", st.name, len(refused))
        if any(i in st.merged for i in refused):
            base_file.rebuild_without(st, folder, refused)
        if any(r.id in refused for r in st.pending):
            self._rewrite_pending(st, folder, [r for r in st.pending if r.id not in refused])

    def remove(self, name: str, reason: str = "") -> None:
        """Drop our copy (not a replica any more, or corrupt: then it is kept aside)."""
        with self.lock(name):
            with self._guard:
                self._files.pop(name, None)
            layout.discard(self.root, name, set_aside=reason == "corrupt")
            self._note_change(name)       # a watcher of it answers at once: no copy here


def _not_newer(name: str, fence: Fence | None, epoch: int, rnd: int) -> Fence | None:
    """`fence`, unless it is of a newer epoch or a later try than (epoch, rnd): Fenced."""
    if fence is not None and (fence.epoch, fence.round) > (epoch, rnd):
        raise Fenced(f"{name}: fenced at epoch {fence.epoch} round {fence.round} already, "
                     f"not {epoch} round {rnd}")
    return fence


def _unheld(st: FileState, records):
    """(client, seq, ts, size, chunks) of the records `st` does not hold yet and its fences
    admit; the bytes of the others are read and dropped, so a stream of records stays in
    step."""
    for header, chunks in records:
        client, seq = str(header["id"][0]), int(header["id"][1])
        if st.holds((client, seq)) or not st.fences.admits(client, seq):
            drain(chunks)
            continue
        yield (client, seq, float(header["ts"]), int(header["size"]), chunks)


def _closing(snap: Snapshot, chunks):
    """Yield chunks, then close the snapshot they are read from."""
    try:
        yield from chunks
    finally:
        snap.close()
