"""The merge rule: one order for every append, the same on every replica.

Until a merge, each replica shows its pending appends in arrival order, so appends from
different clients may appear in different orders on different replicas. A merge makes the
content a function of the *set* of appends alone:

    the create's content, then every append, sorted by (client timestamp, client id,
    sequence number).

A client stamps its appends with strictly increasing timestamps and sends them one at a time
(each returns only once every replica holds it), so the sort keeps each client's order; the
client id and sequence number break ties. The seed's design orders by timestamp likewise.

Because the result depends only on which appends are merged, replicas that merged the same
set hold byte-identical files however they got there: two merges coordinated at once, a
coordinator that died half way, or a replica that missed a merge all converge at the next
merge, which takes the union of what every replica holds (appends merged into one replica's
base travel to the others as records, via the base index in store.py). Nothing is lost:
a merge only ever adds appends to a base.

A merge with nothing pending anywhere and the same merged set everywhere is a no-op: the
second `merge` in a row returns at once.

Merges also happen on their own (`merge_due`): a replica keeps each pending append's record
in memory, and a file that takes appends for as long as a following job runs (its source,
its DEST, its tasks' logs) would hold ever more of them. The file's primary merges it once
it holds `[hydfs] merge_after_appends` pending appends or MERGE_AFTER_BYTES of them, so what
a replica keeps per file is bounded; a merged append costs only its row in the index file
beside the base (merged_index.py), on disk. A merge changes no view (view.py), so readers of the file never notice.

An automatic merge takes fewer appends than `merge` (`automatic_plan`): what any replica
merged already, and the coordinator's own pending appends stamped MERGE_GRACE seconds ago
or earlier. A file with several writers (a job's DEST, written by every final task)
receives appends a little out of timestamp order; merging one that sorts before an
already merged append rebuilds the whole base instead of adding to its end, and a file that
grows for hours must not be rewritten whole every few hundred appends. Appends still in
flight are later than the grace; they wait for the next merge. (The grace is measured on the
coordinator's clock: a writer whose clock lags by more still has its appends merged, each
merge then rebuilding the base.)
"""

from __future__ import annotations

from dataclasses import dataclass

from hydfs.fences import Fences
from hydfs.idset import IdSet
from hydfs.summary import fences_of, held_ids


MERGE_AFTER_BYTES = 64 << 20
MERGE_GRACE = 5.0        # seconds: an automatic merge leaves appends stamped later pending


def merge_due(pending_records: int, pending_bytes: int, after_records: int) -> bool:
    """Should the primary merge a file whose copy here holds this much pending, with
    automatic merges after `after_records` pending (0: never)?"""
    return 0 < after_records and \
        (pending_records >= after_records or pending_bytes >= MERGE_AFTER_BYTES)


@dataclass(frozen=True)
class MergePlan:
    gen: int                      # generation number for the result (informational)
    target: IdSet                 # every append any replica holds: all get merged
    missing: dict                 # replica -> ids of `target` it must be sent first
    fences: Fences                # the strongest fences any replica knows (fences.py)


def plan_merge(summaries: dict[str, dict]) -> MergePlan | None:
    """Plan a merge from each replica's summary; None if there is nothing to do."""
    merged_sets = [IdSet(s["merged"]) for s in summaries.values()]
    if all(len(IdSet(s["pending"])) == 0 for s in summaries.values()) and \
            all(m == merged_sets[0] for m in merged_sets):
        return None
    fences = Fences()
    for s in summaries.values():
        fences = fences.merged_with(fences_of(s))
    holdings = {r: fences.admissible(held_ids(s)) for r, s in summaries.items()}
    target = IdSet()
    for ids in holdings.values():
        target = target.union(ids)
    missing = {}
    for replica, ids in holdings.items():
        if not ids.covers(target):
            missing[replica] = [list(i) for i in target.difference(ids)]
    return MergePlan(max(s["gen"] for s in summaries.values()) + 1, target, missing, fences)


def automatic_plan(plan: MergePlan, summaries: dict[str, dict], pending: list,
                   now: float) -> MergePlan | None:
    """`plan` cut down to an automatic merge's appends: those merged on any replica, and
    the coordinator's `pending` records stamped MERGE_GRACE before `now` or earlier;
    None if that merges nothing new on any replica."""
    eligible = IdSet.of(r.id for r in pending if r.ts <= now - MERGE_GRACE)
    for s in summaries.values():
        eligible = eligible.union(IdSet(s["merged"]))
    target = plan.target.difference(plan.target.difference(eligible))     # intersection
    if all(IdSet(s["merged"]).covers(target) for s in summaries.values()):
        return None
    missing = {r: [i for i in ids if tuple(i) in target] for r, ids in plan.missing.items()}
    return MergePlan(plan.gen, target, {r: ids for r, ids in missing.items() if ids},
                     plan.fences)
