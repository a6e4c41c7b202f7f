"""HyDFS's decisions as tables: create arbitration, append acknowledgement, write retries
(write_rules.py), and cache validity, read failover and read-my-writes (read_rules.py)."""

from __future__ import annotations

import pytest

from cluster.errors import BAD_REQUEST, SLOW, UNREACHABLE
from hydfs import read_rules as r
from hydfs import write_rules as w
from hydfs.idset import IdSet
from hydfs.messages import (BEHIND, FILE_EXISTS, MISSING, NO_SUCH_FILE, NOT_ENOUGH_REPLICAS,
                            NOT_OWNER, TOO_FEW_NODES)

pytestmark = pytest.mark.timeout(30)

ME = "F-mine"


@pytest.mark.parametrize("held, silent, verdict", [
    ({"01": None, "02": None, "03": None}, [], w.CREATE),
    ({"01": None, "02": None}, ["03"], w.NOT_ENOUGH),
    ({"01": None}, ["02", "03"], w.NOT_ENOUGH),
    ({"01": ME, "02": ME, "03": ME}, [], w.ALREADY_CREATED),
    ({"01": ME, "02": None, "03": None}, [], w.ALREADY_CREATED),  # a retry: rest re-replicates
    ({"01": ME, "02": ME}, ["03"], w.NOT_ENOUGH),     # ours, but one replica is silent: retry
    ({"01": None, "02": "F-other", "03": None}, [], w.EXISTS),
    ({"01": ME, "02": "F-other", "03": ME}, [], w.EXISTS),
    ({"01": "F-other"}, ["02", "03"], w.EXISTS),       # taken: waiting will not change that
], ids=lambda v: str(v))
def test_create_arbitration(held, silent, verdict):
    assert w.arbitrate_create(ME, held, silent) == verdict


@pytest.mark.parametrize("failed, caught_up, acked, catch_up", [
    ({}, [], 3, []),
    ({"02": MISSING}, ["02"], 3, ["02"]),             # a new replica, sent the whole file
    ({"02": MISSING}, [], 2, ["02"]),                 # ... whose catch-up failed
    ({"02": UNREACHABLE}, [], 2, []),                 # down or paused: this attempt fails
    ({"02": MISSING, "03": UNREACHABLE}, ["02"], 2, ["02"]),
    ({"02": MISSING, "03": MISSING}, ["02", "03"], 3, ["02", "03"]),
    ({"02": FILE_EXISTS}, [], 2, []),
])
def test_an_append_is_acknowledged_only_when_every_replica_holds_it(failed, caught_up, acked,
                                                                     catch_up):
    owners = ["01", "02", "03"]
    assert w.to_catch_up(failed) == catch_up
    assert w.append_acknowledged(owners, failed, caught_up) == acked


@pytest.mark.parametrize("code, retry", [
    (NOT_ENOUGH_REPLICAS, True), (NOT_OWNER, True), (FILE_EXISTS, False),
    (NO_SUCH_FILE, False), (TOO_FEW_NODES, False), (BAD_REQUEST, False),
])
def test_which_write_refusals_are_worth_retrying(code, retry):
    assert w.worth_retrying(code) is retry


@pytest.mark.parametrize("age, verdict", [(0.0, r.SERVE), (4.99, r.SERVE), (5.0, r.REVALIDATE),
                                          (60.0, r.REVALIDATE)])
def test_a_cached_copy_is_served_while_fresh_then_revalidated(age, verdict):
    assert r.cache_verdict(age, ttl=5.0) == verdict


@pytest.mark.parametrize("cached_from, asked, sent", [
    ("02", "02", ["F", 1, 0, 10]),      # the replica the copy came from can say "not modified"
    ("02", "03", None),                 # another one cannot vouch for that version
    (None, "02", None),                 # nothing cached
])
def test_only_the_replica_a_copy_came_from_is_asked_to_revalidate_it(cached_from, asked, sent):
    version = ["F", 1, 0, 10] if cached_from else None
    assert r.version_to_revalidate(version, cached_from, asked) == sent


def test_reads_go_to_the_primary_first_then_in_ring_order():
    assert r.read_order(["05", "07", "01"]) == ["05", "07", "01"]


@pytest.mark.parametrize("code, next_replica", [
    (UNREACHABLE, True), (SLOW, True), (NO_SUCH_FILE, True), (BEHIND, True),
    (BAD_REQUEST, False), (FILE_EXISTS, False),
])
def test_which_failures_move_a_read_to_the_next_replica(code, next_replica):
    assert r.tries_next_replica(code) is next_replica


@pytest.mark.parametrize("codes, patience, now, step", [
    ([SLOW, UNREACHABLE, NO_SUCH_FILE], 2.0, 0.0, r.WAIT_LONGER),   # one was slow: wait for it
    ([SLOW, SLOW, SLOW], 30.0, 0.0, r.GIVE_UP),                     # waited long already
    ([BEHIND, NO_SUCH_FILE, UNREACHABLE], 2.0, 0.0, r.PAUSE_AND_RETRY),  # re-replication
    ([BEHIND, BEHIND, BEHIND], 2.0, 10.0, r.GIVE_UP),               # ... until the deadline
    ([SLOW, BEHIND], 30.0, 0.0, r.PAUSE_AND_RETRY),
    ([NO_SUCH_FILE, NO_SUCH_FILE, NO_SUCH_FILE], 2.0, 0.0, r.GIVE_UP),
    ([UNREACHABLE, UNREACHABLE], 2.0, 0.0, r.GIVE_UP),
])
def test_what_a_read_does_once_every_replica_failed(codes, patience, now, step):
    assert r.after_round(codes, patience, longest=30.0, now=now, deadline=10.0) == step


@pytest.mark.parametrize("must_hold, behind", [
    (None, False), ([], False), (["c", 3], False), (["c", 4], True), (["d", 1], True),
])
def test_a_replica_without_the_readers_last_append_is_behind(must_hold, behind):
    held = IdSet.of([("c", 1), ("c", 2), ("c", 3)])
    assert r.is_behind(must_hold, held.__contains__) is behind


@pytest.mark.parametrize("live, configured, writes", [
    (10, 10, True), (6, 10, True), (5, 10, False), (2, 10, False), (3, 5, True), (2, 5, False),
    (2, 3, True), (1, 3, False), (1, 1, True), (2, 4, False), (3, 4, True)])
def test_only_a_side_with_a_majority_of_the_configured_nodes_writes(live, configured, writes):
    """Two sides of a partition never both have a majority (tests/netns_tier)."""
    assert w.has_quorum(live, configured) is writes
    assert not (w.has_quorum(live, configured) and
                w.has_quorum(configured - live, configured))


def test_a_name_may_not_be_created_while_every_home_replica_is_gone():
    """The review of the quorum rule found it: a name whose three home replicas were cut off
    read as missing on the majority side, was created there (the leader's claims file, for
    one), and that create lost to the cut-off copies at healing, with its appends."""
    assert w.may_create(["04", "06", "09"], ["01", "02", "04"])
    assert not w.may_create(["04", "06", "09"], ["01", "02", "03", "05", "07", "08", "10"])
