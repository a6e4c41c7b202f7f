"""When a HyDFS write may go ahead, when it is done, and when it is worth retrying (pure).

The coordinator (coordinator.py) and the client (client.py) gather the facts, ask these
functions, and act; the rules themselves are tested as tables (test_hydfs_rules.py).

Create arbitration. Of racing creates of one name exactly one may win, so the coordinator
asks every replica which create (file id) its copy comes from, if any, and decides:

| the replicas hold                 | some replica did not answer | verdict            |
|-----------------------------------|-----------------------------|--------------------|
| nothing                           | no                          | CREATE             |
| nothing                           | yes                         | NOT_ENOUGH         |
| only this create's copies         | no                          | ALREADY_CREATED    |
| only this create's copies         | yes                         | NOT_ENOUGH         |
| another create's copy (any)       | either                      | EXISTS             |

ALREADY_CREATED is this create retried after its reply was lost: it succeeds again.

Acknowledging an append. An append is acknowledged only once every current replica holds it
on disk, so an acknowledged append survives any `replicas - 1` failures. Replicas that
answered `missing` (they became replicas and do not hold the file yet) are caught up from the
coordinator's copy (sent the append again and, if they still lack the file, the file); a replica that refuses it as `fenced` (its writer was replaced, and the
coordinator's copy had not heard) fails it for good; any other failure fails this attempt,
which the client retries under the same append id, so nothing doubles.

Quorum. A node writes only while it sees a majority of the configured nodes live
(`has_quorum`): in a partition, only the side with a majority writes, and its writes stand
when the sides heal; the other side refuses them (`no_quorum`).

Retrying. A write refused because a replica is unreachable (`not_enough_replicas`), because
the coordinator's view of the ring differs from the client's (`not_owner`) or because the
coordinator sees no majority yet (`no_quorum`) may succeed once failure detection (or a
heal) catches up; every other refusal is final.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from hydfs.messages import FENCED, MISSING, NO_QUORUM, NOT_ENOUGH_REPLICAS, NOT_OWNER

CREATE = "create"
ALREADY_CREATED = "already_created"
EXISTS = "exists"
NOT_ENOUGH = "not_enough"


def arbitrate_create(file_id: str, held: Mapping[str, str | None],
                     silent: Collection[str]) -> str:
    """The verdict on create `file_id`, given the file id each replica that answered holds
    (None: no copy) and the replicas that did not answer."""
    ids = {held_id for held_id in held.values() if held_id is not None}
    if ids - {file_id}:
        return EXISTS
    if silent:
        return NOT_ENOUGH
    return ALREADY_CREATED if ids else CREATE


def to_catch_up(failed: Mapping[str, str]) -> list[str]:
    """The replicas (of those whose fan-out failed, vm -> error code) that lack the file and
    are caught up from the coordinator's copy."""
    return sorted(vm for vm, code in failed.items() if code == MISSING)


def fenced_by(failed: Mapping[str, str]) -> list[str]:
    """The replicas that refused the append as fenced: its writer was replaced, and the
    coordinator's copy had not heard (fences.py). The append fails, finally."""
    return sorted(vm for vm, code in failed.items() if code == FENCED)


def append_acknowledged(owners: Collection[str], failed: Mapping[str, str],
                        caught_up: Collection[str]) -> int:
    """How many replicas hold the append: every owner, but those whose fan-out failed and
    that were not caught up. The append is acknowledged when this equals len(owners)."""
    return sum(1 for vm in owners if vm not in failed or vm in caught_up)


RETRYABLE = frozenset({NOT_ENOUGH_REPLICAS, NOT_OWNER, NO_QUORUM})


def may_create(home: Collection[str], live: Collection[str]) -> bool:
    """May a name be created while only `live` nodes are up? Not if none of its `home`
    replicas (its owners on the ring of every configured node) is: its copies may be
    there, cut off, and a create here would lose to them when they come back (the earlier
    create wins, README "Partitions"). Beyond `replicas - 1` failures HyDFS does not hold
    anyway."""
    return any(vm in live for vm in home)


def has_quorum(live: int, configured: int) -> bool:
    """May a node that sees `live` members of the `configured` nodes write? Only with a
    majority: of two sides of a partition at most one has one, so at most one side writes
    and nothing either side acknowledged is undone when they heal (README "Partitions")."""
    return live > configured // 2


def worth_retrying(code: str) -> bool:
    """May a write refused with `code` succeed if retried (after failure detection)?"""
    return code in RETRYABLE
