"""The index of a base's merged appends: which append lies where, kept in a file beside the
base.

A replica needs, for each append merged into its base, its id (client, seq), its client
timestamp (the merge order sorts by it) and where its bytes lie (offset, size): views,
re-replication of single appends and rebuilding merges read them. A file that takes
appends for days holds millions, so they live on disk, not in memory: ``index.<token>``
holds one fixed-size row per merged append (`ROW`: client number, seq, ts, offset, size;
36 bytes), in base order, which is merge order (base_file.py), so the last row is the
greatest. The few client ids (one per writer attempt) and the row count are in meta.json
(`meta`). In memory a `MergedIndex` holds only its client table, its count and its last
entry, and no open file (a node may hold thousands of files).

The file only grows at its end (`extend`, by a merge in place: the rows are written and
fsync'd before meta.json commits the larger count; rows past the committed count are a
crashed merge's leftovers, cut off at load and overwritten by the next extend) until a
rebuild writes a new index under a new name. So the first `len` rows never change, and
`view()`, a snapshot's fixed view of them, is an open handle and a count, copying nothing;
it reads on after a rebuild unlinks the file, until the snapshot closes it. Reads are
`pread`s of the page-cached file, in blocks of rows.

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
    """A replica's committed index: what meta.json says of it, and its last entry."""
    __slots__ = ("file_name", "_n", "_clients", "_numbers", "_last")

    def __init__(self):
        """An empty index, with no file until its first `extend`."""
        self.file_name = ""
        self._n = 0
        self._clients: list[str] = []           # client number -> id (only ever grows)
        self._numbers: dict[str, int] = {}      # client id -> number
        self._last: Entry | None = None

    def meta(self) -> dict:
        """What meta.json records of the index."""
        return {"index_file": self.file_name, "index_count": self._n,
                "index_clients": list(self._clients)}

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def last(self) -> Entry | None:
        return self._last

    def __repr__(self) -> str:
        return f"MergedIndex({self._n} entries in {self.file_name or 'no file'})"

    # -- loading ----------------------------------------------------------------------------

    @classmethod
    def load(cls, folder: str, meta: dict) -> "MergedIndex":
        """The committed index that meta.json describes, in `folder`; rows beyond its count
        (a crashed merge's) are cut off. ValueError or OSError if it cannot be."""
        index = cls()
        if "index" in meta:                     # an older meta.json: the rows inline
            index.extend(folder, [(str(c), int(s), float(t), int(o), int(z))
                                  for c, s, t, o, z in meta["index"]])
            return index
        count = int(meta.get("index_count", 0))
        if count < 0 or count and not meta.get("index_file"):
            raise BadIndex(f"{count} index rows and no index file")
        if not count:
            return index
        index._name_clients(str(meta["index_file"]), [str(c) for c in meta["index_clients"]])
        with open(os.path.join(folder, index.file_name), "r+b") as f:
            if os.fstat(f.fileno()).st_size < count * ROW.size:
                raise BadIndex(f"{index.file_name} holds fewer than {count} rows")
            f.truncate(count * ROW.size)
            index._n = count
            index._last = IndexView(f, count, index._clients, None).entry(count - 1)
        return index

    @classmethod
    def receive(cls, folder: str, count: int, clients: list, chunks, base_size: int,
                create_size: int) -> "MergedIndex":
        """A peer's index: `count` rows from `chunks`, written to a new file in `folder`,
        each checked against the base it came with (BadIndex)."""
        index = cls()
        if count < 0:
            raise BadIndex(f"{count} index rows")
        if not count:
            _drain_expecting(chunks, 0)
            return index
        index._name_clients(new_name(), [str(c) for c in clients])
        at, carry, end = 0, b"", create_size
        with open(os.path.join(folder, index.file_name), "wb") as f:
            for chunk in chunks:
                data = carry + bytes(chunk)
                whole = len(data) - len(data) % ROW.size
                for number, seq, ts, offset, size in ROW.iter_unpack(data[:whole]):
                    if number >= len(index._clients) or seq < 0 or size < 0 \
                            or offset != end or offset + size > base_size:
                        raise BadIndex(f"index row {at // ROW.size} does not fit the base")
                    end = offset + size
                    at += ROW.size
                    index._last = (index._clients[number], seq, ts, offset, size)
                f.write(data[:whole])
                carry = data[whole:]
            if carry or at != count * ROW.size:
                raise BadIndex(f"expected {count} index rows, received {at / ROW.size:g}")
            if end != base_size:
                raise BadIndex(f"the index covers {end} of the base's {base_size} bytes")
            f.flush()
            os.fsync(f.fileno())
        index._n = count
        return index

    def _name_clients(self, file_name: str, clients: list[str]) -> None:
        self.file_name = file_name
        self._clients = clients
        self._numbers = {c: i for i, c in enumerate(clients)}

    # -- growing ----------------------------------------------------------------------------

    def extend(self, folder: str, entries: list[Entry]) -> None:
        """Add entries at the end, durably (fsync'd); on failure (OSError, or OverflowError
        or struct.error for a number no row holds) the index stays as it was."""
        if not entries:
            return
        numbers, clients = dict(self._numbers), list(self._clients)
        rows = []
        for client, seq, ts, offset, size in entries:
            number = numbers.setdefault(client, len(clients))
            if number == len(clients):
                clients.append(client)
            rows.append(ROW.pack(number, seq, ts, offset, size))
        file_name = self.file_name or new_name()
        with open(os.path.join(folder, file_name), "r+b" if self.file_name else "wb") as f:
            os.pwrite(f.fileno(), b"".join(rows), self._n * ROW.size)
            os.fsync(f.fileno())
        self.file_name = file_name
        self._clients[len(self._clients):] = clients[len(self._clients):]
        self._numbers = numbers
        self._n += len(entries)
        self._last = tuple(entries[-1])

    # -- reading ----------------------------------------------------------------------------

    def view(self, folder: str) -> "IndexView":
        """The first len(self) entries, fixed, through a handle of their own (the caller
        closes it): later extends do not show in it, and a rebuild that deletes the file
        does not stop it."""
        f = open(os.path.join(folder, self.file_name), "rb") if self._n else None
        return IndexView(f, self._n, self._clients, self._last)


class IndexView:
    """A fixed number of an index's rows, read through an open handle (`MergedIndex.view`)."""
    __slots__ = ("_file", "_n", "_clients", "_last")

    def __init__(self, file, count: int, clients: list[str], last: Entry | None):
        self._file, self._n, self._clients, self._last = file, count, clients, last

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

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
            raise BadIndex(f"the index ends before row {hi}")
        return list(ROW.iter_unpack(data))

    def _entry(self, row: tuple) -> Entry:
        number, seq, ts, offset, size = row
        return (self._clients[number], seq, ts, offset, size)

    def header(self) -> dict:
        """What a state transfer says of the rows it streams after the base."""
        return {"count": self._n, "clients": list(self._clients)}

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
        return isinstance(other, IndexView) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"IndexView({self._n} entries)"


def _drain_expecting(chunks, size: int) -> None:
    got = sum(len(c) for c in chunks)
    if got != size:
        raise BadIndex(f"expected {size} index bytes, received {got}")
