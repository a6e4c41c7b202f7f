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


# -- claiming, against a fake HyDFS -----------------------------------------------------------

class FakeClaims:
    """The claim file as HyDFS keeps it: appends by id, and the fence of the writer key
    `leader` (an append or fence below the fence's epoch is refused)."""

    def __init__(self):
        self.lines: dict = {}          # append id -> line
        self.fenced = 0

    def read_bytes(self, name):
        from hydfs.client import HydfsError
        if not self.lines and not self.fenced:
            raise HydfsError("no_such_file", f"no such file {name}")
        return b"".join(self.lines.values())

    def create_bytes(self, name, data):
        pass

    def fence(self, name, key, epoch):
        from hydfs.client import HydfsError
        if epoch < self.fenced:
            raise HydfsError("fenced", "a higher epoch fenced it")
        self.fenced = epoch

    def append_bytes(self, name, data, append_id):
        from hydfs.client import HydfsError
        epoch = int(append_id[0].rpartition("#")[2])
        if epoch < self.fenced:
            raise HydfsError("fenced", "a higher epoch fenced it")
        new = append_id not in self.lines
        self.lines.setdefault(append_id, data)
        return {"new": new}


class FakeMembers:
    def __init__(self, vms):
        self.vms = vms

    def is_joined(self):
        return True

    def members(self):
        from types import SimpleNamespace
        return [SimpleNamespace(vm=vm) for vm in self.vms]


class FakeLeader:
    active = False

    def __init__(self):
        self.took_over = []

    def take_over(self, epoch):
        self.took_over.append(epoch)
        self.active = True

    def step_down(self, successor):
        self.active = False


def leadership_of(vm, claims, live):
    from types import SimpleNamespace
    from stream.leadership import Leadership
    config = SimpleNamespace(nodes={v: "" for v in NODES}, leader="01")
    node = Leadership(config, vm, FakeMembers(live), claims, settle=0.0)
    node.leader = FakeLeader()
    return node


def test_a_fence_left_by_a_claim_that_never_landed_does_not_lock_the_successor_out():
    """Regression (review): 03 fenced the claims at 514 and died before its append; the
    successor 02 computed 513 from the claims alone for ever, and nobody led."""
    claims = FakeClaims()
    claims.append_bytes("c", b'{"epoch": 256, "vm": "01"}\n', ("leader#256", 1))
    claims.fenced = 514
    node = leadership_of("02", claims, ["02", "03", "04"])
    node._evaluate()                        # 513: refused by the fence
    assert node.leading is None
    node._evaluate()                        # the next epoch it tries is above it
    assert node.leading == 769 and node.leader.took_over == [769]
    assert node.current() == Claim(769, "02")


def test_a_restarted_leader_whose_old_claim_is_highest_claims_anew_above_it():
    """Nobody else claims while the holder of the highest claim is live; a restarted
    holder does not lead by that claim (its take-over is gone with its process): it claims
    above it, and its earlier life, if it was only paused, is deposed."""
    claims = FakeClaims()
    node = leadership_of("01", claims, ["01", "02"])
    node._evaluate()
    assert node.leading == 256
    again = leadership_of("01", claims, ["01", "02"])   # restarted: its old claim is highest
    again._evaluate()
    assert again.leading == 512 and again.current() == Claim(512, "01")
    assert node.current() == Claim(256, "01")
    node.learn(again.current())                          # the old life hears of it: deposed
    assert node.leading is None and not node.leader.active


def test_a_claim_whose_append_was_there_already_is_not_a_claim():
    """An append id of an earlier life (the claim file read as empty): not new, not ours."""
    claims = FakeClaims()
    claims.lines[("leader#256", 1)] = b'{"epoch": 256, "vm": "01"}\n'
    real_read = claims.read_bytes
    reads = iter([b""])                      # the first read misses the file's content
    claims.read_bytes = lambda name: next(reads, real_read(name))
    node = leadership_of("01", claims, ["01", "02"])
    node._evaluate()
    assert node.leading is None              # 256 again: its append was not new
    node._evaluate()
    assert node.leading == 512


# -- relaying commands ---------------------------------------------------------------------------

def test_a_command_on_the_configured_leader_before_its_first_claim_waits_for_it_not_for_itself():
    """Regression (CI): `RainStorm` typed on node 01 just after the cluster formed, before
    01's first claim landed, was relayed by 01 to itself, over and over."""
    from types import SimpleNamespace
    from cluster.commands import Context
    from stream import commands

    class Forming:
        vm, leading, checks = "01", None, 0

        def current(self):
            return None

        def is_leader(self):
            self.checks += 1
            return self.checks > 3                  # its claim lands a moment later

        def wait_for_other(self, than, timeout):
            return None

    config = SimpleNamespace(leader="01", address=lambda vm: pytest.fail(f"relayed to {vm}"))
    doc = commands._at_leader(Context(), ["jobs"], lambda ctx: {"jobs": []}, config,
                              Forming(), failover=5.0)
    assert doc == {"jobs": []}


@pytest.mark.parametrize("doc", [{"epoch": 5, "vm": {"id": 1}}, {"epoch": "5", "vm": "02"},
                                 {"epoch": True, "vm": "02"}, {"epoch": 2 ** 70, "vm": "02"},
                                 {"epoch": 5.5, "vm": "02"}, {"epoch": 5, "vm": "../x"},
                                 {"epoch": 0, "vm": "02"}, {"vm": "02"}, [], None])
def test_a_claim_of_the_wrong_shape_is_no_claim(doc):
    """tests/fuzz.py found it: an announcement whose vm was a dict deposed the leader."""
    assert Claim.from_wire(doc) is None
