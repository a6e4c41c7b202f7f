"""Sets of append ids, kept as ranges: what a replica holds, compactly.

An append id is `(client, seq)`: the appending client's id and its sequence number for that
file (1, 2, 3, ... per client and file). A client's appends are sequential, so a replica's
set is almost always one range per client; `IdSet` stores `{client: [[lo, hi], ...]}` with
inclusive, sorted, non-overlapping ranges. It answers membership, union, difference and
"covers", which is what deduplication, merge and re-replication ask.
"""

from __future__ import annotations

import bisect
from typing import Iterable


class IdSet:
    def __init__(self, ranges: dict | None = None):
        self._ranges: dict[str, list[list[int]]] = {}
        for client, spans in (ranges or {}).items():
            for lo, hi in spans:
                for seq in (lo, hi):
                    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
                        raise ValueError(f"bad sequence number {seq!r}")
                self._add_range(str(client), lo, hi)

    @classmethod
    def of(cls, ids: Iterable[tuple[str, int]]) -> "IdSet":
        result = cls()
        for client, seq in ids:
            result.add(client, seq)
        return result

    def to_wire(self) -> dict:
        return {c: [list(r) for r in spans] for c, spans in self._ranges.items()}

    def __contains__(self, item: tuple[str, int]) -> bool:
        client, seq = item
        spans = self._ranges.get(client)
        if not spans:
            return False
        i = bisect.bisect_right(spans, [seq, float("inf")]) - 1
        return i >= 0 and spans[i][0] <= seq <= spans[i][1]

    def __len__(self) -> int:
        return sum(hi - lo + 1 for spans in self._ranges.values() for lo, hi in spans)

    def __eq__(self, other) -> bool:
        return isinstance(other, IdSet) and self._ranges == other._ranges

    def __iter__(self):
        for client in sorted(self._ranges):
            for lo, hi in self._ranges[client]:
                for seq in range(lo, hi + 1):
                    yield client, seq

    def __repr__(self) -> str:
        return f"IdSet({self._ranges})"

    def add(self, client: str, seq: int) -> None:
        self._add_range(client, seq, seq)

    def union(self, other: "IdSet") -> "IdSet":
        result = IdSet(self.to_wire())
        for client, spans in other._ranges.items():
            for lo, hi in spans:
                result._add_range(client, lo, hi)
        return result

    def covers(self, other: "IdSet") -> bool:
        """Does this set contain every id of `other`? (span by span, not id by id)"""
        for client, spans in other._ranges.items():
            mine = self._ranges.get(client, [])
            for lo, hi in spans:
                i = bisect.bisect_right(mine, [lo, float("inf")]) - 1
                if i < 0 or not (mine[i][0] <= lo and hi <= mine[i][1]):
                    return False
        return True

    def difference(self, other: "IdSet") -> "IdSet":
        """The ids of this set that `other` lacks (span by span)."""
        result = IdSet()
        for client, spans in self._ranges.items():
            theirs = other._ranges.get(client, [])
            for lo, hi in spans:
                for a, b in _minus(lo, hi, theirs):
                    result._add_range(client, a, b)
        return result

    def max_seq(self, client: str) -> int:
        spans = self._ranges.get(client)
        return spans[-1][1] if spans else 0

    def _add_range(self, client: str, lo: int, hi: int) -> None:
        if lo > hi:
            raise ValueError(f"bad range {lo}..{hi}")
        spans = self._ranges.setdefault(client, [])
        i = bisect.bisect_left(spans, [lo, hi])
        start = i - 1 if i > 0 and spans[i - 1][1] + 1 >= lo else i
        end = i
        while end < len(spans) and spans[end][0] <= hi + 1:
            end += 1
        if start < end:          # overlaps or touches its neighbours: one span for all
            lo, hi = min(lo, spans[start][0]), max(hi, spans[end - 1][1])
        spans[start:end] = [[lo, hi]]


def held_by_at_least(sets: list[IdSet], n: int) -> IdSet:
    """The ids that at least `n` (>= 1) of `sets` contain: a sweep over their ranges, so
    the cost grows with the number of ranges, not of ids."""
    n = max(n, 1)
    edges: dict[str, list[tuple[int, int]]] = {}
    for ids in sets:
        for client, spans in ids._ranges.items():
            for lo, hi in spans:
                edges.setdefault(client, []).extend([(lo, 1), (hi + 1, -1)])
    result = IdSet()
    for client, points in edges.items():
        depth, since = 0, None
        for seq, step in sorted(points):         # at one seq, ends (-1) before starts (+1)
            depth += step
            if depth >= n and since is None:
                since = seq
            elif depth < n and since is not None:
                if since < seq:
                    result._add_range(client, since, seq - 1)
                since = None
    return result


def _minus(lo: int, hi: int, spans: list) -> list:
    """[lo, hi] without the sorted, disjoint `spans`, as ranges."""
    out, at = [], lo
    for a, b in spans[max(bisect.bisect_right(spans, [lo, float("inf")]) - 1, 0):]:
        if a > hi:
            break
        if b < at:
            continue
        if a > at:
            out.append((at, a - 1))
        at = max(at, b + 1)
        if at > hi:
            return out
    if at <= hi:
        out.append((at, hi))
    return out
