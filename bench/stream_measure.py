"""What the stream benchmark's processes cost, and how busy everyone else keeps the machine.

All from /proc: `cluster_times` samples each node's own CPU time and its task processes'
(reaped and live); `cpu_breakdown` turns two samples into CPU seconds by role; `settle` and
`idle_cpu` watch the idle cluster. `OthersMeter` measures the share of the machine that
processes outside this benchmark used over a run, and `QuietGate` waits (a bounded time)
before each run until that share is low, since another user's job slows every figure.
`PeakRss` samples the largest node and task process while a job runs.
"""

from __future__ import annotations

import os
import resource
import threading
import time

from bench import peers
from bench.harness import log
from bench.stream_setup import LEADER
from cluster.local_cluster import LocalCluster
from cluster.local_cluster import process_table as rss_table
from stream.scheduler import STAGE_NAMES

CLK_TCK = peers.CLK_TCK
MB = 1 << 20


def process_table() -> dict:
    """pid -> (ppid, own CPU s, reaped children's CPU s) of every process, from /proc."""
    table = {}
    for pid, fields in peers.proc_stat_fields():
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        table[pid] = (int(fields[1]), (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK)
    return table


def cluster_times(cluster: LocalCluster) -> dict:
    """vm -> (the node process's own CPU s, its task processes' CPU s), for live nodes. The
    second counts reaped children (cutime) and the live descendants (running tasks, warm
    spare task processes), so a task's CPU is counted whether or not it has been reaped."""
    table = process_table()
    children = children_of(table)
    out = {}
    for vm, proc in cluster.procs.items():
        if proc.poll() is not None or proc.pid not in table:
            continue
        _, own, reaped = table[proc.pid]
        live = sum(table[pid][1] + table[pid][2] for pid in descendants(children, proc.pid))
        out[vm] = (own, reaped + live)
    return out


def children_of(table: dict) -> dict:
    """ppid -> its child pids, of a table pid -> (ppid, ...)."""
    children = {}
    for pid, row in table.items():
        children.setdefault(row[0], []).append(pid)
    return children


def descendants(children: dict, pid: int):
    """Every descendant of `pid` (children_of's map), its task processes for a node."""
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        yield child
        todo += children.get(child, [])


def settle(cluster: LocalCluster, below: float = 0.3, timeout: float = 5.0) -> float:
    """Wait until the cluster (its task processes included) uses less than `below` of a
    core, e.g. after a job while its nodes start warm spare task processes, so that their
    start-up does not overlap the next measurement; the seconds waited."""
    started = time.monotonic()
    before = cluster_times(cluster)
    while time.monotonic() - started < timeout:
        time.sleep(0.2)
        after = cluster_times(cluster)
        used = sum(sum(after[vm]) - sum(before[vm]) for vm in after if vm in before)
        before = after
        if used / 0.2 < below:
            break
    return time.monotonic() - started


def idle_cpu(cluster: LocalCluster, seconds: float = 3.0) -> float:
    """Share of one core the idle cluster (all ten nodes) uses."""
    before = cluster_times(cluster)
    time.sleep(seconds)
    after = cluster_times(cluster)
    return sum(after[vm][0] - before[vm][0] for vm in after if vm in before) / seconds


def cpu_breakdown(before: dict, after: dict, where: dict) -> dict:
    """CPU seconds between two samples, by role: the leader node, the worker nodes (their
    HyDFS, membership and task plumbing), and the task processes of each stage (a node's
    descendants; "mixed" if a node ran tasks of more than one stage, "spare" for those of
    nodes that ran none: warm spare task processes starting)."""
    roles = {"leader node": 0.0, "worker nodes": 0.0,
             **{f"{name} tasks": 0.0 for name in STAGE_NAMES}, "mixed tasks": 0.0,
             "spare tasks": 0.0}
    for vm, (own, kids) in after.items():
        own0, kids0 = before.get(vm, (own, kids))
        roles["leader node" if vm == LEADER else "worker nodes"] += own - own0
        stages = {stage for stage, _ in where.get(vm, [])}
        role = f"{STAGE_NAMES[stages.pop()]} tasks" if len(stages) == 1 else \
            "spare tasks" if not stages else "mixed tasks"
        roles[role] += kids - kids0
    roles["total"] = sum(roles.values())
    return {k: round(v, 2) for k, v in roles.items()}


def machine_busy() -> float:
    """CPU seconds all cores have been busy since boot (from /proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]          # idle + iowait
    return (sum(ticks[:8]) - idle) / CLK_TCK


def own_cpu() -> float:
    """CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class OthersMeter:
    """How busy the machine was with processes that are not this benchmark's, as a share
    of all cores, between start() and stop() (other users' jobs skew every figure)."""

    def __init__(self, cluster: LocalCluster | None = None):
        self.cluster = cluster

    def _nodes(self) -> dict:
        return cluster_times(self.cluster) if self.cluster else {}

    def start(self) -> "OthersMeter":
        self.t0, self.busy0, self.own0, self.nodes0 = (time.monotonic(), machine_busy(),
                                                       own_cpu(), self._nodes())
        return self

    def stop(self, peer_cpu: float = 0.0) -> float:
        """`peer_cpu`: CPU seconds of the peer engine run meanwhile (ours too)."""
        seconds = time.monotonic() - self.t0
        nodes = self._nodes()
        ours = own_cpu() - self.own0 + peer_cpu + sum(sum(nodes[vm]) - sum(self.nodes0[vm])
                                                      for vm in nodes if vm in self.nodes0)
        others = machine_busy() - self.busy0 - ours
        return round(max(0.0, others) / (seconds * (os.cpu_count() or 1)), 3)


class QuietGate:
    """Before each measurement, wait (a bounded time) until processes outside this
    benchmark use less than `threshold` of the machine, so other users' jobs on a shared
    machine skew fewer figures. Each run records how busy the others were anyway."""

    WINDOW = 0.3

    def __init__(self, threshold: float, per_run: float, total: float):
        self.threshold, self.per_run, self.left = threshold, per_run, total
        self.waited = 0.0

    def wait(self, cluster: LocalCluster | None) -> float:
        started = time.monotonic()
        deadline = started + min(self.per_run, self.left)
        while True:
            others = OthersMeter(cluster).start()
            time.sleep(self.WINDOW)
            if others.stop() < self.threshold or time.monotonic() >= deadline:
                break
        waited = time.monotonic() - started
        self.left = max(0.0, self.left - waited)
        self.waited += waited
        if waited > 2:
            log(f"waited {waited:.0f} s for other processes to quieten down")
        return waited


class PeakRss(threading.Thread):
    """The largest RSS of any one node process and of any one of their descendants (task
    processes), sampled every `every` seconds from /proc while a job runs: {"node": MB,
    "task": MB}. A bound on one process's memory is what a job of any size must keep."""

    def __init__(self, cluster: LocalCluster, every: float = 0.2):
        super().__init__(daemon=True, name="peak-rss")
        self.cluster, self.every = cluster, every
        self.peak = {"node": 0.0, "task": 0.0}
        self._stopped = threading.Event()
        self.start()

    def run(self) -> None:
        while True:
            self._sample()
            if self._stopped.wait(self.every):
                return

    def _sample(self) -> None:
        table = rss_table()
        children = children_of(table)
        for proc in self.cluster.procs.values():
            if proc.pid not in table:
                continue
            self.peak["node"] = max(self.peak["node"], table[proc.pid][1] / MB)
            for pid in descendants(children, proc.pid):
                self.peak["task"] = max(self.peak["task"], table[pid][1] / MB)

    def stop(self) -> dict:
        self._stopped.set()
        self.join(5)
        self._sample()
        return {k: round(v, 1) for k, v in self.peak.items()}
