"""How a HyDFS read finds its bytes: cache validity, replica order, failover, read-my-writes
(pure).

The client (client.py) asks these functions and acts; they are tested as tables
(test_hydfs_rules.py).

Cache. A cached copy younger than the cache's freshness (`ttl`) is served as it is; an older
one is revalidated with the replica it came from, which answers "not modified" without
resending when the copy is current. Only the replica that produced a copy can vouch for its
version, so another replica is asked for the whole file.

Order. A read goes to the file's replicas in ring order, primary first: the replica this
client writes to, as the seed describes, so a client keeps reading where it wrote.

Failover, per replica:

| the replica                                         | code            | then                  |
|-----------------------------------------------------|-----------------|-----------------------|
| does not accept, resets, garbles                    | unreachable     | next replica          |
| accepts, but does not start answering in `patience` | slow            | next replica          |
| holds no copy (re-replication has not reached it)   | no_such_file    | next replica          |
| lacks the reader's last acknowledged append         | behind          | next replica          |
| refuses for another reason                          | any other       | the read fails        |

and once every replica was tried without an answer:

| what the round saw                              | then                                        |
|-------------------------------------------------|---------------------------------------------|
| a slow replica, at the first (short) patience   | a second round at once, waiting longer      |
| a replica behind, before the read's deadline    | a short pause, then another round           |
| anything else                                   | the read fails with the last reason         |

Patience starts short, so a paused or overloaded replica costs a reader 2 s instead of 30 s;
only when every replica is slow does the reader wait for one.

Read-my-writes. A read names this client's last acknowledged append to the file; a replica
that does not hold it yet (one restarted with an old copy) answers `behind` instead of older
bytes, and the reader goes elsewhere or waits for re-replication.

Views (view.py). A view read goes to the replicas in the same order and moves on from one
that is unreachable, slow, holds no copy, or lacks some of the view's appends (`missing`);
once every replica was tried it fails with `missing` if a replica that holds the file lacked
appends, else `unreachable` (or `slow`) if one did not answer (it may hold them), else
`no_such_file`.

Settled appends. An append is settled once at least two replicas hold it (one, if the file
has only one replica): `settled_ids`. With one copy answering of several replicas nothing
is settled: an append on that copy alone could be lost with it. An acknowledged append is on every replica
(write_rules.py), so it counts even after one replica fails or while a new one has not
caught up; an append on one replica only (its fan-out still running) does not count yet, so
a reader that relies on a settled append can read it from a second replica if one fails.
Appends that the strongest fences known refuse do not count (fences.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from cluster.errors import SLOW, UNREACHABLE
from hydfs.fences import Fences
from hydfs.idset import IdSet, held_by_at_least
from hydfs.messages import BEHIND, MISSING, NO_SUCH_FILE
from hydfs.summary import fences_of, held_ids

FIRST_PATIENCE = 2.0      # a replica that takes longer to start answering a read is skipped

SERVE, REVALIDATE = "serve", "revalidate"
WAIT_LONGER, PAUSE_AND_RETRY, GIVE_UP = "wait_longer", "pause_and_retry", "give_up"

_NEXT_REPLICA = frozenset({UNREACHABLE, SLOW, NO_SUCH_FILE, BEHIND})
_NEXT_FOR_VIEW = frozenset({UNREACHABLE, SLOW, NO_SUCH_FILE, MISSING})
SETTLED_COPIES = 2        # replicas that must hold an append for it to count as settled


def cache_verdict(age: float, ttl: float) -> str:
    """Serve a cached copy `age` seconds old as it is, or revalidate it first?"""
    return SERVE if age < ttl else REVALIDATE


def version_to_revalidate(cached_version, cached_from: str | None, vm: str):
    """The version to send replica `vm` ("answer not modified if it is still this"): only
    the replica a copy came from knows its version; None asks for the whole file."""
    return cached_version if cached_from == vm else None


def read_order(owners: Sequence[str]) -> list[str]:
    """The replicas to try, in order: primary first, then ring order."""
    return list(owners)


def tries_next_replica(code: str) -> bool:
    """After a replica failed a read with `code`, try the next one (or fail the read)?"""
    return code in _NEXT_REPLICA


def after_round(codes: Sequence[str], patience: float, longest: float, now: float,
                deadline: float) -> str:
    """What to do once every replica failed a read, with these codes, at `patience`."""
    if SLOW in codes and patience < longest:
        return WAIT_LONGER
    if BEHIND in codes and now < deadline:
        return PAUSE_AND_RETRY
    return GIVE_UP


def is_behind(must_hold, holds) -> bool:
    """Replica side: does the reader's last append (`must_hold`, or None) make this copy,
    whose `holds(append_id)` says what it has, too old to answer?"""
    return bool(must_hold) and not holds((str(must_hold[0]), int(must_hold[1])))


def view_tries_next(code: str) -> bool:
    """After a replica failed a view read with `code`, try the next one (or fail)?"""
    return code in _NEXT_FOR_VIEW


def view_failure(codes: Sequence[str]) -> str:
    """The code a view read fails with once every replica failed it with these `codes`."""
    if MISSING in codes:
        return MISSING
    silent = [c for c in codes if c in (UNREACHABLE, SLOW)]
    return silent[-1] if silent else NO_SUCH_FILE


def settled_ids(summaries: Sequence[dict], replicas: int = SETTLED_COPIES) -> IdSet:
    """The appends held by at least SETTLED_COPIES of the copies summarised (by all of the
    file's `replicas` if it has fewer), less those the strongest fences among them refuse."""
    fences = Fences()
    for s in summaries:
        fences = fences.merged_with(fences_of(s))
    held = [fences.admissible(held_ids(s)) for s in summaries]
    return held_by_at_least(held, min(SETTLED_COPIES, replicas))
