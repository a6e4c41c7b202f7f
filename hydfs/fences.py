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

The rule for one append, on every path by which it can reach a replica (a client's append,
re-replication, a merge), is `admits`:

| fence of KEY              | the append's epoch e   | admitted?               |
|---------------------------|------------------------|-------------------------|
| none                      | any                    | yes                     |
| epoch F, provisional      | e >= F                 | yes                     |
| epoch F, provisional      | e <  F                 | no (unless held: kept)  |
| epoch F, sealed with S    | e >= F                 | yes                     |
| epoch F, sealed with S    | e <  F                 | only if its id is in S  |

Between two fences of one KEY the higher epoch wins, and at one epoch a sealed fence beats
a provisional one; a sealed fence never changes (`stronger`).
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

    def to_wire(self) -> dict:
        doc = {"epoch": self.epoch}
        if self.sealed is not None:
            doc["sealed"] = self.sealed.to_wire()
        return doc

    @classmethod
    def from_wire(cls, doc: dict) -> "Fence":
        epoch = doc["epoch"]
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError(f"bad fence epoch {epoch!r}")
        return cls(epoch, IdSet(doc["sealed"]) if "sealed" in doc else None)

    def admits(self, epoch: int, append_id: tuple[str, int]) -> bool:
        if epoch >= self.epoch:
            return True
        return self.sealed is not None and append_id in self.sealed


def stronger(a: Fence | None, b: Fence | None) -> Fence | None:
    """The fence that governs when a replica knows both."""
    if a is None or b is None:
        return a or b
    if a.epoch != b.epoch:
        return a if a.epoch > b.epoch else b
    return a if a.sealed is not None or b.sealed is None else b


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

    def admits(self, client: str, seq: int) -> bool:
        """May append (client, seq) stand in a file with these fences?"""
        writer = writer_of(client)
        if writer is None:
            return True
        fence = self._fences.get(writer[0])
        return fence is None or fence.admits(writer[1], (client, seq))

    def admissible(self, ids: IdSet) -> IdSet:
        """The ids of `ids` these fences admit (ranges of other clients kept whole)."""
        if not self._fences:
            return ids
        kept = {}
        for client, spans in ids.to_wire().items():
            writer = writer_of(client)
            fence = self._fences.get(writer[0]) if writer else None
            if fence is None or writer[1] >= fence.epoch:
                kept[client] = spans
            elif fence.sealed is not None:
                inside = [[seq, seq] for lo, hi in spans for seq in range(lo, hi + 1)
                          if (client, seq) in fence.sealed]
                if inside:
                    kept[client] = inside
        return IdSet(kept)

    def refused(self, ids: IdSet) -> list[tuple[str, int]]:
        """The ids of `ids` these fences do not admit."""
        out = []
        for client, spans in ids.to_wire().items():
            writer = writer_of(client)
            fence = self._fences.get(writer[0]) if writer else None
            if fence is not None and writer[1] < fence.epoch:
                out += [(client, seq) for lo, hi in spans for seq in range(lo, hi + 1)
                        if not fence.admits(writer[1], (client, seq))]
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


def seal(held: Mapping[str, IdSet], priors, key: str, epoch: int) -> IdSet:
    """The sealed set of the fence of `key` at `epoch`, from what each replica reported at
    *begin*: `held` (vm -> ids it holds) and `priors` (each one's fence of `key` before).

    A fence already sealed at this epoch (this fence retried after a partial seal) keeps its
    set. Otherwise: the union of what the replicas hold from lower epochs, less what the
    strongest earlier *sealed* fence refuses. (A provisional one that never sealed refused
    nothing anyone had read: no attempt reads before its fence is sealed.)"""
    for fence in priors:
        if fence is not None and fence.epoch == epoch and fence.sealed is not None:
            return fence.sealed
    union = IdSet()
    for ids in held.values():
        union = union.union(lower_epochs(ids, key, epoch))
    sealed_priors = [f for f in priors if f is not None and f.sealed is not None]
    if not sealed_priors:
        return union
    prior = max(sealed_priors, key=lambda f: f.epoch)
    return Fences({key: prior}).admissible(union)
