"""A view of a file: the create's content and a chosen set of appends, in merge order (pure).

A reader that follows a growing file (a RainStorm source) needs byte offsets that mean the
same on every replica and stay put while the file grows and merges. The content of one
replica does not give that: before a merge its pending appends are in arrival order, which
differs between replicas, and a merge that sorts an append before older ones (merge.py)
moves bytes already read. A view does:

    the create's content (if asked for), then every append whose id is in the view's id
    set, each whole, sorted by (client timestamp, client id, sequence number)

which is a function of the id set alone (the merge order of merge.py), whether each append
is merged into this replica's base or still pending. So every replica that holds those ids
serves byte-identical views, before and after any merge; and a view of a larger id set
whose new appends all sort after the old ones starts with the smaller view.

`plan` lays a view out as `Part`s of the replica's content, from a snapshot's index (the
merged appends, where each lies in the base) and its pending records; runs of parts that lie
side by side in the base are joined, so a view that is a prefix of the base is one part. It
looks for the view's appends newest first and stops once it has them all, so a view of a
file's latest appends (a follower's batch) costs about what it holds, O(k log k); a view
of most of the file, O(n log n) in the appends the replica holds. The store reads the parts,
checked (store.py).
"""

from __future__ import annotations

from typing import NamedTuple

from hydfs.base_file import in_merge_order
from hydfs.idset import IdSet


class LacksAppends(Exception):
    """The replica does not hold every append of the view: `count` of them, such as
    `examples` (the first few, in id order)."""

    def __init__(self, count: int, examples: list):
        super().__init__(f"lacks {count} of its appends, such as {examples}")
        self.count, self.examples = count, examples


class Part(NamedTuple):
    """A stretch of a view: bytes [lo, lo + size) of the base (`record` None) or of the
    pending record at position `record` of the snapshot's log order (then lo is 0)."""
    record: int | None
    lo: int
    size: int


class View(NamedTuple):
    parts: list[Part]
    size: int


class _Chosen(NamedTuple):
    """An append of the view, with what the merge order sorts by."""
    ts: float
    client: str
    seq: int
    part: Part


def plan(index: list, pending: list, ids: IdSet, create: bool, create_size: int) -> View:
    """The view of `ids` (and the create's content if `create`) over a replica's merged
    appends (`index` entries [client, seq, ts, offset, size]) and pending `Record`s;
    LacksAppends if the replica does not hold every id of `ids`."""
    chosen, need = {}, len(ids)
    # Newest first: a follower's batch is SRC's latest appends, at the end of the pending
    # log or of the index, so its plan costs what it holds, not what the file holds.
    for i in range(len(pending) - 1, -1, -1):
        if len(chosen) == need:
            break
        r = pending[i]
        if r.id in ids:
            chosen[r.id] = _Chosen(r.ts, r.client, r.seq, Part(i, 0, r.size))
    for client, seq, ts, offset, size in reversed(index):
        if len(chosen) == need:
            break
        if (client, seq) in ids:
            chosen.setdefault((client, seq), _Chosen(ts, client, seq, Part(None, offset, size)))
    if len(chosen) != need:
        raise LacksAppends(len(ids) - len(chosen), _first_lacking(ids, chosen))
    parts = [Part(None, 0, create_size)] if create and create_size else []
    for c in in_merge_order(chosen.values()):
        _add(parts, c.part)
    return View(parts, sum(p.size for p in parts))


def _add(parts: list[Part], part: Part) -> None:
    """Append `part`, joined to the last one if it continues it in the base."""
    last = parts[-1] if parts else None
    if last is not None and part.record is None and last.record is None and \
            last.lo + last.size == part.lo:
        parts[-1] = Part(None, last.lo, last.size + part.size)
    elif part.size:
        parts.append(part)


def _first_lacking(ids: IdSet, held, most: int = 3) -> list:
    """The first few ids of `ids` not in `held`: what it visits is held but for those, so
    a huge id range costs no more than the appends the replica holds."""
    out = []
    for i in ids:
        if i not in held:
            out.append(list(i))
            if len(out) == most:
                break
    return out
