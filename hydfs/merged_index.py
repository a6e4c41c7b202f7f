"""The index of a base's merged appends: which append lies where, kept in a file beside the
base.

A replica needs, for each append merged into its base, its id (client, seq), its client
timestamp (the merge order sorts by it) and where its bytes lie (offset, size): views,
re-replication of single appends and rebuilding merges read them. A file that takes
appends for days holds millions, so they live on disk, not in memory: ``index.<token>``
holds one fixed-size row per merged append (`ROW`: client number, seq, ts, offset, size,
and a CRC-32 of those; 40 bytes), in base order, which is merge order (base_file.py), so
the last row is the greatest. The few client ids (one per writer attempt) and the row count are in meta.json
(`meta`). In memory a `MergedIndex` holds only its client table, its count and its last
entry, and no open file (a node may hold thousands of files).

The file only grows at its end (`extend`, by a merge in place: the rows are written and
fsync'd before meta.json commits the larger count; rows past the committed count are a
crashed merge's leftovers, cut off at load and overwritten by the next extend) until a
rebuild writes a new index under a new name. So the first `len` rows never change, and
`view()`, a snapshot's fixed view of them, is an open handle and a count, copying nothing;
it reads on after a rebuild unlinks the file, until the snapshot closes it. Reads are
`pread`s of the page-cached file, in blocks of rows, each row checked against its CRC
(CorruptReplica, like a base block that fails its own).

State transfers stream the rows as bulk bytes after the base (`chunks`, `ranges`), and the
receiver checks each row as it writes it (`receive`): its CRC, that it lies right after
the one before in the base and sorts after it, and that the rows are exactly the appends
the sender's summary says are merged. A rebuild writes its rows one by one (`IndexWriter`),
so no index is ever held whole in memory.
"""

from __future__ import annotations

import math
import os
import struct
import uuid
import zlib
from typing import Iterator

from hydfs.checked_read import CorruptReplica
from hydfs.idset import IdSet

Entry = tuple  # (client, seq, ts, offset, size)

_FIELDS = struct.Struct("<Iqdqq")  # client number, seq, ts, offset, size
ROW = struct.Struct("<IqdqqI")     # ... and the CRC-32 of those 36 bytes
READ_ROWS = 1024                   # rows read at once when iterating


def pack_row(number: int, seq: int, ts: float, offset: int, size: int) -> bytes:
    fields = _FIELDS.pack(number, seq, ts, offset, size)
    return fields + struct.pack("<I", zlib.crc32(fields))


def unpack_rows(data: bytes, first: int, where: str) -> list:
    """The (number, seq, ts, offset, size) of each whole row of `data`, the first being row
    `first`; CorruptReplica if one fails its CRC."""
    view, out = memoryview(data), []
    for i, row in enumerate(ROW.iter_unpack(data)):
        if zlib.crc32(view[i * ROW.size:i * ROW.size + _FIELDS.size]) != row[5]:
            raise CorruptReplica(f"{where}: index row {first + i} fails its checksum")
        out.append(row[:5])
    return out


def _number(numbers: dict[str, int], clients: list[str], client: str) -> int:
    """`client`'s number in the table (`numbers` its inverse), added if it is new."""
    number = numbers.setdefault(client, len(clients))
    if number == len(clients):
        clients.append(client)
    return number


class BadIndex(ValueError):
    """Index rows that do not describe the base they came with (a corrupt or hostile
    transfer, or a damaged file)."""


def new_name() -> str:
    return f"index.{uuid.uuid4().hex[:12]}"


class _Rows:
    """What both an index and a view of it say without reading: how many rows, the last."""
    __slots__ = ()

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def last(self) -> Entry | None:
        return self._last


class MergedIndex(_Rows):
    """A replica's committed index: what meta.json says of it, and its last entry."""
    __slots__ = ("file_name", "_n", "_clients", "_numbers", "_last")

    def __init__(self):
        """An empty index, with no file until its first `extend`."""
        self.file_name = ""
        self._n = 0
        self._clients: list[str] = []           # client number -> id (only ever grows)
        self._numbers: dict[str, int] = {}      # client id -> number
        self._last: Entry | None = None

    def copy(self) -> "MergedIndex":
        """An index to extend without changing this one (the rows it adds go past this
        one's count, which reads never pass)."""
        other = MergedIndex()
        other.file_name, other._n, other._last = self.file_name, self._n, self._last
        other._clients, other._numbers = list(self._clients), dict(self._numbers)
        return other

    def meta(self) -> dict:
        """What meta.json records of the index."""
        return {"index_file": self.file_name, "index_count": self._n,
                "index_clients": list(self._clients)}

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
            number, seq, ts, offset, size = unpack_rows(
                os.pread(f.fileno(), ROW.size, (count - 1) * ROW.size), count - 1, f.name)[0]
        if number >= len(index._clients) or offset + size != int(meta["base_size"]):
            raise BadIndex(f"{index.file_name}: its last row does not end the base")
        index._n, index._last = count, (index._clients[number], seq, ts, offset, size)
        return index

    @classmethod
    def receive(cls, folder: str, count: int, clients: list, merged: IdSet, chunks,
                base_size: int, create_size: int) -> "MergedIndex":
        """A peer's index: `count` rows from `chunks`, written to a new file in `folder`,
        each checked against the base it came with and the `merged` ids its summary gave
        (BadIndex)."""
        index = cls()
        if count != len(merged):
            raise BadIndex(f"{count} index rows for {len(merged)} merged appends")
        if not count:
            extra = sum(len(c) for c in chunks)
            if extra:
                raise BadIndex(f"{extra} bytes past the base, and no index rows")
            return index
        index._name_clients(new_name(), [str(c) for c in clients])
        writer = IndexWriter(folder, index)
        try:
            at, carry, end, last = 0, b"", create_size, None
            for chunk in chunks:
                data = carry + bytes(chunk)
                whole = len(data) - len(data) % ROW.size
                for number, seq, ts, offset, size in unpack_rows(data[:whole], at, "received"):
                    if number >= len(index._clients) or size < 0 or offset != end \
                            or offset + size > base_size or not math.isfinite(ts):
                        raise BadIndex(f"index row {at} does not fit the base")
                    entry = (index._clients[number], seq, ts, offset, size)
                    if (entry[0], seq) not in merged or \
                            last is not None and (ts, entry[0], seq) <= (last[2], last[0], last[1]):
                        raise BadIndex(f"index row {at} is not the next merged append")
                    writer.add(*entry)
                    end, last, at = offset + size, entry, at + 1
                carry = data[whole:]
            if carry or at != count:
                raise BadIndex(f"expected {count} index rows, received {at}")
            if end != base_size:
                raise BadIndex(f"the index covers {end} of the base's {base_size} bytes")
            return writer.finish()
        except BaseException:
            writer.abort()
            raise

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
        rows = [pack_row(_number(numbers, clients, client), seq, ts, offset, size)
                for client, seq, ts, offset, size in entries]
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


class IndexView(_Rows):
    """A fixed number of an index's rows, read through an open handle (`MergedIndex.view`)."""
    __slots__ = ("_file", "_n", "_clients", "_last")

    def __init__(self, file, count: int, clients: list[str], last: Entry | None):
        self._file, self._n, self._clients, self._last = file, count, clients, last

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def entry(self, i: int) -> Entry:
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self._entry(self._rows(i, i + 1)[0])

    def __iter__(self) -> Iterator[Entry]:
        for lo in range(0, self._n, READ_ROWS):
            yield from map(self._entry, self._rows(lo, min(lo + READ_ROWS, self._n)))

    def __reversed__(self) -> Iterator[Entry]:
        for hi in range(self._n, 0, -READ_ROWS):
            yield from map(self._entry, reversed(self._rows(max(hi - READ_ROWS, 0), hi)))

    def _rows(self, lo: int, hi: int) -> list:
        return unpack_rows(self._bytes(lo, hi), lo, self._file.name)

    def _bytes(self, lo: int, hi: int) -> bytes:
        """Rows [lo, hi) as stored; CorruptReplica if the file ends before them."""
        data = os.pread(self._file.fileno(), (hi - lo) * ROW.size, lo * ROW.size)
        if len(data) != (hi - lo) * ROW.size:
            raise CorruptReplica(f"{self._file.name} ends before index row {hi}")
        return data

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
            yield self._bytes(lo, min(lo + READ_ROWS, self._n))

    def __repr__(self) -> str:
        return f"IndexView({self._n} entries)"


class IndexWriter:
    """A new index file written row by row (a rebuild, a received index), buffered, and
    fsync'd by `finish`, which returns it as a MergedIndex; `abort` deletes it."""

    def __init__(self, folder: str, index: MergedIndex | None = None):
        self.index = index or MergedIndex()
        if not self.index.file_name:
            self.index.file_name = new_name()
        self._path = os.path.join(folder, self.index.file_name)
        self._file = open(self._path, "wb")
        self._rows: list[bytes] = []
        self._last: Entry | None = None

    def add(self, client: str, seq: int, ts: float, offset: int, size: int) -> None:
        number = _number(self.index._numbers, self.index._clients, client)
        self._rows.append(pack_row(number, seq, ts, offset, size))
        self._last = (client, seq, ts, offset, size)
        if len(self._rows) >= READ_ROWS:
            self._flush()

    def _flush(self) -> None:
        self._file.write(b"".join(self._rows))
        self.index._n += len(self._rows)
        self._rows = []

    def finish(self) -> MergedIndex:
        self._flush()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        index = self.index
        if not index._n:                    # nothing merged: no file
            os.unlink(self._path)
            index.file_name = ""
        index._last = self._last
        return index

    def abort(self) -> None:
        self._file.close()
        try:
            os.unlink(self._path)
        except OSError:
            pass
