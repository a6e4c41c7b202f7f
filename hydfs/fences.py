"""Fences: once a writer is replaced, nothing it appends lands any more (pure).

A writer that can be replaced (a RainStorm task attempt) appends under a client id
``KEY#EPOCH`` (`writer_client`): the same KEY for every attempt, a higher EPOCH for each new
one. Before a new attempt reads what its predecessors wrote, it fences the file: every
replica then refuses appends of KEY from lower epochs, and the file's history for KEY is
sealed: the set of appends from lower epochs that stand, the same on every replica. Kafka's
producer epochs and fencing tokens (Kleppmann, "How to do distributed locking") work so.

A fence is raised in two steps, so that no append slips in between (coordinator.py):

1. *begin*: every replica records the new epoch as a provisional fence and refuses, from
   then on, every new append of KEY from a lower epoch; it reports the ids it holds.
2. *seal*: the coordinator takes the union of what they hold, less what an earlier sealed
   fence already refused (a replica that was cut off may have taken appends its peers
   refused), and every replica adopts that set: it drops what is not in it and is sent what
   it lacks.

After the fence returns, every replica holds exactly the sealed appends of lower epochs and
accepts no other; a reader sees a history that can no longer grow behind its back. An append
that a replica took but that was never acknowledged may be dropped by the seal, which is
what an unacknowledged append may always suffer.

Two rules, one for each way an append reaches a replica:

| fence of KEY            | epoch e of the append | a new append (a client's) | a stored one (re-replication, install, merge) |
|-------------------------|-----------------------|---------------------------|-----------------------------------------------|
| none                    | any                   | accepted                  | kept                                          |
| epoch F, provisional    | e >= F                | accepted                  | kept                                          |
| epoch F, provisional    | e <  F                | refused                   | kept (the seal decides)                       |
| epoch F, sealed with S  | e >= F                | accepted                  | kept                                          |
| epoch F, sealed with S  | e <  F                | refused                   | kept only if its id is in S                   |

A provisional fence refuses no stored append: it was raised by a fence that has not sealed
(its attempt may have died there, for good), and nobody has read on its strength.

A fence call that fails may be retried by its attempt at the same epoch; each try has a
higher `round`, so a seal a failed try left on some replicas is replaced by the seal of the
try that returned (the only one a reader relied on). Between two fences of one KEY the higher
(epoch, round) wins, and at one (epoch, round) a sealed fence beats a provisional one
(`stronger`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hydfs.idset import IdSet

SEPARATOR = "#"


def writer_client(key: str, epoch: int) -> str:
    """The client id under which attempt `epoch` of writer `key` appends."""
    return f"{key}{SEPARATOR}{epoch}"


def writer_of(client: str) -> tuple[str, int] | None:
    """(key, epoch) of a fenceable writer's client id; None for any other client."""
    key, sep, epoch = client.rpartition(SEPARATOR)
    if not sep or not key or not epoch.isdigit():
        return None
    return key, int(epoch)


@dataclass(frozen=True)
class Fence:
    epoch: int
    sealed: IdSet | None = None      # None: provisional (begun, not sealed yet)
    round: int = 0                   # which try of the fence call of this epoch

    @property
    def rank(self) -> tuple:
        return (self.epoch, self.round, self.sealed is not None)

    def to_wire(self) -> dict:
        doc = {"epoch": self.epoch, "round": self.round}
        if self.sealed is not None:
            doc["sealed"] = self.sealed.to_wire()
        return doc

    @classmethod
    def from_wire(cls, doc: dict) -> "Fence":
        epoch, rnd = doc["epoch"], doc.get("round", 0)
        for value in (epoch, rnd):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"bad fence epoch or round {value!r}")
        return cls(epoch, IdSet(doc["sealed"]) if "sealed" in doc else None, rnd)

    def accepts(self, epoch: int) -> bool:
        """May a new append from `epoch` be taken?"""
        return epoch >= self.epoch

    def keeps(self, epoch: int, append_id: tuple[str, int]) -> bool:
        """May a stored append from `epoch` stand?"""
        return epoch >= self.epoch or self.sealed is None or append_id in self.sealed


def stronger(a: Fence | None, b: Fence | None) -> Fence | None:
    """The fence that governs when a replica knows both."""
    if a is None or b is None:
        return a or b
    return a if a.rank >= b.rank else b


class Fences:
    """The fences of one file, by writer key (immutable)."""

    def __init__(self, fences: Mapping[str, Fence] | None = None):
        self._fences = dict(fences or {})

    @classmethod
    def from_wire(cls, doc: dict | None) -> "Fences":
        return cls({key: Fence.from_wire(f) for key, f in (doc or {}).items()})

    def to_wire(self) -> dict:
        return {key: f.to_wire() for key, f in sorted(self._fences.items())}

    def get(self, key: str) -> Fence | None:
        return self._fences.get(key)

    def __bool__(self) -> bool:
        return bool(self._fences)

    def __eq__(self, other) -> bool:
        return isinstance(other, Fences) and self.to_wire() == other.to_wire()

    def __repr__(self) -> str:
        return f"Fences({self.to_wire()})"

    def _fence_of(self, client: str):
        """(fence, epoch) of a writer's client id; (None, 0) for any other client."""
        writer = writer_of(client)
        if writer is None:
            return None, 0
        return self._fences.get(writer[0]), writer[1]

    def accepts(self, client: str) -> bool:
        """May a new append from `client` be taken (fences.py's first rule)?"""
        fence, epoch = self._fence_of(client)
        return fence is None or fence.accepts(epoch)

    def admits(self, client: str, seq: int) -> bool:
        """May the stored append (client, seq) stand in a file with these fences?"""
        fence, epoch = self._fence_of(client)
        return fence is None or fence.keeps(epoch, (client, seq))

    def admissible(self, ids: IdSet) -> IdSet:
        """The ids of `ids` these fences let stand (span by span, not id by id)."""
        kept = {}
        for client, spans in ids.to_wire().items():
            fence, epoch = self._fence_of(client)
            if fence is None or fence.keeps(epoch, (client, -1)):
                kept[client] = spans
            else:
                inside = _intersect(spans, fence.sealed.to_wire().get(client, []))
                if inside:
                    kept[client] = inside
        return IdSet(kept)

    def refused(self, ids: IdSet) -> list[tuple[str, int]]:
        """The ids of `ids` these fences do not let stand."""
        kept = self.admissible(ids)
        out = []
        for client, spans in ids.to_wire().items():
            fence, _ = self._fence_of(client)
            if fence is not None:
                out += [(client, seq) for lo, hi in spans for seq in range(lo, hi + 1)
                        if (client, seq) not in kept]
        return out

    def merged_with(self, other: "Fences") -> "Fences":
        """Per key, the stronger of the two."""
        keys = set(self._fences) | set(other._fences)
        return Fences({k: stronger(self._fences.get(k), other._fences.get(k)) for k in keys})

    def with_fence(self, key: str, fence: Fence) -> "Fences":
        return Fences({**self._fences, key: fence})

    def covers(self, other: "Fences") -> bool:
        """Are these fences at least as strong as `other`'s, key by key?"""
        return all(stronger(self._fences.get(k), f) == self._fences.get(k)
                   for k, f in other._fences.items())


def lower_epochs(ids: IdSet, key: str, epoch: int) -> IdSet:
    """The ids of `ids` that writer `key` appended from epochs below `epoch`."""
    return IdSet({client: spans for client, spans in ids.to_wire().items()
                  if (w := writer_of(client)) and w[0] == key and w[1] < epoch})


def seal(held: Mapping[str, IdSet], priors, key: str, epoch: int, rnd: int = 0) -> IdSet:
    """The sealed set of the fence of `key` at (`epoch`, `rnd`), from what each replica
    reported at *begin*: `held` (vm -> ids it holds) and `priors` (each one's fence of `key`
    before).

    A fence already sealed at this very try keeps its set (a seal replayed). Otherwise: the
    union of what the replicas hold from lower epochs, less what the strongest earlier
    sealed fence of a lower epoch refuses (a provisional one refuses nothing anyone read: no
    attempt reads before its fence returned; nor does an earlier try of this epoch: its
    attempt read nothing on its strength either)."""
    for fence in priors:
        if fence is not None and fence.sealed is not None and \
                (fence.epoch, fence.round) == (epoch, rnd):
            return fence.sealed
    union = IdSet()
    for ids in held.values():
        union = union.union(lower_epochs(ids, key, epoch))
    sealed_priors = [f for f in priors
                     if f is not None and f.sealed is not None and f.epoch < epoch]
    if not sealed_priors:
        return union
    prior = max(sealed_priors, key=lambda f: f.rank)
    return Fences({key: prior}).admissible(union)


def _intersect(a: list, b: list) -> list:
    """The intersection of two sorted lists of inclusive [lo, hi] spans."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append([lo, hi])
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out
