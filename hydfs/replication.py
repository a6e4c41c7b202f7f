"""Re-replication: what this node must pull, and which copies it may drop (pure).

Pull-based, as the seed describes. Whenever membership changes, and every resync interval
as a safety net, a node collects every live member's manifest (file name -> summary) and
compares them with its own copies on the ring of live members:

- a file whose replica set includes this node is pulled from a peer that holds something
  this node's copy lacks: the file itself, a newer merge generation, or pending appends
  (so appends made while a replica was down reach it);
- a copy this node holds but is no longer a replica of is dropped once every current
  replica holds everything it holds ("excess copies are removed", never the last one),
  or once every replica holds the name from an earlier create (this copy's create lost a
  race that a partition let both sides win).

Comparisons use only the summaries (summary.py): file id, generation and the id sets, so a
plan is cheap and deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydfs.ring import Ring
from hydfs.summary import covers, held_ids


@dataclass
class Plan:
    pulls: list = field(default_factory=list)     # (file name, peer vm to pull from)
    drops: list = field(default_factory=list)     # file names this node may delete
    lost: list = field(default_factory=list)      # ... of them, copies of a create that lost


def plan(me: str, ring: Ring, replicas: int, local: dict[str, dict],
         manifests: dict[str, dict[str, dict]]) -> Plan:
    """`local`: my summaries by name; `manifests`: peer vm -> its summaries by name."""
    result = Plan()
    names = set(local).union(*(m.keys() for m in manifests.values())) if manifests else set(local)
    for name in sorted(names):
        owners = ring.replicas(name, replicas)
        mine = local.get(name)
        if me in owners:
            source = _first_peer_with_more(name, mine, manifests, owners)
            if source is not None:
                result.pulls.append((name, source))
        elif mine is not None and _safe_to_drop(name, mine, owners, manifests):
            result.drops.append(name)
            if not all(covers(manifests.get(vm, {}).get(name), mine) for vm in owners):
                result.lost.append(name)
    return result


def _first_peer_with_more(name, mine, manifests, owners) -> str | None:
    """The peer with the most to give: newest generation, most appends; ties go to the
    file's current replicas, then to the lowest node name."""
    def rank(vm):
        theirs = manifests[vm][name]
        return (-theirs["gen"], -len(held_ids(theirs)), vm not in owners, vm)
    candidates = [vm for vm in manifests if name in manifests[vm]
                  and not covers(mine, manifests[vm][name])
                  and _worth_pulling(mine, manifests[vm][name])]
    return min(candidates, key=rank) if candidates else None


def _worth_pulling(mine: dict | None, theirs: dict) -> bool:
    """Never replace a copy with an older file of the same name (e.g. a stale leftover)."""
    return mine is None or mine["file_id"] == theirs["file_id"] or \
        theirs["file_id"] < mine["file_id"]


def _safe_to_drop(name, mine, owners, manifests) -> bool:
    """Every current replica holds all this copy holds; or every one holds the name from an
    earlier create, so this copy's create lost (both sides of a partition created the name:
    the earlier create is the file, README "Partitions"), and it would never be dropped."""
    if not owners:
        return False
    theirs = [manifests.get(vm, {}).get(name) for vm in owners]
    return all(covers(t, mine) for t in theirs) or all(
        t is not None and t["file_id"] < mine["file_id"] for t in theirs)
