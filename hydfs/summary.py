"""A replica's summary of its copy: what nodes compare instead of the bytes.

    {"name": ..., "file_id": "which create made it", "gen": merge generation,
     "merge_id": "which merge made that generation", "merged": IdSet of the appends in the
     base, "pending": IdSet of the appends after it, "size": bytes,
     "fences": the fences of replaced writers (fences.py; absent when there are none)}

Manifests (re-replication), merges and state transfers decide from summaries alone
(`store.FileState.summary` makes them). Whether an append is merged or pending does not
matter when comparing what two copies hold: a merge's result depends only on the set of
appends (merge.py). Appends a copy holds that a stronger fence refuses do not count: they
are dropped wherever that fence reaches.
"""

from __future__ import annotations

from hydfs.fences import Fences
from hydfs.idset import IdSet


def held_ids(summary: dict) -> IdSet:
    """Every append the copy holds, merged or pending."""
    return IdSet(summary["merged"]).union(IdSet(summary["pending"]))


def fences_of(summary: dict) -> Fences:
    return Fences.from_wire(summary.get("fences"))


def covers(mine: dict | None, theirs: dict) -> bool:
    """Does copy `mine` hold every append copy `theirs` holds (of the same create), and
    know every fence it knows? Appends that mine's fences refuse do not count."""
    if mine is None or mine["file_id"] != theirs["file_id"]:
        return False
    my_fences = fences_of(mine)
    if not my_fences.covers(fences_of(theirs)):
        return False          # it knows of a replaced writer that we do not: learn it
    return held_ids(mine).covers(my_fences.admissible(held_ids(theirs)))
