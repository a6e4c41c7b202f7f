"""Leader failover on a real local cluster: the leader is killed -9 or frozen while jobs run;
a successor takes every job over from its record, output stays exactly the oracle's, and a
deposed leader cannot act (INTERFACE.md, "Leader failover")."""

from __future__ import annotations

import collections
import json
import os
import signal
import threading
import time

import pytest

from bench import reference_apps
from bench.gen_traffic_signs import write_csv
from cluster.local_cluster import LocalCluster, children_of, wait_until
from tests.bounds import detection
from tests.integration.test_following import APP2, Source, expected

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

APP1 = ("grep", "signs_select", "No Outlet")
LINES = 12000
RATE = 2000                       # lines/s in all: the job runs about 6 s


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalCluster(tmp_path_factory.mktemp("failover"), 10) as cluster:
        path = cluster.root / "signs.csv"
        write_csv(LINES, path, seed=7)
        cluster.query("02", "create", str(path), "signs", timeout=60)
        cluster.lines = path.read_text().splitlines()
        yield cluster



def leader_seen_by(cluster, vms) -> dict:
    return {vm: cluster.query(vm, "leader")["leader"] for vm in vms}


def agreed_leader(cluster, vms, not_: str) -> str | None:
    """The leader every node in `vms` names, if they agree and it is not `not_`."""
    seen = set(leader_seen_by(cluster, vms).values())
    return seen.pop() if len(seen) == 1 and not_ not in seen else None


def submit(cluster, vm: str, app, dest: str, *extra: str) -> dict:
    op1, op2, arg = app
    return cluster.query(vm, "RainStorm", op1, op2, "signs", dest, "3", "--op1-args", arg,
                         "--rate", str(RATE), *extra, timeout=200)


def oracle(cluster, app) -> collections.Counter:
    if app is APP1:
        return reference_apps.app1_lines(cluster.lines, APP1[2])
    return reference_apps.app2_expected_rows(cluster.lines, APP2[2])


def rows(cluster, dest: str, vm: str) -> collections.Counter:
    out = cluster.root / f"{dest}.out"
    cluster.query(vm, "get", dest, str(out), timeout=60)
    return collections.Counter(out.read_text().splitlines())


def wait_done(cluster, vm: str, job: str, timeout: float = 120) -> dict:
    wait_until(lambda: cluster.query(vm, "job", job)["state"] in ("done", "stopped", "failed"),
               timeout, interval=0.3, what=f"job {job} to end")
    return cluster.query(vm, "job", job)


def test_killed_leader_is_replaced_and_its_jobs_end_exactly(cluster):
    """kill -9 of the leader's machine 1.5 s into a detached App 2 (and an App 1 whose
    caller waits on another node): a new leader within detection + 3 s on which every node
    agrees, both jobs end `done` with exactly the oracle's output, and the waiting caller
    gets its summary from the successor."""
    old = cluster.query("03", "leader")["leader"]
    job = submit(cluster, "05", APP2, "fo_app2", "--detach")["job"]
    waited: dict = {}
    caller = threading.Thread(target=lambda: waited.update(submit(cluster, "06", APP1,
                                                                  "fo_app1")))
    caller.start()
    time.sleep(1.5)
    killed_at = time.monotonic()
    cluster.crash(old)
    live = [vm for vm in cluster.vms if vm != old]
    new = wait_until(lambda: agreed_leader(cluster, live, old), 30, interval=0.1,
                     what="every node to agree on a new leader")
    took = time.monotonic() - killed_at
    assert took <= detection(cluster) + 3.0, f"a new leader after {took:.1f} s"
    doc = wait_done(cluster, "07", job)
    assert doc["state"] == "done", doc
    assert rows(cluster, "fo_app2", "07") == oracle(cluster, APP2)
    caller.join(120)
    assert waited.get("state") == "done", waited
    assert rows(cluster, "fo_app1", "07") == oracle(cluster, APP1)

    cluster.start(old)                     # back as an ordinary member: no flapping back
    cluster.wait_converged(cluster.vms, timeout=20)
    time.sleep(2 * detection(cluster))
    assert set(leader_seen_by(cluster, cluster.vms).values()) == {new}


def test_a_frozen_leader_is_deposed_and_cannot_disturb_its_jobs(cluster):
    """The leader and its task processes SIGSTOPped for longer than detection while a job
    runs, then resumed: a successor took over; the old leader is deposed (it names the new
    one, and its orders are refused), and the output is exact."""
    old = cluster.query("04", "leader")["leader"]
    submitter = next(vm for vm in ("05", "06", "07") if vm != old)
    job = submit(cluster, submitter, APP2, "frozen_app2", "--detach")["job"]
    time.sleep(1.5)
    pids = [cluster.procs[old].pid] + children_of(cluster.procs[old].pid)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    live = [vm for vm in cluster.vms if vm != old]
    try:
        new = wait_until(lambda: agreed_leader(cluster, live, old), 30, interval=0.1,
                         what="a new leader while the old one is frozen")
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    wait_until(lambda: cluster.query(old, "leader")["leader"] == new, 20, interval=0.2,
               what="the old leader to learn it was deposed")
    doc = wait_done(cluster, submitter, job)
    assert doc["state"] == "done", doc
    assert rows(cluster, "frozen_app2", submitter) == oracle(cluster, APP2)
    assert cluster.log_events([old], r"LEADER vm\d+ deposed|JOB \w+ let go"), \
        "the old leader never noticed it was deposed"
    cluster.restart(old)                   # it was declared failed: back as new
    cluster.wait_converged(cluster.vms, timeout=20)


def test_leader_killed_while_a_following_job_runs_and_clients_append(cluster):
    src = Source(cluster, "fo_follow_src", seed=51)
    old = cluster.query("02", "leader")["leader"]
    starter = next(vm for vm in ("04", "05", "06") if vm != old)
    op1, op2, arg = APP2
    job = cluster.query(starter, "RainStorm", op1, op2, src.name, "fo_follow", "3",
                        "--op1-args", arg, "--follow", "--detach", timeout=60)["job"]
    appenders = [vm for vm in cluster.vms if vm not in (old, "01")][:3]
    live = [vm for vm in cluster.vms if vm != old]
    for round_no in range(5):
        for vm in appenders:
            src.append(vm, 40)
        if round_no == 1:
            cluster.crash(old)
    wait_until(lambda: agreed_leader(cluster, live, old), 30, interval=0.1,
               what="a new leader")
    wait_until(lambda: cluster.query(appenders[0], "job", job)["records_in"] >= len(src.lines),
               60, interval=0.3, what="the job to read every appended line")
    doc = cluster.query(appenders[1], "stop", job, timeout=120)
    assert doc["state"] == "stopped" and doc["records_in"] == len(src.lines)
    assert rows(cluster, "fo_follow", appenders[2]) == expected(APP2, src.lines)
    cluster.start(old)
    cluster.wait_converged(cluster.vms, timeout=20)


def test_a_job_sent_to_a_frozen_leader_runs_once_under_its_successor(cluster):
    """The leader is frozen before a RainStorm relayed to it is answered: the relaying node
    asks the successor under the same job id and the caller gets the summary; when the old
    leader wakes and reads the request it had buffered, no second job starts."""
    old = cluster.query("03", "leader")["leader"]
    home = next(vm for vm in ("06", "07", "08") if vm != old)
    pids = [cluster.procs[old].pid] + children_of(cluster.procs[old].pid)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        doc = submit(cluster, home, APP2, "frozen_submit")
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert doc["state"] == "done", doc
    assert rows(cluster, "frozen_submit", home) == oracle(cluster, APP2)
    wait_until(lambda: cluster.query(old, "leader")["leader"] != old, 20, interval=0.2,
               what="the old leader to learn it was deposed")
    time.sleep(2.0)                        # what it had buffered, it has read by now
    listed = [j for j in cluster.query(home, "jobs")["jobs"] if j["dest"] == "frozen_submit"]
    assert [j["job"] for j in listed] == [doc["job"]], listed
    cluster.restart(old)
    cluster.wait_converged(cluster.vms, timeout=20)


def test_a_job_whose_leader_died_setting_it_up_is_set_up_again_by_the_successor(cluster):
    """A job recorded (spec, no task specs yet: its leader died between the two writes)
    is set up and run by the next leader, exactly once."""
    job, dest = "5e7a11ed0b1e", "set_up_again"
    first = {"job": job, "state": "starting", "leader": "xx", "created": time.time(),
             "cwd": str(cluster.root), "le": 1,
             "spec": {"op1": APP2[0], "op2": APP2[1], "src": "signs", "dest": dest,
                      "num_tasks": 2, "op1_args": APP2[2], "op2_args": "", "rate": 0,
                      "follow": False}}
    record = cluster.root / "half_record"
    record.write_text(json.dumps(first) + "\n")
    cluster.query("02", "create", str(record), f"rainstorm/{job}/job", timeout=60)
    index_line = cluster.root / "index_line"
    index_line.write_text(json.dumps({"job": job}) + "\n")
    wait_until(lambda: cluster.query("03", "leader")["epoch"] > 0, 30,
               what="a leader (it makes the job index)")
    wait_until(lambda: cluster.holders("rainstorm/jobs"), 30, what="the job index")
    cluster.query("02", "append", str(index_line), "rainstorm/jobs", timeout=60)
    old = cluster.query("03", "leader")["leader"]
    cluster.crash(old)
    home = next(vm for vm in ("06", "07", "08") if vm != old)
    doc = wait_done(cluster, home, job)
    assert doc["state"] == "done", doc
    assert rows(cluster, dest, home) == oracle(cluster, APP2)
    cluster.start(old)
    cluster.wait_converged(cluster.vms, timeout=20)


def test_ctl_whose_own_node_dies_mid_job_says_which_job_to_follow(cluster):
    """Regression (new-user trial): `ctl` on the leader's node, killed -9 while the job
    ran, printed only 'connection closed' (a ProtocolError, not an OSError) and the
    --json document had no job id."""
    old = cluster.query("03", "leader")["leader"]
    op1, op2, arg = APP2
    result: dict = {}
    caller = threading.Thread(target=lambda: result.update(proc=cluster.ctl(
        old, "RainStorm", op1, op2, "signs", "ctl_follow", "3", "--op1-args", arg,
        "--rate", str(RATE), timeout=120)))
    caller.start()
    wait_until(lambda: any(j["dest"] == "ctl_follow" and j["state"] == "running"
                           for j in cluster.query("04", "jobs")["jobs"]), 30,
               interval=0.2, what="the job to run")
    cluster.crash(old)
    caller.join(60)
    proc = result["proc"]
    doc = json.loads(proc.stdout)
    assert proc.returncode == 3 and doc["ok"] is False and doc["job"], proc.stdout
    assert f"follow it with 'job {doc['job']}'" in proc.stderr
    assert wait_done(cluster, "04", doc["job"])["state"] == "done"
    assert rows(cluster, "ctl_follow", "04") == oracle(cluster, APP2)
    cluster.start(old)
    cluster.wait_converged(cluster.vms, timeout=20)
