"""The index of a base's merged appends: which append lies where, kept in a file beside the
base.

A replica needs, for each append merged into its base, its id (client, seq), its client
timestamp (the merge order sorts by it) and where its bytes lie (offset, size): views,
re-replication of single appends and rebuilding merges read them. A file that takes
appends for days holds millions, so they live on disk, not in memory: ``index.<token>``
holds one fixed-size row per merged append (`ROW`: client number, seq, ts, offset, size;
36 bytes), in base order, which is merge order (base_file.py), so the last row is the
greatest. The few client ids (one per writer attempt) and the row count are in meta.json
(`meta`). In memory an index holds only its client table, its last entry and an open
handle; reads are `pread`s of the page-cached file, in blocks of rows.

The file only grows at its end (`extend`, by a merge in place: the rows are written and
fsync'd before meta.json commits the larger count; rows past the committed count are a
crashed merge's leftovers, cut off at load and overwritten by the next extend) until a
rebuild writes a new index under a new name. So the first `len` rows never change while a
handle is open, and `frozen()`, a snapshot's fixed view, shares the handle and copies
nothing: the file stays readable through it after a rebuild unlinks it.

State transfers stream the rows as bulk bytes after the base (`chunks`, `ranges`), and the
receiver checks each row as it writes it (`receive`).
"""

from __future__ import annotations

import os
import struct
import uuid
from typing import Iterator

Entry = tuple  # (client, seq, ts, offset, size)

ROW = struct.Struct("<Iqdqq")      # client number, seq, ts, offset, size
READ_ROWS = 1024                   # rows read at once when iterating


class BadIndex(ValueError):
    """Index rows that do not describe the base they came with (a corrupt or hostile
    transfer, or a damaged file)."""


def new_name() -> str:
    return f"index.{uuid.uuid4().hex[:12]}"


class MergedIndex:
    __slots__ = ("file_name", "_file", "_n", "_clients", "_numbers", "_last", "_frozen")

    def __init__(self):
        """An empty index, with no file until its first `extend`."""
        self.file_name = ""
        self._file = None                       # the open index file (read and write)
        self._n = 0
        self._clients: list[str] = []           # client number -> id (only ever grows)
        self._numbers: dict[str, int] = {}      # client id -> number
        self._last: Entry | None = None
        self._frozen = False

    # -- meta.json and loading ------------------------------------------------------------

    def meta(self) -> dict:
        """What meta.json records of the index."""
        return {"index_file": self.file_name, "index_count": self._n,
                "index_clients": list(self._clients)}

    @classmethod
    def load(cls, folder: str, meta: dict) -> "MergedIndex":
        """The committed index that meta.json describes, in `folder`; rows beyond its count
        (a crashed merge's) are cut off. ValueError or OSError if it cannot be."""
        index = cls()
        if "index" in meta:                     # an older meta.json: the rows inline
            index.extend(folder, [(str(c), int(s), float(t), int(o), int(z))
                                  for c, s, t, o, z in meta["index"]])
            return index
        count, clients = int(meta.get("index_count", 0)), [str(c) for c in
                                                             meta.get("index_clients", [])]
        if count < 0 or count and not meta.get("index_file"):
            raise BadIndex(f"{count} index rows and no index file")
        if count:
            index._open(folder, str(meta["index_file"]), clients)
            if os.fstat(index._file.fileno()).st_size < count * ROW.size:
                raise BadIndex(f"{index.file_name} holds fewer than {count} rows")
            index._file.truncate(count * ROW.size)
            index._n = count
            index._last = index.entry(count - 1)
        return index

    @classmethod
    def receive(cls, folder: str, count: int, clients: list, chunks, base_size: int,
                create_size: int) -> "MergedIndex":
        """A peer's index: `count` rows from `chunks`, written to a new file in `folder`,
        each checked against the base it came with (BadIndex)."""
        index = cls()
        if count < 0:
            raise BadIndex(f"{count} index rows")
        index._clients = [str(c) for c in clients]
        index._numbers = {c: i for i, c in enumerate(index._clients)}
        if not count:
            _drain_expecting(chunks, 0)
            return index
        index._create(folder)
        at, carry, end = 0, b"", create_size
        for chunk in chunks:
            data = carry + bytes(chunk)
            whole = len(data) - len(data) % ROW.size
            for number, seq, _, offset, size in ROW.iter_unpack(data[:whole]):
                if number >= len(index._clients) or not 0 <= seq or size < 0 \
                        or offset != end or offset + size > base_size:
                    raise BadIndex(f"index row {at // ROW.size} does not fit the base")
                end = offset + size
                at += ROW.size
            os.pwrite(index._file.fileno(), data[:whole], at - whole)
            carry = data[whole:]
        if carry or at != count * ROW.size:
            raise BadIndex(f"expected {count} index rows, received {at / ROW.size:g}")
        if end != base_size:
            raise BadIndex(f"the index covers {end} of the base's {base_size} bytes")
        os.fsync(index._file.fileno())
        index._n = count
        index._last = index.entry(count - 1)
        return index

    # -- growing ----------------------------------------------------------------------------

    def extend(self, folder: str, entries: list[Entry]) -> None:
        """Add entries at the end, durably (fsync'd); on failure (OSError, or OverflowError
        or struct.error for a number no row holds) the index stays as it was."""
        if self._frozen:
            raise TypeError("a frozen index does not change")
        if not entries:
            return
        numbers, clients = dict(self._numbers), list(self._clients)
        rows = []
        for client, seq, ts, offset, size in entries:
            number = numbers.setdefault(client, len(clients))
            if number == len(clients):
                clients.append(client)
            rows.append(ROW.pack(number, seq, ts, offset, size))
        if self._file is None:
            self._create(folder)
        os.pwrite(self._file.fileno(), b"".join(rows), self._n * ROW.size)
        os.fsync(self._file.fileno())
        self._clients[len(self._clients):] = clients[len(self._clients):]
        self._numbers = numbers
        self._n += len(entries)
        self._last = tuple(entries[-1])

    def _create(self, folder: str) -> None:
        self.file_name = new_name()
        self._file = open(os.path.join(folder, self.file_name), "w+b")

    def _open(self, folder: str, file_name: str, clients: list[str]) -> None:
        self.file_name = file_name
        self._file = open(os.path.join(folder, file_name), "r+b")
        self._clients = clients
        self._numbers = {c: i for i, c in enumerate(clients)}

    def frozen(self) -> "MergedIndex":
        """The first len(self) entries, fixed: later extends of self do not show in it."""
        view = object.__new__(MergedIndex)
        for slot in MergedIndex.__slots__:
            setattr(view, slot, getattr(self, slot))
        view._frozen = True
        return view

    # -- reading ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def last(self) -> Entry | None:
        return self._last

    def entry(self, i: int) -> Entry:
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self._entry(ROW.unpack(os.pread(self._file.fileno(), ROW.size, i * ROW.size)))

    def __iter__(self) -> Iterator[Entry]:
        for lo in range(0, self._n, READ_ROWS):
            yield from map(self._entry, self._rows(lo, min(lo + READ_ROWS, self._n)))

    def __reversed__(self) -> Iterator[Entry]:
        for hi in range(self._n, 0, -READ_ROWS):
            yield from map(self._entry, reversed(self._rows(max(hi - READ_ROWS, 0), hi)))

    def _rows(self, lo: int, hi: int) -> list:
        data = os.pread(self._file.fileno(), (hi - lo) * ROW.size, lo * ROW.size)
        if len(data) != (hi - lo) * ROW.size:
            raise BadIndex(f"{self.file_name} ends before row {hi}")
        return list(ROW.iter_unpack(data))

    def _entry(self, row: tuple) -> Entry:
        number, seq, ts, offset, size = row
        return (self._clients[number], seq, ts, offset, size)

    def ranges(self) -> list:
        """The rows as (file, offset, count) ranges, for a transfer to send (`sendfile`)."""
        return [(self._file, 0, self._n * ROW.size)] if self._n else []

    def nbytes(self) -> int:
        return self._n * ROW.size

    def chunks(self) -> Iterator[bytes]:
        """The rows' bytes, in blocks."""
        for lo in range(0, self._n, READ_ROWS):
            hi = min(lo + READ_ROWS, self._n)
            yield os.pread(self._file.fileno(), (hi - lo) * ROW.size, lo * ROW.size)

    def __eq__(self, other) -> bool:
        return isinstance(other, MergedIndex) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"MergedIndex({len(self)} entries)"


def _drain_expecting(chunks, size: int) -> None:
    got = sum(len(c) for c in chunks)
    if got != size:
        raise BadIndex(f"expected {size} index bytes, received {got}")
