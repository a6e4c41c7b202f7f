"""A replica's summary of its copy: what nodes compare instead of the bytes.

    {"name": ..., "file_id": "which create made it", "gen": merge generation,
     "merge_id": "which merge made that generation", "merged": IdSet of the appends in the
     base, "pending": IdSet of the appends after it, "size": bytes}

Manifests (re-replication), merges and state transfers decide from summaries alone
(`store.FileState.summary` makes them). Whether an append is merged or pending does not
matter when comparing what two copies hold: a merge's result depends only on the set of
appends (merge.py).
"""

from __future__ import annotations

from hydfs.idset import IdSet


def held_ids(summary: dict) -> IdSet:
    """Every append the copy holds, merged or pending."""
    return IdSet(summary["merged"]).union(IdSet(summary["pending"]))


def covers(mine: dict | None, theirs: dict) -> bool:
    """Does copy `mine` hold every append copy `theirs` holds (of the same create)?"""
    if mine is None or mine["file_id"] != theirs["file_id"]:
        return False
    return held_ids(mine).covers(held_ids(theirs))
