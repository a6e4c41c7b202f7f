"""RainStorm jobs on a real local cluster, checked against the reference applications."""

from __future__ import annotations

import collections
import json
import threading
import time

import pytest

from bench import reference_apps
from bench.gen_traffic_signs import iter_lines, write_csv
from bench.stream_job import running_tasks, workers_without_a_source
from cluster.local_cluster import CommandFailed, LocalCluster
from stream.forwarding import csv_rows

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

APP1 = ("grep", "signs_select", "No Outlet")
APP2 = ("signs_by_category", "count", "Punched Telespar")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalCluster(tmp_path_factory.mktemp("rainstorm"), 10) as cluster:
        for n in (1000, 5000, 10000):
            path = cluster.root / f"TrafficSigns_{n}"
            write_csv(n, str(path))
            cluster.query("01", "create", str(path), f"TrafficSigns_{n}", timeout=60)
        yield cluster


def rows_of(cluster, dest: str) -> collections.Counter:
    out = cluster.root / f"{dest}.out"
    cluster.query("01", "get", dest, str(out), timeout=60)
    return collections.Counter(out.read_text().splitlines())


def expected(app, n: int) -> collections.Counter:
    lines = list(iter_lines(n))
    if app is APP1:
        return reference_apps.app1_lines(lines, APP1[2])
    return reference_apps.app2_expected_rows(lines, APP2[2])


def run(cluster, app, src: str, dest: str, *extra, tasks: int = 3, timeout: float = 240):
    op1, op2, arg = app
    flag = "--op1-args"
    return cluster.query("01", "RainStorm", op1, op2, src, dest, str(tasks), flag, arg, *extra,
                         timeout=timeout)


@pytest.mark.parametrize("n", [1000, 5000, 10000])
@pytest.mark.parametrize("app", [APP1, APP2], ids=["app1", "app2"])
def test_classic_apps_give_exactly_the_reference_output(cluster, app, n):
    dest = f"out_{'app1' if app is APP1 else 'app2'}_{n}"
    doc = run(cluster, app, f"TrafficSigns_{n}", dest)
    assert rows_of(cluster, dest) == expected(app, n)
    assert doc["records_in"] == n + 1 and doc["records_out"] == sum(expected(app, n).values())
    assert doc["failures_recovered"] == 0


def test_a_replica_of_src_cuts_the_partitions_so_src_never_crosses_to_the_leader(cluster):
    """Regression (issue 14): the leader read all of SRC to count its lines, across the
    network when it held no copy (196 MB for a 1M-line file, before any task started)."""
    since = time.time() - 1
    holders = cluster.holders("TrafficSigns_5000")
    run(cluster, APP2, "TrafficSigns_5000", "out_plan_5000")
    assert rows_of(cluster, "out_plan_5000") == expected(APP2, 5000)
    cut = [vm for _, vm, _ in cluster.log_events(cluster.vms, r"^PLAN TrafficSigns_5000: ",
                                                 since)]
    if "01" in holders:           # the leader holds a copy: it cuts them from that
        assert cut == []
    else:
        assert len(cut) == 1 and cut[0] in holders, (cut, holders)


class JobThread(threading.Thread):
    """Runs one job in the background; `result` is its summary, `error` what it raised."""

    def __init__(self, cluster, app, src: str, dest: str, *extra):
        super().__init__(daemon=True)
        self.args = (cluster, app, src, dest, *extra)
        self.result, self.error = {}, None
        self.start()

    def run(self) -> None:
        try:
            self.result = run(*self.args)
        except Exception as exc:         # reported by the test's assertion
            self.error = exc

    def outcome(self) -> dict:
        self.join(timeout=240)
        assert self.error is None, f"the job failed: {self.error}"
        assert self.result, "the job did not finish"
        return self.result


def revive(cluster, vms: list[str]) -> None:
    """Restart killed nodes so that later tests in this module see all ten."""
    for vm in vms:
        if cluster.procs[vm].poll() is not None:
            cluster.start(vm)
    cluster.wait_converged(cluster.vms, timeout=20)


def run_killing(cluster, app, dest: str, victims_of) -> dict:
    """`app` on TrafficSigns_10000 at 3000 lines/s, with the nodes `victims_of(tasks)` names
    (`tasks`: where the leader placed them) killed -9 about 1.5 s into the job, as the demo
    does; its summary. The victims are restarted afterwards, for the tests after it."""
    job = JobThread(cluster, app, "TrafficSigns_10000", dest, "--rate", "3000")
    victims = victims_of(running_tasks(cluster))
    time.sleep(1.0)
    try:
        for vm in victims:
            cluster.kill(vm)
        return job.outcome()
    finally:
        revive(cluster, victims)


def two_victims(tasks: dict) -> list[str]:
    """Two workers without a source task, or, for a job whose tasks are all sources (App 1:
    both operators run in them, a sink), two that run one each."""
    return (workers_without_a_source(tasks) or sorted(set(tasks.values())))[:2]


@pytest.mark.parametrize("app", [APP1, APP2], ids=["app1", "app2"])
def test_two_workers_killed_mid_job_output_is_still_exact(cluster, app):
    name = "app1" if app is APP1 else "app2"
    for attempt in ("killed", "restarted"):
        dest = f"{name}_{attempt}"       # the second round runs with the victims back
        result = run_killing(cluster, app, dest, two_victims)
        assert rows_of(cluster, dest) == expected(app, 10000)
        assert result["failures_recovered"] >= 1
        assert result["records_in"] == 10001
        assert result["records_out"] == sum(expected(app, 10000).values())


def test_a_killed_source_running_op1_is_replaced_and_output_and_counts_stay_exact(cluster):
    """signs_by_category is a filter, so it runs inside the source tasks ([stream] chain):
    a replacement source recomputes OP1's output for the blocks it had not logged done,
    and OP1's counts, logged with those done marks, stay exact (review: no test killed a
    source's worker)."""
    def source_1(tasks: dict) -> list[str]:
        assert all(tasks[f"op1-{i}"] == tasks[f"source-{i}"] for i in range(3))
        return [tasks["source-1"]]
    result = run_killing(cluster, APP2, "source_killed", source_1)
    assert result["failures_recovered"] >= 1
    assert rows_of(cluster, "source_killed") == expected(APP2, 10000)
    assert result["records_in"] == 10001
    assert result["records_out"] == sum(expected(APP2, 10000).values())


def test_task_log_is_readable_and_a_replacement_resumes_from_it(cluster):
    """Kill the worker of the count task op2-0 mid-job: its replacement must continue from
    the logged counts (a restart from zero would emit `Category,1` twice) and the log's
    commit numbers continue where the dead task stopped."""
    result = run_killing(cluster, APP2, "resume_out", lambda tasks: [tasks["op2-0"]])
    assert result["failures_recovered"] >= 1
    assert rows_of(cluster, "resume_out") == expected(APP2, 10000)
    assert result["records_out"] == sum(expected(APP2, 10000).values())
    out = cluster.root / "op2-0.log"
    cluster.query("01", "get", f"rainstorm/{result['job']}/op2-0.log", str(out))
    records = [json.loads(line) for line in out.read_text().splitlines()]
    seqs = [r["seq"] for r in records]
    assert seqs == sorted(set(seqs)), "the replacement restarted its commit numbers"
    assert any(r.get("state") for r in records)


def test_bad_jobs_get_clear_errors(cluster):
    cases = [
        (("grep", "signs_select", "missing_src", "d1", "3"), "no such file"),
        (("grep", "signs_select", "TrafficSigns_1000", "TrafficSigns_1000", "3"), "already exists"),
        (("grep", "signs_select", "TrafficSigns_1000", "../bad", "3"), "'..'"),
        (("nope", "signs_select", "TrafficSigns_1000", "d2", "3"), "nope"),
        (("grep", "signs_select", "TrafficSigns_1000", "d3", "0"), "NUM_TASKS"),
    ]
    for argv, reason in cases:
        with pytest.raises(CommandFailed, match=reason):
            cluster.query("01", "RainStorm", *argv, timeout=60)


def test_user_python_operator_and_executable_operator(cluster):
    """A user's operator by path that raises on some tuples (counted, job goes on), and an
    executable operator speaking the batched line protocol."""
    picky = cluster.root / "picky.py"
    picky.write_text('KIND = "transform"\n\n'
                     'def process(key, value, arg):\n'
                     '    object_id = value.split(",")[2]\n'
                     '    if int(object_id) % 2:\n'
                     '        raise ValueError("odd OBJECTID")\n'
                     '    return object_id, "even"\n')
    lines = list(iter_lines(1000))
    matching = [line for line in lines[1:] if "No Outlet" in line]
    doc = cluster.query("01", "RainStorm", "grep", str(picky), "TrafficSigns_1000", "user_out",
                        "3", "--op1-args", "No Outlet", timeout=120)
    ids = [int(reference_apps.parse(line)[2]) for line in matching]
    assert doc["errors"] == sum(1 for i in ids if i % 2)
    assert rows_of(cluster, "user_out") == collections.Counter(
        f"{i},even" for i in ids if i % 2 == 0)
    exe = cluster.root / "shout"
    exe.write_text("#!/usr/bin/env python3\nimport json, sys\nfor line in sys.stdin:\n"
                   "    b = json.loads(line)\n"
                   "    out = [[k, v.upper()] for k, v in zip(b['keys'], b['values'])]\n"
                   "    print(json.dumps({'out': out}), flush=True)\n")
    exe.chmod(0o755)
    doc = cluster.query("01", "RainStorm", "grep", str(exe), "TrafficSigns_1000", "exe_out", "3",
                        "--op1-args", "No Outlet", timeout=120)
    keys = [f"TrafficSigns_1000:{n}" for n, line in enumerate(lines, 1) if "No Outlet" in line]
    want = collections.Counter(csv_rows(keys, [v.upper() for v in matching]).decode().splitlines())
    assert rows_of(cluster, "exe_out") == want and doc["records_out"] == len(matching)


def test_an_operator_that_always_crashes_fails_the_job_clearly(cluster):
    broken = cluster.root / "broken"
    broken.write_text("#!/bin/sh\necho 'cannot work' >&2\nexit 1\n")
    broken.chmod(0o755)
    with pytest.raises(CommandFailed, match="failed 4 times"):
        cluster.query("01", "RainStorm", "grep", str(broken), "TrafficSigns_1000", "never",
                      "3", "--op1-args", "No Outlet", timeout=120)


def test_a_job_on_a_cluster_with_a_secret_is_exact(tmp_path):
    """With a secret, tasks, nodes and HyDFS authenticate every message and payload."""
    with LocalCluster(tmp_path, 5, secret="s3cret") as cluster:
        path = cluster.root / "TrafficSigns_2000"
        write_csv(2000, str(path))
        cluster.query("01", "create", str(path), "TrafficSigns_2000", timeout=60)
        doc = run(cluster, APP2, "TrafficSigns_2000", "out_secret")
        assert rows_of(cluster, "out_secret") == expected(APP2, 2000)
        assert doc["records_out"] == sum(expected(APP2, 2000).values())
