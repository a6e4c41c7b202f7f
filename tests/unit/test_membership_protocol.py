"""Deterministic multi-node simulations of the membership protocol (fake clock, lossy net)."""

from __future__ import annotations

import pytest

from membership.member import (ALIVE, FAILED, LEFT, SUSPECT, MemberState, supersedes)
from membership.probe import fixed_monitored, probe_targets
from membership.protocol import Settings
from membership.suspicion import SuspicionTimers, detection_bound
from tests.simnet import FAST, address, start_cluster

pytestmark = pytest.mark.timeout(60)

ALL = [f"{i:02d}" for i in range(1, 11)]
PING_ACK = Settings(protocol_period=1.0, ping_timeout=0.3, suspicion=False,
                    suspicion_timeout=3.0, monitors=4, join_retry=0.5, tombstone_ttl=60.0)


def bound(settings: Settings) -> float:
    slack = 0.2    # simulated network delay and tick granularity
    return detection_bound(settings.protocol_period, settings.ping_timeout,
                           settings.suspicion, settings.suspicion_timeout) + slack


def m(status: str, inc: int) -> MemberState:
    return MemberState("03@h:1@5", "h:1", status, inc)


# -- precedence (SWIM section 4.2), as a table ---------------------------------------------------

@pytest.mark.parametrize("new, old, wins", [
    (m(ALIVE, 1), None, True),
    (m(ALIVE, 1), m(ALIVE, 0), True),
    (m(ALIVE, 0), m(ALIVE, 0), False),
    (m(ALIVE, 0), m(ALIVE, 1), False),
    (m(ALIVE, 1), m(SUSPECT, 0), True),
    (m(ALIVE, 1), m(SUSPECT, 1), False),
    (m(SUSPECT, 0), m(ALIVE, 0), True),
    (m(SUSPECT, 0), m(ALIVE, 1), False),
    (m(SUSPECT, 1), m(SUSPECT, 0), True),
    (m(SUSPECT, 0), m(SUSPECT, 0), False),
    (m(FAILED, 0), m(ALIVE, 7), True),
    (m(FAILED, 0), m(SUSPECT, 7), True),
    (m(LEFT, 0), m(ALIVE, 3), True),
    (m(ALIVE, 99), m(FAILED, 0), False),
    (m(SUSPECT, 99), m(LEFT, 0), False),
    (m(LEFT, 0), m(FAILED, 0), False),
    (m(FAILED, 0), m(LEFT, 0), False),
])
def test_precedence_table(new, old, wins):
    assert supersedes(new, old) is wins


@pytest.mark.parametrize("record", [
    None, [], {"id": "x", "addr": "h:1", "st": "alive", "inc": 0},
    {"id": "03@h:1@5", "addr": "h", "st": "alive", "inc": 0},
    {"id": "03@h:1@5", "addr": "h:1", "st": "zombie", "inc": 0},
    {"id": "03@h:1@5", "addr": "h:1", "st": "alive", "inc": -1},
    {"id": "03@h:1@5", "addr": "h:1", "st": "alive", "inc": True},
])
def test_malformed_member_records_are_refused(record):
    with pytest.raises(ValueError):
        MemberState.from_wire(record)


# -- pure helpers ---------------------------------------------------------------------------------

def test_fixed_monitors_are_the_next_members_wrapping_around():
    ids = ["01@a", "02@a", "03@a", "04@a", "05@a", "06@a"]
    assert fixed_monitored("05@a", ids, 4) == ["06@a", "01@a", "02@a", "03@a"]
    assert fixed_monitored("01@a", ["01@a", "02@a"], 4) == ["02@a"]


def test_every_member_is_watched_by_its_monitors_predecessors():
    ids = [f"{i:02d}@a" for i in range(1, 11)]
    watchers = {i: 0 for i in ids}
    for me in ids:
        for target in fixed_monitored(me, ids, 4):
            watchers[target] += 1
    assert set(watchers.values()) == {4}


def test_probe_targets_add_one_random_other_member():
    import random
    ids = [f"{i:02d}@a" for i in range(1, 11)]
    targets = probe_targets("01@a", ids, 4, random.Random(3))
    assert targets[:4] == ["02@a", "03@a", "04@a", "05@a"]
    assert len(targets) == 5 and targets[4] in ids[5:]


def test_suspicion_timers_expire_in_deadline_order_and_do_not_restart():
    timers = SuspicionTimers()
    timers.start("b", now=1.0, timeout=5.0)
    timers.start("a", now=2.0, timeout=1.0)
    timers.start("b", now=4.0, timeout=5.0)      # already running: keeps its deadline
    assert timers.next_deadline() == 3.0
    assert timers.expired(5.9) == ["a"]
    assert timers.expired(6.0) == ["b"]
    assert timers.expired(100) == []


@pytest.mark.parametrize("period, timeout, sus, sus_timeout, expected", [
    (5.0, 1.5, False, 8.0, 6.5),
    (5.0, 1.5, True, 8.0, 14.5),
    (0.2, 0.1, True, 1.0, 1.3),
])
def test_detection_bound(period, timeout, sus, sus_timeout, expected):
    assert detection_bound(period, timeout, sus, sus_timeout) == pytest.approx(expected)


# -- joins -----------------------------------------------------------------------------------------

def test_ten_nodes_join_and_every_list_agrees():
    net = start_cluster(10)
    views = net.views_of_running()
    assert all(v == {vm: ALIVE for vm in ALL} for v in views.values())
    ids = {tuple(sorted(x.id for x in n.live_members())) for n in net.nodes.values()}
    assert len(ids) == 1


def test_no_false_positives_without_loss():
    net = start_cluster(10)
    net.run_for(30)
    assert net.events_of("suspect") == [] and net.events_of("fail") == []


# -- crashes ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings", [FAST, PING_ACK], ids=["ping-ack+s", "ping-ack"])
def test_crashes_are_detected_by_every_survivor_within_the_bound(settings):
    net = start_cluster(10, settings=settings)
    limit = bound(settings)
    net.crash("04")
    net.crash("07")
    survivors = [vm for vm in ALL if vm not in ("04", "07")]
    took = net.run_until(lambda: all(set(net.view(vm)) == set(survivors) for vm in survivors),
                         timeout=limit)
    assert took <= limit
    net.crash("09")
    survivors.remove("09")
    net.run_until(lambda: all(set(net.view(vm)) == set(survivors) for vm in survivors),
                  timeout=limit)
    net.run_for(10)
    assert all(set(net.view(vm)) == set(survivors) for vm in survivors)
    failed = {e.member.vm for _, _, e in net.events_of("fail")}
    assert failed == {"04", "07", "09"}


def test_paused_node_resumed_in_time_is_suspected_then_alive_with_higher_incarnation():
    net = start_cluster(10)
    net.pause("05")
    net.run_until(lambda: net.view("01").get("05") == SUSPECT, timeout=bound(FAST))
    net.resume("05")
    net.run_until(lambda: all(v.get("05") == ALIVE for v in net.views_of_running().values()),
                  timeout=2)
    assert net.node("05").me.incarnation >= 1
    assert all(m.incarnation >= 1 for n in net.nodes.values() for m in n.live_members()
               if m.vm == "05")
    assert net.events_of("fail", "05") == []
    assert net.events_of("refute", "05")


def test_paused_node_resumed_too_late_is_failed_and_rejoins_as_a_new_member():
    net = start_cluster(10)
    old_id = net.node("05").me.id
    net.pause("05")
    net.run_until(lambda: "05" not in net.view("01"), timeout=bound(FAST))
    net.resume("05")
    net.run_until(lambda: all(v.get("05") == ALIVE for v in net.views_of_running().values()),
                  timeout=10)
    assert net.node("05").me.id != old_id
    assert net.events_of("self_failed", "05")


def test_cut_link_alone_does_not_fail_anyone_under_suspicion():
    """A single broken link is refuted: the suspect hears of it from the others."""
    net = start_cluster(10)
    net.cut("01", "02")
    net.run_for(20)
    assert net.events_of("fail") == []
    net.heal()


def test_isolated_node_is_failed_by_everyone():
    net = start_cluster(10)
    net.isolate("06")
    others = [vm for vm in ALL if vm != "06"]
    net.run_until(lambda: all("06" not in net.view(vm) for vm in others), timeout=bound(FAST))


# -- leaves and restarts ---------------------------------------------------------------------------

def test_leave_is_seen_as_a_leave_not_a_failure():
    net = start_cluster(10)
    net.run_command("03", "leave")
    net.crash("03")   # the process exits right after
    others = [vm for vm in ALL if vm != "03"]
    net.run_until(lambda: all("03" not in net.view(vm) for vm in others), timeout=1)
    net.run_for(10)
    assert net.events_of("fail", "03") == []
    assert {a for _, a, _ in net.events_of("leave", "03")} >= {address(vm) for vm in others}


def test_restarted_node_rejoins_with_a_new_id_and_the_old_one_is_gone():
    net = start_cluster(10)
    old_id = net.node("08").me.id
    net.crash("08")
    new = net.restart("08")
    net.run_until(lambda: all(
        [x.id for x in net.node(vm).live_members() if x.vm == "08"] == [new.me.id]
        for vm in ALL), timeout=5)
    assert new.me.id != old_id


# -- the introducer --------------------------------------------------------------------------------

def test_introducer_down_members_continue_and_joins_retry_until_it_is_back():
    net = start_cluster(9)
    net.crash("01")
    rest = [f"{i:02d}" for i in range(2, 10)]
    net.run_until(lambda: all("01" not in net.view(vm) for vm in rest), timeout=bound(FAST))
    newcomer = net.add_node("10")
    net.run_for(3)
    assert not newcomer.joined and net.events_of("join_retry", "10")
    assert all(set(net.view(vm)) == set(rest) for vm in rest)
    net.restart("01")
    everyone = rest + ["01", "10"]
    net.run_until(lambda: all(set(net.view(vm)) == set(everyone) for vm in everyone), timeout=10)


# -- loss, reordering, mode ------------------------------------------------------------------------

def test_ten_percent_loss_causes_no_false_failures_with_suspicion():
    net = start_cluster(10, seed=7, latency=(0.001, 0.05))
    net.loss = 0.10
    net.run_for(60)
    assert net.events_of("fail") == []
    net.loss = 0.0
    net.crash("02")
    net.run_until(lambda: all("02" not in v for v in net.views_of_running().values()),
                  timeout=bound(FAST) + 1)


def test_mode_switch_reaches_every_node_despite_loss():
    net = start_cluster(10, seed=3)
    net.loss = 0.2
    net.run_command("04", "set_suspicion", False)
    net.run_until(lambda: not any(n.mode.suspicion for n in net.nodes.values()), timeout=10)
    net.run_command("09", "set_suspicion", True)
    net.run_until(lambda: all(n.mode.suspicion for n in net.nodes.values()), timeout=10)


def test_late_joiner_learns_the_current_mode():
    net = start_cluster(5)
    net.run_command("02", "set_suspicion", False)
    net.run_for(1)
    late = net.add_node("06")
    net.run_until(lambda: late.joined, timeout=3)
    assert late.mode.suspicion is False


def test_garbage_messages_raise_value_errors_and_leave_state_intact():
    net = start_cluster(3)
    node = net.node("01")
    before = [x.id for x in node.live_members()]
    for bad in ({"t": "nope"}, {"t": "ping", "g": "x"}, {"t": "ping", "m": None},
                {"t": "update", "g": [{"id": 1}]}, {"t": "join", "m": {"id": "bad"}},
                {"t": "sync", "members": [5]}):
        with pytest.raises((ValueError, KeyError, TypeError, AttributeError)):
            node.step(net.now, bad)
    assert [x.id for x in node.live_members()] == before


# -- healing ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(1, 6))
def test_an_isolated_node_rejoins_once_the_partition_heals(seed):
    net = start_cluster(10, seed=seed)
    old_id = net.node("06").me.id
    net.isolate("06")
    others = [vm for vm in ALL if vm != "06"]
    net.run_until(lambda: all("06" not in net.view(vm) for vm in others), timeout=bound(FAST))
    # Alone, 06 learns each failure only from its own probes: several rounds.
    net.run_until(lambda: set(net.view("06")) == {"06"}, timeout=30)
    net.heal()
    net.run_until(lambda: all(set(net.view(vm)) == set(ALL) for vm in ALL), timeout=30)
    assert net.node("06").me.id != old_id
    assert not any(e.member.vm != "06" for _, _, e in net.events_of("self_failed"))


@pytest.mark.parametrize("seed", range(1, 6))
def test_a_split_in_two_heals_and_the_introducers_side_keeps_its_ids(seed):
    net = start_cluster(10, seed=seed)
    side_b = ["07", "08", "09", "10"]
    for a in ALL:
        for b in side_b:
            if a not in side_b:
                net.cut(a, b)
    ids_a = {vm: net.node(vm).me.id for vm in ALL if vm not in side_b}
    net.run_until(lambda: set(net.view("01")) == set(ids_a) and
                  set(net.view("07")) == set(side_b), timeout=30)
    net.heal()
    net.run_until(lambda: all(set(net.view(vm)) == set(ALL) for vm in ALL), timeout=40)
    assert {vm: net.node(vm).me.id for vm in ids_a} == ids_a


def test_leave_then_join_does_not_bring_back_members_that_died_meanwhile():
    settings = Settings(protocol_period=1.0, ping_timeout=0.3, suspicion=True,
                        suspicion_timeout=3.0, monitors=4, join_retry=0.5, tombstone_ttl=5.0)
    net = start_cluster(6, settings=settings)
    net.run_command("03", "leave")
    net.crash("05")
    rest = ["01", "02", "04", "06"]
    net.run_until(lambda: all(set(net.view(vm)) == set(rest) for vm in rest), timeout=10)
    net.run_for(10)                                   # tombstones of 05 expire
    net.run_command("03", "rejoin", "03@10.0.0.3:7000@999999999")
    everyone = rest + ["03"]
    net.run_until(lambda: all(set(net.view(vm)) == set(everyone) for vm in everyone), timeout=5)
    net.run_for(15)
    assert all("05" not in net.view(vm) for vm in everyone)


def test_a_suspicion_at_a_higher_incarnation_restarts_the_timer():
    net = start_cluster(3)
    node = net.node("01")
    target = next(m for m in node.live_members() if m.vm == "02")
    node.step(net.now, {"t": "update", "from": net.node("03").me.id,
                        "g": [target.with_status("suspect", 0).to_wire()]})
    net.now += FAST.suspicion_timeout - 0.5
    node.step(net.now, {"t": "update", "from": net.node("03").me.id,
                        "g": [target.with_status("suspect", 1).to_wire()]})
    net.now += 1.0                                     # past the first timer, not the second
    out = node.tick(net.now)
    assert not [e for e in out.events if e.kind == "fail"]


def test_a_replayed_message_of_a_replaced_process_is_not_believed_after_its_tombstone_goes():
    """tests/fuzz.py's review found it: authentic messages carry no freshness, so once the
    tombstone of a restarted node's old id expired (tombstone_ttl), a replay of that old id's
    ping re-admitted it as a member beside its successor at the same address."""
    from cluster import wire
    net = start_cluster(10, seed=3)
    old = net.node("05").me
    net.restart("05")
    net.run_until(lambda: all(v.get("05") == ALIVE and len(v) == 10
                              for v in net.views_of_running().values()), 10)
    net.run_for(FAST.tombstone_ttl + 5)
    assert old.id not in net.node("02").members          # its tombstone is gone
    ghost = old.with_status(ALIVE, old.incarnation + 1)
    replay = {"t": "ping", "seq": 1, "from": old.id, "m": ghost.to_wire(), "g": [ghost.to_wire()]}
    net._deliver_output(address("02"), net.node("02").step(net.now, wire.decode(
        wire.encode(replay))))
    assert old.id not in net.node("02").members
    assert set(net.view("02")) == {f"{i:02d}" for i in range(1, 11)}
