"""A replica's state in memory: `FileState`, and `Snapshot`, a fixed view of it for reading.

`FileState` is what a replica's meta.json says (the committed part: which create made the
file, the merge generation, the merged append ids, the base file's name, size and block
CRCs, the index of merged appends) plus what its pending log holds (the records since the
last merge). `meta` and `from_meta` convert it to and from the meta.json document, so the
document's format lives here alone. The store changes a FileState only under the file's
lock, and takes in an append only once its record is fsync'd.

A `Snapshot` is taken under that lock and then read without it: open handles to the base
and the pending log and the pieces of the content in order, so merges and installs after
it do not change what it reads. Nothing here does I/O except `Snapshot.close`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import BinaryIO, NamedTuple

from hydfs.fences import Fences
from hydfs.idset import IdSet
from hydfs.merged_index import IndexView, MergedIndex
from hydfs.pending_log import Record


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
    index: MergedIndex = field(default_factory=MergedIndex)   # merged appends, in base order
    fences: Fences = field(default_factory=Fences)   # replaced writers, by key (fences.py)
    _memo: tuple | None = field(default=None, repr=False, compare=False)

    def meta(self) -> dict:
        doc = {"name": self.name, "file_id": self.file_id, "gen": self.gen,
               "merge_id": self.merge_id, "merged": self.merged.to_wire(),
               "base_file": self.base_file, "base_size": self.base_size,
               "base_crcs": self.base_crcs, "pending_file": self.pending_file,
               "create_size": self.create_size, **self.index.meta()}
        if self.fences:
            doc["fences"] = self.fences.to_wire()
        return doc

    @classmethod
    def from_meta(cls, meta: dict, index: MergedIndex) -> FileState:
        """The committed state a meta.json document holds, with nothing pending yet, and
        its `index` (loaded from the file that meta.json names: layout.py)."""
        return cls(meta["name"], meta["file_id"], meta["gen"], meta["merge_id"],
                   IdSet(meta["merged"]), meta["base_file"], meta["base_size"],
                   meta["base_crcs"], meta["pending_file"],
                   create_size=meta["create_size"], index=index,
                   fences=Fences.from_wire(meta.get("fences")))

    def summary(self) -> dict:
        """What a peer needs to compare replicas (manifests, merge, re-replication)."""
        doc = {"name": self.name, "file_id": self.file_id, "gen": self.gen,
               "merge_id": self.merge_id, "merged": self.merged.to_wire(),
               "pending": self.pending_ids.to_wire(), "size": self.size}
        if self.fences:
            doc["fences"] = self.fences.to_wire()
        return doc

    @property
    def size(self) -> int:
        return self.base_size + self._pending_bytes()

    def _pending_bytes(self) -> int:
        """The pending records' bytes, summed once per record: the list only grows, or is
        replaced (by a merge, a rewrite or a load), so what was summed of it still counts.
        (A file that takes appends for hours holds many; every summary asks.)"""
        memo = self._memo
        if memo is None or memo[0] is not self.pending or memo[1] > len(self.pending):
            memo = (self.pending, 0, 0)
        pending, counted, total = memo
        total += sum(r.size for r in pending[counted:])
        self._memo = (pending, len(pending), total)
        return total

    def version(self) -> list:
        """Changes whenever this replica's content changes (used by the client cache): a
        merge or a fence that drops appends writes new base or log files, under new names."""
        return [self.file_id, self.gen, self.base_file, self.pending_file, len(self.pending),
                self.size]

    def holds(self, append_id: tuple[str, int]) -> bool:
        return append_id in self.merged or append_id in self.pending_ids

    def held(self) -> IdSet:
        return self.merged.union(self.pending_ids)

    def add_pending(self, log_size: int, records: list[Record]) -> None:
        """Take in records just written to the pending log, which is now `log_size` long."""
        self.pending_size = log_size
        for rec in records:
            self.pending.append(rec)
            self.pending_ids.add(rec.client, rec.seq)


class Piece(NamedTuple):
    """A stretch of a snapshot's content, as checked_read.py reads it."""
    file: BinaryIO       # the open base or pending log
    offset: int          # where the piece starts in it
    size: int
    crcs: list[int]      # one per BLOCK (a base), or the record's one
    per_block: bool      # True for the base, False for a pending record


@dataclass
class Snapshot:
    """A consistent view for streaming a file, taken under its lock: the summary, the
    pending records and open handles to the bytes, as `Piece`s in content order (the
    base, if not empty, then one per pending record). Merges and installs after it do not
    change what it reads."""
    state_version: list
    size: int
    summary: dict = field(default_factory=dict)
    pending: list = field(default_factory=list)
    pieces: list = field(default_factory=list)
    index: IndexView = field(default_factory=lambda: IndexView(None, 0, [], None))
    create_size: int = 0

    @property
    def base(self) -> Piece | None:
        """The piece of the base file, the first one, if the base is not empty."""
        return self.pieces[0] if self.pieces and self.pieces[0].per_block else None

    @property
    def merged_size(self) -> int:
        """Bytes of the base: they keep their place until a merge rebuilds the base (a
        merge in place only adds after them; base_file.py)."""
        return self.base.size if self.base is not None else 0

    def pending_pieces(self):
        """(record, piece) for each pending record, in log order."""
        return zip(self.pending, [p for p in self.pieces if not p.per_block])

    def close(self) -> None:
        for f, *_ in self.pieces:
            f.close()
        self.index.close()
