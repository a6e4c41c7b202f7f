"""One RainStorm job run through the leader's REPL, and what the cluster's logs say about it.

`JobRun` issues `RainStorm ...` on the leader, keeps every line the leader prints while the
job runs (progress lines, output rows, "task X moves"), with the time it arrived, and fetches
DEST afterwards to check it against the oracle. `job_phases` and `placement` read the
leader's and the nodes' logs ("JOB <id> ..." and "TASK <id>/[s, i] started" lines).
`rainstorm_run` is one measured throughput run; `first_job` the unmeasured warm-up job.
"""

from __future__ import annotations

import re
import time
from collections import Counter

from bench import reference_apps
from bench.harness import log
from bench.stream_measure import (OthersMeter, PeakRss, QuietGate, cluster_times, cpu_breakdown,
                                  settle)
from bench.stream_setup import APPS, LEADER, TASKS, Oracle, data_file, size_label
from cluster.local_cluster import LocalCluster

PROGRESS = re.compile(r"^\[\s*([\d.]+)s\] read (\d+) lines .*\| \S+ out (\d+) \| \S+ out (\d+)"
                      r" \| sources done (\d+)/(\d+)")
MOVE = re.compile(r"^task (\S+) moves from vm(\d+) to vm(\d+)")
JOB_LINE = re.compile(r"^job (\w+): ")
APP2_ROW = re.compile(r"^[^\[][^,]*,\d+$")       # an output row the leader prints: Category,N


class JobRun:
    """Runs one job through the leader's REPL, recording its output lines with their times."""

    def __init__(self, cluster: LocalCluster, app: int, src: str, dest: str, rate: float = 0,
                 tasks: int = TASKS):
        self.cluster, self.app, self.src, self.dest, self.rate = cluster, app, src, dest, rate
        self.tasks = tasks
        self.lines: list[tuple[float, str]] = []      # (monotonic s, progress/output line)
        self.job = ""

    def _on_output(self, line: str) -> None:
        self.lines.append((time.monotonic(), line))
        m = JOB_LINE.match(line)
        if m and not self.job:
            self.job = m.group(1)

    def run(self) -> dict:
        op1, op2, arg = APPS[self.app]
        argv = ["RainStorm", op1, op2, self.src, self.dest, str(self.tasks), "--op1-args", arg]
        if self.rate:
            argv += ["--rate", str(self.rate)]
        self.started = time.monotonic()
        doc = self.cluster.query(LEADER, *argv, timeout=1800, on_output=self._on_output)
        self.wall = time.monotonic() - self.started
        self.job = self.job or doc["job"]
        self.records_out = doc["records_out"]
        return doc

    def check(self, expected: Counter) -> tuple[bool, str]:
        local = self.cluster.root / f"{self.dest}.csv"
        self.cluster.query(LEADER, "get", self.dest, str(local), timeout=600)
        try:
            return reference_apps.verdict(expected, reference_apps.output_rows(str(local)))
        finally:
            local.unlink(missing_ok=True)

    def progress(self) -> list[tuple[float, int, int]]:
        """(seconds since the call, lines read, output rows) of each progress line."""
        out = []
        for at, line in self.lines:
            m = PROGRESS.match(line)
            if m:
                out.append((at - self.started, int(m.group(2)), int(m.group(4))))
        return out


def job_phases(cluster: LocalCluster, job: str, seconds: float) -> dict:
    """plan / launch / stream / stop seconds of a job, from the leader's JOB log lines."""
    marks = {}
    for _, _, msg in cluster.log_events([LEADER], rf"^JOB {job} "):
        m = re.match(r"JOB \w+ (partitions planned at|started in|sources done at) ([\d.]+) s",
                     msg)
        if m:
            marks[m.group(1).split()[0]] = float(m.group(2))
    if len(marks) < 3:
        return {}
    return {"plan": marks["partitions"], "launch": marks["started"] - marks["partitions"],
            "stream": marks["sources"] - marks["started"], "stop": seconds - marks["sources"]}


def placement(cluster: LocalCluster, job: str, vms=None) -> dict:
    """vm -> the task ids ([stage, index]) of `job` its node started, from the nodes' logs
    ("TASK <job>/[s, i] started on vmNN ...")."""
    where = {}
    for _, vm, msg in cluster.log_events(vms or cluster.vms, rf"^TASK {job}/\[\d+, \d+\] "
                                                              "started"):
        m = re.match(r"TASK \S+?/\[(\d+), (\d+)\]", msg)
        where.setdefault(vm, []).append([int(m.group(1)), int(m.group(2))])
    return where


def running_tasks(cluster: LocalCluster, vm: str = LEADER, timeout: float = 30.0) -> dict:
    """task name -> node of the job that runs now, once every task of it runs (`jobs`,
    then `job JOBID`: where the leader placed them, chained OP1 tasks included)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [j["job"] for j in cluster.query(vm, "jobs")["jobs"]
                   if j["state"] == "running"]
        if running:
            tasks = cluster.query(vm, "job", running[0])["tasks"]
            if tasks and all(t["state"] == "running" for t in tasks):
                return {t["task"]: t["vm"] for t in tasks}
        time.sleep(0.05)
    raise TimeoutError(f"no job with every task running within {timeout:g} s")


def workers_without_a_source(tasks: dict) -> list[str]:
    """The nodes that run tasks of the job (`running_tasks`) but none of its sources."""
    sources = {vm for task, vm in tasks.items() if task.startswith("source-")}
    return sorted({vm for vm in tasks.values()} - sources)


def rainstorm_run(cluster: LocalCluster, app: int, n: int, rep: int, src: str,
                  expected: Counter, gate: QuietGate, tasks: int = TASKS,
                  tag: str = "") -> dict:
    """One measured run of App `app` on SRC (n lines) with `tasks` per stage: times,
    phases, CPU, the largest RSS of a node and of a task process, verdict. `tag` tells
    apart the DEST of runs that are alike otherwise."""
    job = JobRun(cluster, app, src, f"out_{size_label(n)}_app{app}_t{tasks}_r{rep}{tag}",
                 tasks=tasks)
    gate.wait(cluster)
    before = cluster_times(cluster)
    others = OthersMeter(cluster).start()
    peaks = PeakRss(cluster)
    doc = job.run()
    after = cluster_times(cluster)
    others = others.stop()
    peak = peaks.stop()
    settle_s = settle(cluster)
    ok, verdict = job.check(expected)
    rec = {"engine": "rainstorm", "app": app, "n": n, "rep": rep, "tasks": tasks,
           "seconds": doc["seconds"], "peak_rss_mb": peak,
           "wall_s": round(job.wall, 3), "ok": ok, "verdict": verdict, "job": job.job,
           "records_in": doc["records_in"], "records_out": doc["records_out"],
           "dropped": doc["dropped"], "failures_recovered": doc["failures_recovered"],
           "phases": job_phases(cluster, job.job, doc["seconds"]),
           "cpu": cpu_breakdown(before, after, placement(cluster, job.job)),
           "others_cpu": others, "settle_s": round(settle_s, 2)}
    log(f"rainstorm app{app} {size_label(n)} rep {rep}: {doc['seconds']:.2f} s "
        f"(call {job.wall:.2f} s), {verdict}")
    return rec


def first_job(cluster: LocalCluster, oracle: Oracle) -> dict:
    """App 1 on 10k lines as the cluster's first job, not part of the tables: a node
    starts warm spare task processes when a job ends, so only the first job pays a
    Python start-up per task; every measured job runs in the same, warm, state."""
    path, _ = data_file(10_000)
    cluster.query(LEADER, "create", str(path), "warmup", timeout=600)
    settle(cluster, timeout=10)
    job = JobRun(cluster, 1, "warmup", "warmup_out")
    doc = job.run()
    ok, verdict = job.check(oracle.rows(path, 1))
    settle(cluster, timeout=10)
    log(f"first job (App 1, 10k lines, cold): {doc['seconds']:.2f} s, {verdict}")
    return {"seconds": doc["seconds"], "ok": ok, "verdict": verdict,
            "phases": job_phases(cluster, job.job, doc["seconds"])}
