"""The merge rule: one order for every append, the same on every replica.

Until a merge, each replica shows its pending appends in arrival order, so appends from
different clients may appear in different orders on different replicas. A merge fixes one
order for everything any live replica holds:

    the committed base (all earlier merges), then every pending append not yet merged,
    sorted by (client timestamp, client id, sequence number).

A client stamps its appends with strictly increasing timestamps and sends them one at a time
(each returns only once every replica holds it), so sorting by timestamp keeps each client's
own order; the client id and sequence number break ties deterministically. The seed's design
orders by timestamp likewise. Every replica then builds byte-identical content.

A merge with nothing pending anywhere and one generation everywhere is a no-op: the second
`merge` in a row returns at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from hydfs.idset import IdSet


@dataclass(frozen=True)
class MergePlan:
    gen: int                      # the generation the merge creates
    order: list                   # append ids, in merge order: [[client, seq], ...]
    missing: dict                 # replica -> ids it must be sent before it can apply
    stale: list                   # replicas behind the newest generation: they need its base
    source: str                   # a replica at the newest generation


def sort_key(header: dict) -> tuple:
    client, seq = header["id"]
    return (header["ts"], client, seq)


def plan_merge(summaries: dict[str, dict], pending: dict[str, list[dict]]) -> MergePlan | None:
    """Plan a merge from each replica's summary and pending headers; None if nothing to do.

    `summaries[r]` is replica r's file summary (gen, merged ranges, pending ranges);
    `pending[r]` the headers of r's pending records. All replicas hold the same file id.
    """
    gens = {s["gen"] for s in summaries.values()}
    anything_pending = any(pending.get(r) for r in summaries)
    if len(gens) == 1 and not anything_pending:
        return None
    source = max(summaries, key=lambda r: (summaries[r]["gen"], summaries[r]["merge_id"], r))
    newest = summaries[source]
    merged = IdSet(newest["merged"])
    stale = sorted(r for r, s in summaries.items() if s["gen"] < newest["gen"])
    headers: dict[tuple, dict] = {}
    for replica_headers in pending.values():
        for h in replica_headers:
            append_id = tuple(h["id"])
            if append_id not in merged:
                headers.setdefault(append_id, h)
    order = [list(h["id"]) for h in sorted(headers.values(), key=sort_key)]
    missing = {}
    for replica, summary in summaries.items():
        base = newest if replica in stale else summary
        held = IdSet(base["merged"]).union(IdSet(summary["pending"]))
        lacking = [i for i in order if tuple(i) not in held]
        if lacking:
            missing[replica] = lacking
    return MergePlan(newest["gen"] + 1, order, missing, stale, source)
