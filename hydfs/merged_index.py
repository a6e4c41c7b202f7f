"""The index of a base's merged appends: which append lies where, compactly (pure).

A replica needs, for each append merged into its base, its id (client, seq), its client
timestamp (the merge order sorts by it) and where its bytes lie (offset, size): views,
re-replication of single appends and rebuilding merges read them. A file that takes
appends for days holds many, so they are kept in columns of machine numbers (about 36
bytes an append) instead of a Python list per append (about 200), with each client id
stored once.

Entries are in base order, which is merge order (base_file.py), so the last entry is the
greatest. The index only ever grows at its end until a rebuild replaces it whole; so
`frozen()`, a snapshot's fixed view of the first `len` entries, shares the columns and
copies nothing. Its wire and meta.json form is the list `[[client, seq, ts, offset,
size], ...]`.
"""

from __future__ import annotations

from array import array
from typing import Iterator

Entry = tuple  # (client, seq, ts, offset, size)


class MergedIndex:
    __slots__ = ("_clients", "_numbers", "_client", "_seq", "_ts", "_offset", "_size", "_n",
                 "_frozen")

    def __init__(self, entries=()):
        self._clients: list[str] = []          # client number -> id
        self._numbers: dict[str, int] = {}     # client id -> number
        self._client, self._seq = array("I"), array("q")
        self._ts, self._offset, self._size = array("d"), array("q"), array("q")
        self._n, self._frozen = 0, False
        for client, seq, ts, offset, size in entries:
            self.append(client, seq, ts, offset, size)

    @classmethod
    def from_wire(cls, entries) -> "MergedIndex":
        return cls((str(c), int(s), float(t), int(o), int(z)) for c, s, t, o, z in entries)

    def to_wire(self) -> list:
        return [list(e) for e in self]

    def append(self, client: str, seq: int, ts: float, offset: int, size: int) -> None:
        """Add an entry; OverflowError or TypeError (a number no column holds) leaves the
        index as it was: its columns never fall out of step."""
        if self._frozen:
            raise TypeError("a frozen index does not change")
        number = self._numbers.get(client, len(self._clients))
        columns = (self._client, self._seq, self._ts, self._offset, self._size)
        done = 0
        try:
            for column, value in zip(columns, (number, seq, ts, offset, size)):
                column.append(value)
                done += 1
        except (OverflowError, TypeError):
            for column in columns[:done]:
                column.pop()
            raise
        if number == len(self._clients):
            self._numbers[client] = number
            self._clients.append(client)
        self._n += 1

    def truncate(self, n: int) -> None:
        """Keep only the first n entries (undoing appends of a merge that failed)."""
        if self._frozen:
            raise TypeError("a frozen index does not change")
        for column in (self._client, self._seq, self._ts, self._offset, self._size):
            del column[n:]
        self._n = min(self._n, n)

    def frozen(self) -> "MergedIndex":
        """The first len(self) entries, fixed: later appends to self do not show in it."""
        view = object.__new__(MergedIndex)
        for slot in MergedIndex.__slots__:
            setattr(view, slot, getattr(self, slot))
        view._frozen = True
        return view

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def entry(self, i: int) -> Entry:
        if not 0 <= i < self._n:
            raise IndexError(i)
        return (self._clients[self._client[i]], self._seq[i], self._ts[i], self._offset[i],
                self._size[i])

    def __iter__(self) -> Iterator[Entry]:
        return (self.entry(i) for i in range(self._n))

    def __reversed__(self) -> Iterator[Entry]:
        return (self.entry(i) for i in range(self._n - 1, -1, -1))

    def last(self) -> Entry | None:
        return self.entry(self._n - 1) if self._n else None

    def __eq__(self, other) -> bool:
        return isinstance(other, MergedIndex) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"MergedIndex({len(self)} entries)"
