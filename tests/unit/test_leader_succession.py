"""Leader succession and fencing, as pure rules: who leads, which epochs a claim and the
attempts of its leader get, how a job is taken over, and what a deposed leader's orders get
(stream/succession.py, job_core.adopt, task_core)."""

from __future__ import annotations

import pytest

from stream import task_log
from stream.effects import Lead, Stop
from stream.job_core import Done, JobCore, SendSchedule, StartTask, StopAttempt
from stream.leadership import parse_claims
from stream.messages import SCHEDULE, STOP
from stream.scheduler import TaskId
from stream.source_core import SourceCore
from stream.succession import (MAX_NODES, Claim, attempt_floor, highest, leader_now,
                               next_epoch, should_claim, succession)
from tests.unit.test_stream_cores import spec

pytestmark = pytest.mark.timeout(30)

NODES = ["01", "02", "03", "04", "05"]
ORDER = succession(NODES, "01")


def test_the_succession_order_starts_at_the_configured_leader_and_wraps():
    assert succession(NODES, "03") == ["03", "04", "05", "01", "02"]
    assert ORDER == NODES


@pytest.mark.parametrize("live, claim, leader", [
    ({"01", "02", "03"}, None, "01"),                       # a new cluster: the first
    ({"02", "03"}, None, "02"),                             # ... that is live
    ({"01", "02", "03"}, Claim(513, "02"), "02"),           # the holder leads while live:
    ({"02", "03"}, Claim(513, "02"), "02"),                 #   no flapping back to 01
    ({"01", "03", "04"}, Claim(513, "02"), "03"),           # the next live one after it
    ({"01", "04"}, Claim(513, "02"), "04"),
    ({"01"}, Claim(1284, "05"), "01"),                      # wrapping around
    (set(), Claim(513, "02"), None),
])
def test_who_leads(live, claim, leader):
    assert leader_now(ORDER, live, claim) == leader


@pytest.mark.parametrize("vm, live, claim, leading, claims", [
    ("01", {"01", "02"}, None, False, True),            # a new cluster's first leader
    ("02", {"01", "02"}, None, False, False),
    ("03", {"01", "03"}, Claim(513, "02"), False, True),  # 02 failed: 03 is next
    ("01", {"01", "03"}, Claim(513, "02"), False, False),  # not 01: it is not next
    ("02", {"01", "02"}, Claim(513, "02"), True, False),   # leads already
    ("02", {"01", "02"}, Claim(513, "02"), False, True),   # restarted: its old claim stands,
])                                                          # but nobody leads: claim anew
def test_who_claims(vm, live, claim, leading, claims):
    assert should_claim(vm, ORDER, live, claim, leading) is claims


def test_two_claims_are_never_equal_and_each_is_above_the_highest_seen():
    a, b = next_epoch(513, ORDER, "03"), next_epoch(513, ORDER, "04")
    assert a != b and min(a, b) > 513 and max(a, b) < 513 + 2 * MAX_NODES
    assert next_epoch(0, ORDER, "01") == MAX_NODES
    assert highest([Claim(a, "03"), Claim(b, "04"), None]) == Claim(max(a, b), "04")


def test_any_attempt_of_a_newer_leader_outnumbers_every_attempt_of_an_older_one():
    older, newer = next_epoch(0, ORDER, "05"), next_epoch(next_epoch(0, ORDER, "05"), ORDER,
                                                          "01")
    assert attempt_floor(newer) > attempt_floor(older) + 1_000_000


def test_the_claim_file_is_read_line_by_line_and_a_torn_line_is_skipped():
    data = b'{"epoch": 256, "vm": "01"}\n{"epoch": 513, "vm": "02"}\n{"epoch": 7'
    assert parse_claims(data) == [Claim(256, "01"), Claim(513, "02")]
    assert Claim.from_wire({"epoch": 0, "vm": "01"}) is None


# -- taking a job over ------------------------------------------------------------------------

def test_a_taken_over_job_keeps_the_attempts_that_run_and_restarts_only_the_others():
    core = JobCore(1, ["02", "03", "04"], 0.0, 30.0, epoch_floor=attempt_floor(513))
    placement = {TaskId(0, 0): ("02", 5), TaskId(1, 0): ("03", 5), TaskId(2, 0): ("04", 6)}
    running = [(TaskId(0, 0), "02", 5, "02:1"), (TaskId(1, 0), "03", 5, "03:1"),
               (TaskId(2, 0), "04", 5, "04:1")]           # op2's attempt 6 never started
    effects = core.adopt(1.0, placement, running)
    assert of(effects, StopAttempt) == [StopAttempt("04:1", TaskId(2, 0), 5)]
    assert of(effects, SendSchedule)
    starts = of(core.tick(1.1), StartTask)
    assert [(s.task, s.epoch) for s in starts] == [(TaskId(2, 0), attempt_floor(513) + 1)]
    assert core.running() == {TaskId(0, 0): "02:1", TaskId(1, 0): "03:1"}


def test_a_job_whose_sources_were_all_done_is_done_when_taken_over():
    core = JobCore(2, ["02", "03"], 0.0, 30.0)
    effects = core.adopt(1.0, {}, [], sources_done=[0, 1])
    assert of(effects, Done)


def test_an_attempt_on_the_new_leaders_own_node_runs_on():
    core = JobCore(1, ["03"], 0.0, 30.0)
    core.adopt(1.0, {}, [(TaskId(0, 0), "02", 3, "02:1")], leader="02")
    assert TaskId(0, 0) in core.running()


# -- a deposed leader's orders ----------------------------------------------------------------

def order(kind, leader_epoch, **fields) -> dict:
    return dict({"t": kind, "job": "j", "leader_epoch": leader_epoch,
                 "leader": ["127.0.0.1", 9000 + leader_epoch]}, **fields)


def test_a_task_follows_a_newer_leader_and_refuses_the_orders_of_an_older_one():
    core = SourceCore(spec(0, leader_epoch=256), task_log.recover(b""), 0.0)
    effects = core.step(0.1, order(SCHEDULE, 513, tasks=[[1, 0, "op1:1", 1]]))
    assert of(effects, Lead) == [Lead(("127.0.0.1", 9513), 513)]
    assert core.step(0.2, order(STOP, 256)) == [] and not core.stopped   # deposed: refused
    assert core.dropped_stale == 1
    assert not core.leader_may_stop(256) and core.leader_may_stop(513)
    assert of(core.step(0.3, order(STOP, 513)), Stop) and core.stopped


def of(effects, kind):
    return [e for e in effects if isinstance(e, kind)]


def test_a_record_folds_by_leader_epoch_first_whatever_order_the_lines_merged_in():
    from stream.job_record import fold
    data = (b'{"job": "j", "state": "starting", "le": 256}\n'
            b'{"state": "stopping", "le": 513}\n'        # the new leader's, merged first
            b'{"state": "running", "le": 256}\n'         # the old leader's, before the fence
            b'{"sources_done": [0], "le": 513}\n')
    assert fold(data) == {"job": "j", "state": "stopping", "sources_done": [0]}
