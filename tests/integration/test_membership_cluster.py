"""Membership with real node processes on 127.0.0.1 (fast timings), killed and paused for real."""

from __future__ import annotations

import json
import re
import signal

import pytest

from membership.suspicion import detection_bound
from cluster.local_cluster import FAST_MEMBERSHIP, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

SLACK = 1.5   # process scheduling on a loaded 2-core machine, plus dissemination


def bound(suspicion: bool, **timings) -> float:
    m = dict(FAST_MEMBERSHIP, **timings)
    return detection_bound(m["protocol_period"], m["ping_timeout"], suspicion,
                           m["suspicion_timeout"]) + SLACK


# Plain Ping-Ack fails a member at its first missed ack: at the fast timings (an ack within
# 0.3 s), a node that the 2-core machine does not schedule for that long is failed too
# (CI, 2026-12-02: vm03, once in about seven runs). That is the protocol, not what this test
# checks, so its Ping-Ack runs give an ack a second.
PING_ACK = {"protocol_period": 0.5, "ping_timeout": 1.0}


def test_ten_nodes_join_and_all_lists_agree(local_cluster):
    cluster = local_cluster(10)
    ids = {tuple(sorted(m["id"] for m in cluster.members(vm).values())) for vm in cluster.vms}
    assert len(ids) == 1 and len(next(iter(ids))) == 10
    doc = json.loads(cluster.ctl("05", "list_mem").stdout)
    assert {m["vm"] for m in doc["members"]} == set(cluster.vms)
    assert set(doc["members"][0]) >= {"vm", "id", "address", "status", "incarnation", "ring_id"}


@pytest.mark.parametrize("suspicion", [True, False], ids=["ping-ack+s", "ping-ack"])
def test_kill_two_then_one_every_survivor_drops_exactly_them(local_cluster, suspicion):
    timings = {} if suspicion else PING_ACK
    cluster = local_cluster(10, membership=dict({"suspicion": "on" if suspicion else "off"},
                                                **timings))
    survivors = list(cluster.vms)
    for victims in (["04", "07"], ["09"]):
        for vm in victims:
            cluster.kill(vm)
            survivors.remove(vm)
        cluster.wait_converged(survivors, timeout=bound(suspicion, **timings))
    for vm in survivors:
        failed = set(re.findall(r" FAIL (\d\d)@", cluster.log(vm)))
        assert failed == {"04", "07", "09"}, f"vm{vm} logged failures of {failed}"


def test_paused_node_resumed_in_time_is_suspected_then_alive_never_failed(local_cluster):
    cluster = local_cluster(6, membership={"suspicion_timeout": 4.0})
    cluster.pause("03")
    wait_until(lambda: cluster.members("01").get("03", {}).get("status") == "suspect",
               timeout=3, what="03 suspected")
    cluster.resume("03")
    wait_until(lambda: all(cluster.members(vm)["03"]["status"] == "alive"
                           and cluster.members(vm)["03"]["incarnation"] >= 1
                           for vm in cluster.vms), timeout=3, what="03 alive again everywhere")
    assert all(" FAIL " not in cluster.log(vm) for vm in cluster.vms)
    assert "REFUTE" in cluster.log("03")


def test_graceful_leave_is_a_leave_and_restart_is_a_new_member(local_cluster):
    cluster = local_cluster(5)
    cluster.kill("02", signal.SIGTERM)          # SIGTERM: leave gracefully, exit 0
    assert cluster.procs["02"].returncode == 0
    rest = ["01", "03", "04", "05"]
    cluster.wait_converged(rest, timeout=2)
    for vm in rest:
        assert "LEAVE 02@" in cluster.log(vm) and "FAIL 02@" not in cluster.log(vm)
    old_id = cluster.members("03")["04"]["id"]
    cluster.kill("04")
    cluster.start("04")
    wait_until(lambda: all(cluster.members(vm)["04"]["id"] != old_id
                           for vm in ["01", "03", "04", "05"]),
               timeout=bound(True), what="04's new id everywhere")
    cluster.wait_converged(["01", "03", "04", "05"], timeout=bound(True))


def test_leave_and_join_commands(local_cluster):
    cluster = local_cluster(4)
    assert cluster.ctl("03", "leave").returncode == 0
    cluster.wait_converged(["01", "02", "04"], timeout=2)
    assert cluster.ctl("03", "leave").returncode == 1            # not in the group
    assert cluster.ctl("03", "join").returncode == 0
    cluster.wait_converged(cluster.vms, timeout=5)


def test_introducer_down_members_continue_and_joins_succeed_once_it_is_back(local_cluster):
    cluster = local_cluster(6, start=False)
    cluster.start("01")
    for vm in ["02", "03", "04", "05"]:
        cluster.start(vm, wait=False)
    cluster.wait_converged(["01", "02", "03", "04", "05"], timeout=15)
    cluster.kill("01")
    rest = ["02", "03", "04", "05"]
    cluster.wait_converged(rest, timeout=bound(True))
    cluster.start("06", wait=False)
    wait_until(lambda: "unreachable" in (cluster.root / "vm06.out").read_text(), timeout=5,
               what="06 to say the introducer is unreachable")
    assert not cluster.is_joined("06")
    cluster.wait_converged(rest, timeout=1)
    cluster.start("01", wait=False)
    cluster.wait_converged(rest + ["01", "06"], timeout=10)


def test_enable_and_disable_suspicion_switch_the_whole_cluster(local_cluster):
    cluster = local_cluster(5)
    assert all(cluster.query(vm, "status_sus")["suspicion"] for vm in cluster.vms)
    assert cluster.ctl("03", "disable_sus").returncode == 0
    wait_until(lambda: not any(cluster.query(vm, "status_sus")["suspicion"] for vm in cluster.vms),
               timeout=3, what="suspicion off everywhere")
    out = cluster.ctl("05", "status_sus", json=False)
    assert "off" in out.stdout
    assert cluster.ctl("02", "enable_sus").returncode == 0
    wait_until(lambda: all(cluster.query(vm, "status_sus")["suspicion"] for vm in cluster.vms),
               timeout=3, what="suspicion on everywhere")


def test_ctl_exit_codes(local_cluster):
    cluster = local_cluster(2)
    assert cluster.ctl("01", "no_such_command").returncode == 2
    assert cluster.ctl("01", "list_mem", "extra").returncode == 2
    cluster.pause("02")
    result = cluster.ctl("02", "list_mem", options=["--timeout", "1"])
    assert result.returncode == 3 and json.loads(result.stdout)["ok"] is False  # SIGSTOPped
    cluster.resume("02")
    cluster.kill("02")
    result = cluster.ctl("02", "list_mem")
    assert result.returncode == 3 and json.loads(result.stdout)["ok"] is False
    assert cluster.ctl("01", "list_mem", "--json").returncode == 0
