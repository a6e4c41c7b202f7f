"""Following jobs (`--follow`) and job control (`jobs`, `job`, `stop`) on a real local cluster,
checked against the reference applications over every line appended."""

from __future__ import annotations

import collections
import os
import signal
import threading
import time

import pytest

from bench import reference_apps
from bench.gen_traffic_signs import iter_lines, write_csv
from cluster.local_cluster import CommandFailed, LocalCluster, children_of, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

APP1 = ("grep", "signs_select", "No Outlet")
APP2 = ("signs_by_category", "count", "Punched Telespar")
HEADER_AND_LINES = 300          # the source file holds the header and 299 signs
WINDOW_MB = 0.25


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalCluster(tmp_path_factory.mktemp("following"), 10,
                      stream={"source_window_mb": WINDOW_MB}) as cluster:
        yield cluster


class Source:
    """A HyDFS file that grows: the lines it holds, in the order they were appended."""

    def __init__(self, cluster, name: str, seed: int):
        self.cluster, self.name = cluster, name
        self.lines = list(iter_lines(HEADER_AND_LINES - 1, seed=seed))
        self.pool = list(iter_lines(6000, seed=seed + 1))[1:]     # signs still to append
        path = cluster.root / name
        path.write_text("".join(line + "\n" for line in self.lines))
        cluster.query("01", "create", str(path), name, timeout=60)
        self._lock = threading.Lock()
        self._batch = 0

    def append(self, vm: str, count: int, may_fail: bool = False) -> None:
        with self._lock:
            lines, self.pool = self.pool[:count], self.pool[count:]
            self._batch += 1
            path = self.cluster.root / f"{self.name}.append{self._batch}"
        path.write_text("".join(line + "\n" for line in lines))
        try:
            self.cluster.query(vm, "append", str(path), self.name, timeout=60)
        except CommandFailed:
            if not may_fail:
                raise
            return                 # refused, e.g. a replica frozen: it may still have landed
        with self._lock:
            self.lines += lines

    def stored_lines(self) -> list[str]:
        """SRC's lines as HyDFS holds them now (appends whose outcome was unknown too)."""
        out = self.cluster.root / f"{self.name}.stored"
        self.cluster.query("01", "get", self.name, str(out), timeout=60)
        return out.read_text().splitlines()


def expected(app, lines) -> collections.Counter:
    if app is APP1:
        return reference_apps.app1_lines(lines, APP1[2])
    return reference_apps.app2_expected_rows(lines, APP2[2])


def rows_of(cluster, dest: str) -> collections.Counter:
    out = cluster.root / f"{dest}.out"
    cluster.query("01", "get", dest, str(out), timeout=60)
    return collections.Counter(out.read_text().splitlines())


def start(cluster, app, src: str, dest: str, vm: str = "01") -> str:
    op1, op2, arg = app
    doc = cluster.query(vm, "RainStorm", op1, op2, src, dest, "3", "--op1-args", arg,
                        "--follow", "--detach", timeout=60)
    assert doc["state"] == "running"
    return doc["job"]


def read_all(cluster, job: str, lines: int, vm: str = "03") -> None:
    wait_until(lambda: cluster.query(vm, "job", job)["records_in"] >= lines, 60,
               interval=0.2, what=f"job {job} to read {lines} lines")


def test_following_app2_survives_two_killed_workers_while_four_nodes_append(cluster):
    src = Source(cluster, "follow_src", seed=41)
    job = start(cluster, APP2, src.name, "follow_app2")
    tasks = {t["task"]: t["vm"] for t in cluster.query("05", "job", job)["tasks"]}
    # a worker with a source task (source-2 follows the appends; the leader's node stays)
    follower = next(tasks[f"source-{i}"] for i in (2, 1, 0) if tasks[f"source-{i}"] != "01")
    other = next(vm for t, vm in sorted(tasks.items())
                 if t.startswith("op") and vm not in (follower, "01"))
    victims = [follower, other]
    appenders = [vm for vm in cluster.vms if vm not in victims and vm != "01"][:4]
    wait_until(lambda: cluster.query(appenders[0], "job", job)["state"] == "running", 30,
               what="the job to run")
    for round_no in range(6):
        threads = [threading.Thread(target=src.append, args=(vm, 40)) for vm in appenders]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if round_no == 2:            # once those lines are through: their machines die
            read_all(cluster, job, len(src.lines), vm=appenders[1])
            for vm in victims:
                cluster.crash(vm)
    read_all(cluster, job, len(src.lines), vm=appenders[1])
    doc = cluster.query(appenders[2], "stop", job, timeout=120)
    assert doc["state"] == "stopped"
    assert doc["failures_recovered"] >= 1
    assert rows_of(cluster, "follow_app2") == expected(APP2, src.lines)
    assert doc["records_in"] == len(src.lines)

    src.append(appenders[0], 30)               # after the stop: never read
    time.sleep(1.0)
    assert rows_of(cluster, "follow_app2") == expected(APP2, src.lines[:-30])
    assert cluster.query(appenders[3], "job", job)["records_in"] == len(src.lines) - 30
    for vm in victims:
        cluster.start(vm)
    cluster.wait_converged(cluster.vms, timeout=20)


def test_a_frozen_follower_that_wakes_up_after_its_replacement_adds_and_loses_nothing(cluster):
    """SIGSTOP of the follower's whole machine (node and task processes) while clients
    append, longer than failure detection: the follower is replaced; when the old one wakes
    up it is fenced, and after `stop` DEST is still exactly the oracle's."""
    src = Source(cluster, "frozen_src", seed=45)
    job = start(cluster, APP2, src.name, "frozen_app2", vm="02")
    wait_until(lambda: cluster.query("03", "job", job)["state"] == "running", 30,
               what="the job to run")
    tasks = {t["task"]: t["vm"] for t in cluster.query("03", "job", job)["tasks"]}
    frozen = tasks["source-2"]
    if frozen == "01":
        pytest.skip("the follower runs on the leader's node")
    appenders = [vm for vm in cluster.vms if vm not in (frozen, "01")][:3]
    src.append(appenders[0], 40)
    read_all(cluster, job, len(src.lines), vm=appenders[1])
    pids = [cluster.procs[frozen].pid] + children_of(cluster.procs[frozen].pid)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        for vm in appenders:      # a replica of SRC may be frozen: an append may be refused
            src.append(vm, 40, may_fail=True)
        wait_until(lambda: next(t for t in cluster.query(appenders[1], "job", job)["tasks"]
                                if t["task"] == "source-2")["vm"] != frozen, 30,
                   interval=0.2, what="the follower to be replaced")
        src.append(appenders[2], 40)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    src.append(appenders[0], 40)                 # the old follower is awake again
    stored = src.stored_lines()
    assert not collections.Counter(src.lines) - collections.Counter(stored)  # acked: there
    read_all(cluster, job, len(stored), vm=appenders[1])
    doc = cluster.query(appenders[2], "stop", job, timeout=120)
    assert doc["records_in"] == len(stored) and doc["failures_recovered"] >= 1
    assert rows_of(cluster, "frozen_app2") == expected(APP2, stored)
    cluster.restart(frozen)                      # it was declared failed: back as new
    cluster.wait_converged(cluster.vms, timeout=20)


def test_two_jobs_follow_one_source_and_stop_takes_every_acknowledged_append(cluster):
    src = Source(cluster, "shared_src", seed=42)
    jobs = {start(cluster, APP1, src.name, "shared_app1", vm="04"): (APP1, "shared_app1"),
            start(cluster, APP2, src.name, "shared_app2", vm="07"): (APP2, "shared_app2")}
    for vm in ("02", "08", "09"):
        src.append(vm, 50)
    for job, (app, dest) in jobs.items():     # stopped right after the last append returned
        doc = cluster.query("02", "stop", job, timeout=120)
        assert doc["state"] == "stopped" and doc["records_in"] == len(src.lines)
        assert rows_of(cluster, dest) == expected(app, src.lines)


def test_job_control_from_other_nodes_speaks_the_documented_json(cluster):
    src = Source(cluster, "control_src", seed=43)
    job = start(cluster, APP1, src.name, "control_app1", vm="05")
    listed = cluster.query("08", "jobs")["jobs"]
    mine = next(j for j in listed if j["job"] == job)
    assert {"job", "state", "op1", "op2", "src", "dest", "num_tasks", "records_in",
            "records_out"} <= set(mine)
    assert (mine["op1"], mine["src"], mine["dest"], mine["num_tasks"]) == \
        ("grep", src.name, "control_app1", 3)
    assert mine["state"] in ("starting", "running")
    wait_until(lambda: cluster.query("09", "job", job)["state"] == "running", 30,
               what="the job to run")
    doc = cluster.query("09", "job", job)
    assert {"job", "dest", "records_in", "records_out", "dropped", "failures_recovered",
            "seconds", "state", "tasks"} <= set(doc)
    assert len(doc["tasks"]) == 9
    for task in doc["tasks"]:
        assert {"task", "vm", "state", "records_in", "records_out"} <= set(task)
        assert task["state"] == "running"
    result = cluster.ctl("10", "stop", job)
    assert result.returncode == 0, result.stderr
    stopped = __import__("json").loads(result.stdout)
    assert stopped["state"] == "stopped" and stopped["job"] == job
    assert cluster.query("02", "job", job)["state"] == "stopped"
    assert next(j for j in cluster.query("03", "jobs")["jobs"]
                if j["job"] == job)["state"] == "stopped"     # ended jobs stay listed
    assert rows_of(cluster, "control_app1") == expected(APP1, src.lines)


def test_job_control_errors_are_clear(cluster):
    result = cluster.ctl("04", "stop", "nosuchjob")
    assert result.returncode == 1 and "no such job nosuchjob" in result.stderr
    result = cluster.ctl("04", "job", "nosuchjob")
    assert result.returncode == 1 and "no such job" in result.stderr
    result = cluster.ctl("04", "RainStorm", "grep", "signs_select", "no_such_src", "x_out",
                         "3", "--follow")
    assert result.returncode == 1 and "no such file" in result.stderr
    for bad in (["--rate", "fast"], ["--bogus"], ["--op1-args"]):
        result = cluster.ctl("04", "RainStorm", "grep", "signs_select", "no_such_src",
                             "x_out", "3", *bad)
        assert result.returncode == 2, (bad, result.stderr)
    result = cluster.ctl("04", "stop")
    assert result.returncode == 2 and "usage: stop JOBID" in result.stderr


SLOW_OPERATOR = '''import time
KIND = "transform"

def process(key, value, arg):
    time.sleep(0.002)
    return key, value
'''


def test_a_slow_stage_slows_the_sources_instead_of_filling_memory(cluster):
    """Backpressure: with an operator that sleeps, no source ever has more than its window
    unacknowledged, and the sources stay close behind what the stage has done."""
    lines = 6000
    write_csv(lines - 1, str(cluster.root / "slow_src"))
    cluster.query("01", "create", str(cluster.root / "slow_src"), "slow_src", timeout=60)
    (cluster.root / "slow_op.py").write_text(SLOW_OPERATOR)
    # the slow operator is OP2: as OP1, a transform, it would run inside the sources
    # ([stream] chain), and nothing would hold them back (review regression)
    doc = cluster.query("01", "RainStorm", "grep", str(cluster.root / "slow_op.py"),
                        "slow_src", "slow_out", "3", "--op1-args", ",", "--detach",
                        timeout=60)
    job, window = doc["job"], WINDOW_MB * (1 << 20)
    ahead = []
    while (status := cluster.query("02", "job", job))["state"] not in ("done", "failed"):
        sources = [t for t in status["tasks"] if t["task"].startswith("source")]
        for t in sources:
            assert t.get("in_flight", 0) <= window, t
        processed = sum(t["records_in"] for t in status["tasks"] if t["task"].startswith("op2"))
        ahead.append(sum(t["records_in"] for t in sources) - processed)
        time.sleep(0.2)
    assert status["state"] == "done" and status["records_in"] == lines
    line_bytes = (cluster.root / "slow_src").stat().st_size / lines
    # in flight and cut but unsent: at most two windows per source (and a block each)
    assert max(ahead) <= 3 * (2 * window + (64 << 10)) / line_bytes, ahead
    assert len(ahead) >= 5           # it took a while: the stage was slow


def test_a_merge_of_the_source_during_a_following_job_changes_nothing(cluster):
    src = Source(cluster, "merged_src", seed=44)
    job = start(cluster, APP1, src.name, "merged_app1", vm="03")
    src.append("04", 60)
    src.append("05", 60)
    cluster.query("06", "merge", src.name, timeout=60)
    src.append("07", 60)
    read_all(cluster, job, len(src.lines))
    doc = cluster.query("08", "stop", job, timeout=120)
    assert doc["records_in"] == len(src.lines)
    assert rows_of(cluster, "merged_app1") == expected(APP1, src.lines)


def test_stop_of_an_ended_job_returns_its_summary(cluster):
    with pytest.raises(CommandFailed, match="no such job"):
        cluster.query("02", "stop", "deadbeef")
