"""RainStorm stream benchmark on a real local cluster, against peer engines (`make bench-stream`).

RainStorm runs as ten real node processes (`cluster.local_cluster.LocalCluster`, membership
period 1 s, ping timeout 1 s, suspicion timeout 3 s, so the failure detector stays cheap),
with 3 tasks per stage, on traffic-signs files from `bench/gen_traffic_signs.py` (seed 42;
cached under bench/data/, which git ignores):

- App 1: `RainStorm grep signs_select SRC DEST 3 --op1-args Stop`
- App 2: `RainStorm signs_by_category count SRC DEST 3 --op1-args "Punched Telespar"`

Each size's file is created in HyDFS once, before any timing (its create time is reported
apart), and every run writes a fresh DEST. Per run: the job's seconds as the leader reports
them (the RainStorm end-to-end time), the wall time of the REPL call around it, the leader's
phases (from the "JOB <id> ..." lines of its log: plan = check the files and cut SRC into
partitions, launch = start the 9 task processes, stream = until every source block is acked
end to end, stop = final reports and stopping the tasks), the CPU seconds every process of
the cluster used (from /proc: each node's own time, and its reaped task processes' time),
and the output, fetched with `get` and compared with the oracle (bench/reference_apps.py):
the App 1 multiset exactly, and for App 2 the rows `Category,1` .. `Category,N` each exactly
once.

Peers (bench/peers.py), on the same file in the same run, interleaved with RainStorm's runs:
the single-process Python loop with the oracle's per-line functions (the no-distribution
bound; always), and, when the peers venv exists, Bytewax (1 worker; 2 processes) and PySpark
Structured Streaming (local[2], availableNow). Their time is the wall time of the whole
command (interpreter and JVM start-up included), and every output is checked too. Set the
venv up once with

    python3 -m venv /tmp/rainstorm-peers && /tmp/rainstorm-peers/bin/pip install bytewax==0.21.1 pyspark==4.3.0

(or `make bench-peers-venv`); without it the bench runs the loop only and says so.

Recovery: App 2 on 100k lines with `--rate 20000` (so the job runs about 5 s) on a fresh
cluster per run (after one small warm-up job, as for the throughput runs): once without a
failure, then with a kill -9, 1.5 s after the call, of two workers that run no source task
(where the leader puts tasks is
`stream.scheduler.assign(workers_for(vms, "01"), 3, source_hosts=<replicas of SRC>)`; the
nodes' logs confirm which tasks died): the first two such workers, and (full run) two of the
other mix of OP1 and OP2 workers. From the leader's output lines and the nodes' logs: kill ->
FAIL at the leader, -> "task X moves" (reassignment), -> replacement tasks ready, the longest
stretch without output after the kill (its end is when output resumed), -> the first progress
line (they come once a second) with more output than the one before, and when the output
count caught up with the failure-free run's; the output must still be exact.

Shared machine: before each run the bench waits (at most 30 s, 300 s in all) until processes
that are not its own use under 10 % of the machine, and it records how much they used during
each run ("others' CPU"), since another user's job slows every figure.

    python bench/stream_bench.py [--sizes 10k,100k,1m] [--reps 3] [--quick]
                                 [--parts throughput,recovery] [--peers auto|none]

Output: markdown tables on stdout and in `--out`.md, raw numbers in `--out`.json (default
bench/results/stream; `--quick`, which runs 10k and 100k once, writes nothing unless `--out`
is given). Scratch data (the cluster's directories) lives in a temporary directory removed
at the end (`--keep` keeps it).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import peers, reference_apps  # noqa: E402
from bench.report import write_report  # noqa: E402
from bench import gen_traffic_signs  # noqa: E402
from cluster.local_cluster import LocalCluster  # noqa: E402
from hydfs.ring import Ring  # noqa: E402
from stream.scheduler import STAGE_NAMES, assign, workers_for  # noqa: E402

RING_BITS = 11          # LocalCluster's default [hydfs] ring_bits and replicas
REPLICAS = 3
MEMBERSHIP = {"protocol_period": 1.0, "ping_timeout": 1.0, "suspicion": "on",
              "suspicion_timeout": 3}
TASKS = 3
APPS = {1: ("grep", "signs_select", "Stop"),
        2: ("signs_by_category", "count", "Punched Telespar")}
DATA = REPO / "bench" / "data"
DEFAULT_OUT = REPO / "bench" / "results" / "stream"
LEADER = "01"
CLK_TCK = peers.CLK_TCK
PROGRESS = re.compile(r"^\[\s*([\d.]+)s\] read (\d+) lines .*\| \S+ out (\d+) \| \S+ out (\d+)"
                      r" \| sources done (\d+)/(\d+)")
MOVE = re.compile(r"^task (\S+) moves from vm(\d+) to vm(\d+)")
JOB_LINE = re.compile(r"^job (\w+): ")
APP2_ROW = re.compile(r"^[^\[][^,]*,\d+$")       # an output row the leader prints: Category,N
SIZE_NAMES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000, "10m": 10_000_000}


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    text = text.strip().lower()
    return SIZE_NAMES[text] if text in SIZE_NAMES else int(text.replace("_", ""))


def size_label(n: int) -> str:
    for name, value in SIZE_NAMES.items():
        if value == n:
            return name.upper() if name.endswith("m") else name
    return str(n)


def code_version() -> str:
    """The git commit under test, "+changes" if stream/, hydfs/ or cluster/ differ from it."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        dirty = git("status", "--porcelain", "--", "stream", "hydfs", "cluster")
        return git("rev-parse", "--short", "HEAD") + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# -- data and the oracle ----------------------------------------------------------------------

def data_file(n: int) -> tuple[Path, float]:
    """bench/data/ts-N-GEN.csv, made once (atomically) by the generator whose source hashes
    to GEN, so an edited generator never leaves a stale file; (path, seconds generating)."""
    DATA.mkdir(parents=True, exist_ok=True)
    gen = hashlib.sha1(Path(gen_traffic_signs.__file__).read_bytes()).hexdigest()[:8]
    path = DATA / f"ts-{n}-{gen}.csv"
    if path.exists():
        return path, 0.0
    for old in DATA.glob(f"ts-{n}-*.csv"):      # made by an older generator
        old.unlink()
    start = time.perf_counter()
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    gen_traffic_signs.write_csv(n, tmp)
    tmp.rename(path)
    return path, time.perf_counter() - start


def spark_dir(path: Path) -> Path:
    """A directory holding only `path` (Spark's file source reads directories)."""
    d = DATA / f"spark-{path.stem}"
    for old in DATA.glob(f"spark-{path.stem.rsplit('-', 1)[0]}-*"):
        if old != d:
            shutil.rmtree(old, ignore_errors=True)
    d.mkdir(exist_ok=True)
    link = d / "ts.csv"
    if not link.exists() or not os.path.samefile(link, path):
        link.unlink(missing_ok=True)
        os.link(path, link)
    return d


class Oracle:
    """Expected outputs per (file, app), computed once."""

    def __init__(self):
        self._rows, self._counts = {}, {}

    def rows(self, path: Path, app: int) -> Counter:
        if (path, app) not in self._rows:
            self._rows[path, app] = reference_apps.expected_rows(app, str(path), APPS[app][2])
        return self._rows[path, app]

    def counts(self, path: Path) -> dict:
        if path not in self._counts:
            with open(path, newline="", encoding="utf-8") as f:
                self._counts[path] = reference_apps.app2_counts(f, APPS[2][2])
        return self._counts[path]


# -- the cluster, and what its processes cost --------------------------------------------------

@contextmanager
def running_cluster(root: Path, attempts: int = 3):
    """A started ten-node cluster; stopped, and its data removed, on exit. A start that
    fails (LocalCluster's free ports can be taken by another process before the node binds
    them, on a busy machine) is retried on new ports."""
    for attempt in range(1, attempts + 1):
        cluster = LocalCluster(root, 10, membership=MEMBERSHIP)
        try:
            cluster.start_all()
            break
        except AssertionError as exc:
            cluster.close()
            shutil.rmtree(root, ignore_errors=True)
            if attempt == attempts:
                raise
            log(f"cluster start failed ({exc}); retrying on new ports")
    try:
        yield cluster
    finally:
        cluster.close()
        shutil.rmtree(root / "data", ignore_errors=True)


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
    children = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out = {}
    for vm, proc in cluster.procs.items():
        if proc.poll() is not None or proc.pid not in table:
            continue
        _, own, reaped = table[proc.pid]
        live, todo = 0.0, list(children.get(proc.pid, []))
        while todo:
            pid = todo.pop()
            live += table[pid][1] + table[pid][2]
            todo += children.get(pid, [])
        out[vm] = (own, reaped + live)
    return out


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


def placement(cluster: LocalCluster, job: str, vms=None) -> dict:
    """vm -> the task ids ([stage, index]) of `job` its node started, from the nodes' logs
    ("TASK <job>/[s, i] started on vmNN ...")."""
    where = {}
    for _, vm, msg in cluster.log_events(vms or cluster.vms, rf"^TASK {job}/\[\d+, \d+\] "
                                                              "started"):
        m = re.match(r"TASK \S+?/\[(\d+), (\d+)\]", msg)
        where.setdefault(vm, []).append([int(m.group(1)), int(m.group(2))])
    return where


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


def expected_schedule(vms: list, src: str) -> dict:
    """Where the leader will put a job's tasks with every node live: stream.scheduler's
    assign, sources first on the workers that hold a replica of SRC (when assign takes
    source_hosts, as it does since sources read their replica from local disk)."""
    workers = workers_for(vms, LEADER)
    if "source_hosts" in inspect.signature(assign).parameters:
        return assign(workers, TASKS, source_hosts=Ring(vms, RING_BITS).replicas(src, REPLICAS))
    return assign(workers, TASKS)


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


def idle_cpu(cluster: LocalCluster, seconds: float = 3.0) -> float:
    """Share of one core the idle cluster (all ten nodes) uses."""
    before = cluster_times(cluster)
    time.sleep(seconds)
    after = cluster_times(cluster)
    return sum(after[vm][0] - before[vm][0] for vm in after if vm in before) / seconds


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


# -- one RainStorm job -------------------------------------------------------------------------

class JobRun:
    """Runs one job through the leader's REPL, recording its output lines with their times."""

    def __init__(self, cluster: LocalCluster, app: int, src: str, dest: str, rate: float = 0):
        self.cluster, self.app, self.src, self.dest, self.rate = cluster, app, src, dest, rate
        self.lines: list[tuple[float, str]] = []      # (monotonic s, progress/output line)
        self.job = ""

    def _on_output(self, line: str) -> None:
        self.lines.append((time.monotonic(), line))
        m = JOB_LINE.match(line)
        if m and not self.job:
            self.job = m.group(1)

    def run(self) -> dict:
        op1, op2, arg = APPS[self.app]
        argv = ["RainStorm", op1, op2, self.src, self.dest, str(TASKS), "--op1-args", arg]
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


def rainstorm_run(cluster: LocalCluster, app: int, n: int, rep: int, src: str,
                  expected: Counter, gate: QuietGate) -> dict:
    job = JobRun(cluster, app, src, f"out_{size_label(n)}_app{app}_r{rep}")
    gate.wait(cluster)
    before = cluster_times(cluster)
    others = OthersMeter(cluster).start()
    doc = job.run()
    after = cluster_times(cluster)
    others = others.stop()
    settle_s = settle(cluster)
    ok, verdict = job.check(expected)
    rec = {"engine": "rainstorm", "app": app, "n": n, "rep": rep, "seconds": doc["seconds"],
           "wall_s": round(job.wall, 3), "ok": ok, "verdict": verdict, "job": job.job,
           "records_in": doc["records_in"], "records_out": doc["records_out"],
           "dropped": doc["dropped"], "failures_recovered": doc["failures_recovered"],
           "phases": job_phases(cluster, job.job, doc["seconds"]),
           "cpu": cpu_breakdown(before, after, placement(cluster, job.job)),
           "others_cpu": others, "settle_s": round(settle_s, 2)}
    log(f"rainstorm app{app} {size_label(n)} rep {rep}: {doc['seconds']:.2f} s "
        f"(call {job.wall:.2f} s), {verdict}")
    return rec


# -- the benchmark -------------------------------------------------------------------------------

class Bench:
    def __init__(self, args, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.oracle = Oracle()
        self.gate = QuietGate(args.quiet, 30.0, args.quiet_budget)
        self.peers, self.peer_notes = [], []
        if "throughput" in args.parts:
            if args.peers == "none":
                self.peers = [peers.PLAIN]
                self.peer_notes = ["Bytewax and PySpark not run (--peers none)"]
            else:
                self.peers, self.peer_notes = peers.available(args.peers_venv)
        for note in self.peer_notes:
            log(note)

    def part_throughput(self) -> dict:
        files, runs = [], []
        with running_cluster(self.workdir / "cluster") as cluster:
            idle = idle_cpu(cluster)
            log(f"cluster up; idle, its ten nodes use {idle:.1%} of a core")
            cold = self._first_job(cluster)
            for n in self.args.sizes:
                path, gen_s = data_file(n)
                src = f"TrafficSigns_{n}"
                create_s = timed(cluster.query, LEADER, "create", str(path), src, timeout=600)
                info = {"n": n, "bytes": path.stat().st_size, "generate_s": round(gen_s, 2),
                        "create_s": round(create_s, 3),
                        "expected_rows": {str(app): sum(self.oracle.rows(path, app).values())
                                          for app in APPS}}
                files.append(info)
                log(f"{size_label(n)}: {info['bytes']:,} bytes, created in HyDFS in "
                    f"{create_s:.2f} s")
                settle(cluster, timeout=10)
                for app in APPS:
                    expected = self.oracle.rows(path, app)
                    for rep in range(self.args.reps):
                        runs.append(rainstorm_run(cluster, app, n, rep, src, expected,
                                                  self.gate))
                        for peer in self.peers:
                            runs.append(self._peer_run(cluster, peer, app, n, rep, path))
        return {"idle_cluster_cpu": idle, "first_job": cold, "files": files, "runs": runs,
                "reps": self.args.reps,
                "peers": [p.name for p in self.peers], "peer_notes": self.peer_notes}

    def _first_job(self, cluster: LocalCluster) -> dict:
        """App 1 on 10k lines as the cluster's first job, not part of the tables: a node
        starts warm spare task processes when a job ends, so only the first job pays a
        Python start-up per task; every measured job runs in the same, warm, state."""
        path, _ = data_file(10_000)
        cluster.query(LEADER, "create", str(path), "warmup", timeout=600)
        settle(cluster, timeout=10)
        job = JobRun(cluster, 1, "warmup", "warmup_out")
        doc = job.run()
        ok, verdict = job.check(self.oracle.rows(path, 1))
        settle(cluster, timeout=10)
        log(f"first job (App 1, 10k lines, cold): {doc['seconds']:.2f} s, {verdict}")
        return {"seconds": doc["seconds"], "ok": ok, "verdict": verdict,
                "phases": job_phases(cluster, job.job, doc["seconds"])}

    def _peer_run(self, cluster, peer: peers.Peer, app: int, n: int, rep: int,
                  path: Path) -> dict:
        out = self.workdir / "peers" / f"{peer.name}-app{app}-{n}"
        in_dir = spark_dir(path) if peer.engine == "spark" else path.parent
        self.gate.wait(cluster)
        others = OthersMeter(cluster).start()
        r = peers.run_peer(peer, app, path, in_dir, out, APPS[app][2], self.args.peers_venv)
        r["others_cpu"] = others.stop(r.get("cpu_s", 0.0))
        ok, verdict = (False, f"exit status {r['rc']}: {r.get('error', '')[-300:]}") if r["rc"] \
            else peers.check_output(peer, app, out, self.oracle.rows(path, app),
                                    self.oracle.counts(path) if app == 2 else None)
        shutil.rmtree(out, ignore_errors=True)
        rec = {"engine": peer.name, "app": app, "n": n, "rep": rep,
               "seconds": round(r.pop("wall_s"), 3), "ok": ok, "verdict": verdict, **r}
        log(f"{peer.name} app{app} {size_label(n)} rep {rep}: {rec['seconds']:.2f} s, {verdict}")
        return rec

    # -- recovery -----------------------------------------------------------------------------

    def part_recovery(self) -> dict:
        n, rate = self.args.recovery_lines, self.args.rate
        path, _ = data_file(n)
        expected = self.oracle.rows(path, 2)
        src = f"TrafficSigns_{n}"
        schedule = expected_schedule([f"{i:02d}" for i in range(1, 11)], src)
        sources = {vm for t, vm in schedule.items() if t.stage == 0}
        non_source = [vm for vm in sorted(set(schedule.values())) if vm not in sources]
        by_stage = {s: [vm for t, vm in sorted(schedule.items()) if t.stage == s] for s in (1, 2)}
        stage_of = {vm: t.stage for t, vm in schedule.items()}
        first_two = non_source[:2]
        scenarios = [("none", []), ("first two workers without a source task", first_two)]
        if not self.args.quick:     # the other mix of OP1 / OP2 workers than first_two's
            op1s, op2s = by_stage[1], by_stage[2]
            if sorted(stage_of[vm] for vm in first_two) == [1, 1]:
                scenarios.append(("an OP1 and an OP2 (count) worker", [op1s[0], op2s[0]]))
            else:
                scenarios.append(("two OP1 workers", op1s[:2]))
        rows = []
        for i, (label, victims) in enumerate(scenarios):
            with running_cluster(self.workdir / f"recovery-{i}") as cluster:
                cluster.query(LEADER, "create", str(path), src, timeout=600)
                self._first_job(cluster)          # warm spares, as on a cluster in use
                rows.append(self._recovery_run(cluster, label, victims, src, rate, expected))
        baseline = rows[0]
        for row in rows[1:]:
            row.update(_catch_up(row, baseline))
            row["extra_s"] = round(row["seconds"] - baseline["seconds"], 3)
        return {"lines": n, "rate": rate, "kill_after_s": self.args.kill_after,
                "schedule": {str(t): vm for t, vm in sorted(schedule.items())}, "runs": rows}

    def _recovery_run(self, cluster, label: str, victims: list, src: str, rate: float,
                      expected: Counter) -> dict:
        job = JobRun(cluster, 2, src, f"recovery_out_{len(victims)}", rate)
        result, kill = {}, {}

        def call():
            try:
                result["doc"] = job.run()
            except Exception as exc:        # reported below
                result["error"] = exc
        thread = threading.Thread(target=call, daemon=True)
        self.gate.wait(cluster)
        others = OthersMeter(cluster).start()
        thread.start()
        if victims:
            # kill_after s into the call, and not before the tasks run (the first progress
            # line comes once they are all started), else the kill hits no task at all
            time.sleep(self.args.kill_after)
            deadline = time.monotonic() + 60
            while not job.progress() and thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            kill["mono"], kill["epoch"] = time.monotonic(), time.time()
            for vm in victims:
                cluster.procs[vm].kill()
            for vm in victims:
                cluster.procs[vm].wait(timeout=15)
            log(f"recovery: kill -9 of vm{' and vm'.join(victims)} "
                f"{kill['mono'] - job.started:.2f} s into the job")
        thread.join()
        others = others.stop()
        if "error" in result:
            raise RuntimeError(f"recovery job failed: {result['error']}")
        doc = result["doc"]
        ok, verdict = job.check(expected)
        if ok:          # the rows DEST holds (the summary's count is the tasks' reports)
            job.records_out = sum(expected.values())
        row = {"scenario": label, "victims": victims, "job": job.job, "ok": ok,
               "verdict": verdict, "seconds": doc["seconds"], "wall_s": round(job.wall, 3),
               "failures_recovered": doc["failures_recovered"],
               "records_out": job.records_out, "summary_records_out": doc["records_out"],
               "others_cpu": others,
               "progress": job.progress(),
               "moves": [line for _, line in job.lines if MOVE.match(line)]}
        if victims:
            row.update(self._recovery_times(cluster, job, victims, kill))
        log(f"recovery ({label}): {doc['seconds']:.2f} s, {verdict}")
        return row

    def _recovery_times(self, cluster, job: JobRun, victims: list, kill: dict) -> dict:
        k = kill["mono"]
        where = placement(cluster, job.job, victims)
        killed_tasks = [f"[{s}, {i}]" for vm in victims for s, i in where.get(vm, [])]
        fails = cluster.log_events([LEADER], rf"^FAIL ({'|'.join(victims)})@", kill["epoch"])
        moves = [at for at, line in job.lines if MOVE.match(line) and at >= k]
        ready = cluster.log_events([vm for vm in cluster.vms if vm not in victims],
                           rf"^TASK {job.job}/", kill["epoch"])
        end = job.started + job.wall
        progress = [(job.started + t, out) for t, _, out in job.progress()] + \
            [(end, job.records_out)]
        moved_at = moves[0] if moves else None
        # The brief's measure, from the progress lines (1 s apart): the first line after the
        # kill that shows no new output marks the stall; the next line with more output than
        # the line before it is "output increasing again" (the job's end if none is).
        after = [(at, out, prev) for (at, out), (_, prev) in zip(progress[1:], progress)
                 if at > k]
        stall = next((i for i, (_, out, prev) in enumerate(after) if out <= prev), None)
        more = next((at for at, out, prev in after[stall:] if out > prev), None) \
            if stall is not None else None
        # Finer (about 0.5 s, the tasks' report period): the longest gap after the kill
        # between output events, i.e. rows the leader prints and progress lines with more
        # output. The gap's end is when output resumed.
        events = sorted([at for at, line in job.lines if APP2_ROW.match(line)] +
                        [at for at, out, prev in after if out > prev])
        before = [at for at in events if at <= k]
        points = before[-1:] + [at for at in events if at > k] + [end]
        gap = max(zip(points, points[1:]), key=lambda ab: ab[1] - ab[0]) \
            if len(points) > 1 else (k, end)

        def since_kill(at):
            return round(at - k, 3) if at is not None else None
        return {"killed_at_s": round(k - job.started, 3), "killed_tasks": killed_tasks,
                "kill_to_fail_s": round(fails[0][0] - kill["epoch"], 3) if fails else None,
                "kill_to_move_s": since_kill(moved_at),
                "kill_to_ready_s": round(ready[-1][0] - kill["epoch"], 3) if ready else None,
                "kill_to_stall_s": since_kill(after[stall][0]) if stall is not None else None,
                "kill_to_more_output_s": since_kill(more),
                "more_output_is_job_end": more == end,
                "gap_from_s": since_kill(gap[0]), "gap_to_s": since_kill(gap[1]),
                "gap_until_job_end": gap[1] == end,
                "rate_kill_to_move": _rate(progress[:-1], k, moved_at) if moved_at else None}

    def close(self) -> None:
        pass


def _rate(progress: list, start: float, end: float):
    """Output rows per second between two instants (linear between progress points)."""
    def at(t):
        prev = (progress[0][0], 0)
        for point in progress:
            if point[0] >= t:
                (t0, o0), (t1, o1) = prev, point
                return o0 + (o1 - o0) * (t - t0) / (t1 - t0) if t1 > t0 else o1
            prev = point
        return progress[-1][1]
    return round((at(end) - at(start)) / (end - start)) if end > start and progress else None


def _catch_up(row: dict, baseline: dict) -> dict:
    """When (s after the kill) the output count first reached what the failure-free run had
    emitted by the same time into the job (linear between its progress points)."""
    base = [(t, out) for t, _, out in baseline["progress"]] + [(baseline["wall_s"],
                                                                baseline["records_out"])]

    def base_out(t):
        if t >= base[-1][0]:
            return base[-1][1]
        prev = (0.0, 0)
        for point in base:
            if point[0] >= t:
                (t0, o0), (t1, o1) = prev, point
                return o0 + (o1 - o0) * (t - t0) / (t1 - t0) if t1 > t0 else o1
            prev = point
        return base[-1][1]
    if "killed_at_s" not in row:
        return {}
    k = row["killed_at_s"]
    points = [(t, out) for t, _, out in row["progress"] if t > k] + \
        [(row["wall_s"], row["records_out"])]
    behind = next((i for i, (t, out) in enumerate(points) if out < base_out(t)), None)
    caught = k if behind is None else \
        next((t for t, out in points[behind:] if out >= base_out(t)), None)
    result = {"kill_to_caught_up_s": round(caught - k, 3) if caught is not None else None}
    if row.get("kill_to_move_s"):
        m = k + row["kill_to_move_s"]
        result["base_rate_kill_to_move"] = round((base_out(m) - base_out(k)) / (m - k))
    return result


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


# -- summaries and markdown -----------------------------------------------------------------------

def summarize(runs: list) -> dict:
    """(engine, app, n) -> min/median seconds, runs ok, and RainStorm's extras."""
    groups = {}
    for r in runs:
        groups.setdefault((r["engine"], r["app"], r["n"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        secs = [r["seconds"] for r in rs]
        s = {"runs": len(rs), "ok": sum(r["ok"] for r in rs), "min": min(secs),
             "median": statistics.median(secs),
             "others": statistics.median(r.get("others_cpu", 0) for r in rs),
             "cpu_s": statistics.median(r.get("cpu_s", 0) for r in rs)}
        if key[0] == "rainstorm":
            walls = [r["wall_s"] for r in rs]
            s.update(wall_min=min(walls), wall_median=statistics.median(walls),
                     records_out=rs[0]["records_out"])
            mid = sorted(rs, key=lambda r: r["seconds"])[(len(rs) - 1) // 2]
            s["phases"], s["cpu"] = mid["phases"], mid["cpu"]
        out[key] = s
    return out


def md_table(headers: list, rows: list) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}" if seconds > 0 else "-"


def render_throughput(r: dict, reps: int) -> str:
    summary = summarize(r["runs"])
    sizes = [f["n"] for f in r["files"]]
    out = []
    files = [[size_label(f["n"]), f"{f['bytes']:,}", f"{f['generate_s']:.1f}" if f["generate_s"]
              else "cached", f"{f['create_s']:.2f}", f"{f['expected_rows']['1']:,}",
              f"{f['expected_rows']['2']:,}"] for f in r["files"]]
    out.append("### Input files\n\n" + md_table(
        ["lines", "bytes", "generated in s", "HyDFS create s", "App 1 rows", "App 2 rows"],
        files))
    rows = []
    for app in APPS:
        prev = None
        for n in sizes:
            s = summary.get(("rainstorm", app, n))
            if not s:
                continue
            marginal = ""
            if prev is not None and s["min"] > prev[1]:
                marginal = f"{(n - prev[0]) / (s['min'] - prev[1]):,.0f}"
            prev = (n, s["min"])
            ph = s["phases"]
            rows.append([app, size_label(n), f"{s['ok']}/{s['runs']}", f"{s['min']:.2f}",
                         f"{s['median']:.2f}", f"{s['wall_median']:.2f}",
                         fmt_rate(n, s["median"]), marginal, f"{s['records_out']:,}",
                         " / ".join(f"{ph[k]:.2f}" for k in ("plan", "launch", "stream", "stop"))
                         if ph else "-", f"{s['others']:.0%}"])
    cold = r.get("first_job")
    first = "" if not cold else (
        f"The cluster's first job (App 1 on 10k lines, not in the table) took "
        f"{cold['seconds']:.2f} s (launch {cold['phases'].get('launch', 0):.2f} s; output "
        f"{cold['verdict']}): it starts every task process cold, while later jobs take warm "
        "spare task processes that the nodes start as a job ends.\n\n")
    out.append(f"### RainStorm end to end ({reps} runs per cell; 3 tasks per stage, 10 nodes)\n\n"
               + first +
               "\"job s\" is the leader's `seconds`; \"call s\" the REPL call around it. "
               "Verified = output equal to the oracle's (App 1 multiset; App 2 rows "
               "`Category,1..N` exactly once). Marginal = extra lines / extra min seconds vs "
               "the previous size (start-up cancelled out). Phases are those of the median "
               "run. \"others' CPU\": the median share of the machine that processes outside "
               "this benchmark used during the runs (it slows every figure).\n\n" + md_table(
                   ["app", "lines", "verified", "job s min", "job s median", "call s median",
                    "lines/s (median)", "marginal lines/s", "rows out",
                    "plan / launch / stream / stop s", "others' CPU"], rows))
    engines = [p for p in r["peers"]]
    rows = []
    for app in APPS:
        for name in engines:
            for n in sizes:
                s = summary.get((name, app, n))
                if s:
                    rows.append([app, name, size_label(n), f"{s['ok']}/{s['runs']}",
                                 f"{s['min']:.2f}", f"{s['median']:.2f}",
                                 fmt_rate(n, s["median"]), f"{s['cpu_s']:.2f}",
                                 f"{s['others']:.0%}"])
    notes = "".join(f"\n\n{note}." for note in r["peer_notes"])
    out.append("### Peers on the same files, same run\n\nWall time of the whole command "
               "(interpreter / JVM start-up included), every output checked (Spark App 2: "
               "final counts, since it emits per micro-batch). CPU s: all the engine's "
               "processes (the JVM included)." + notes + "\n\n" + md_table(
                   ["app", "engine", "lines", "verified", "wall s min", "wall s median",
                    "lines/s (median)", "CPU s (median)", "others' CPU"], rows))
    rows = []
    for app in APPS:
        for n in sizes:
            rs = summary.get(("rainstorm", app, n))
            if not rs:
                continue
            row = [app, size_label(n), f"{rs['median']:.2f}"]
            for name in engines:
                s = summary.get((name, app, n))
                row.append(f"{s['median']:.2f}" if s else "-")
            for name in engines:
                s = summary.get((name, app, n))
                row.append(f"{rs['median'] / s['median']:.1f}x" if s and s["median"] else "-")
            rows.append(row)
    out.append("### Ratios (medians): RainStorm time / peer time\n\n" + md_table(
        ["app", "lines", "RainStorm s"] + [f"{e} s" for e in engines] +
        [f"RS / {e}" for e in engines], rows))
    roles = ["leader node", "worker nodes", "source tasks", "op1 tasks", "op2 tasks"]
    for extra in ("mixed tasks", "spare tasks"):
        if any(s.get("cpu", {}).get(extra) for s in summary.values()):
            roles.append(extra)
    rows = []
    for app in APPS:
        for n in sizes:
            s = summary.get(("rainstorm", app, n))
            if not s:
                continue
            cpu = s["cpu"]
            rows.append([app, size_label(n), f"{s['median']:.2f}"] +
                        [f"{cpu.get(k, 0):.2f}" for k in roles] +
                        [f"{cpu['total']:.2f}",
                         f"{cpu['total'] / (s['median'] * (os.cpu_count() or 1)):.0%}"])
    out.append("### Where RainStorm's CPU goes (median run, CPU seconds)\n\n"
               "From /proc, from the call to its return: each node's own CPU time (its HyDFS, "
               "membership, and the task plumbing), and the CPU time of its task processes "
               "(the tasks it ran, and the warm spare task processes it starts as a job ends, "
               "as far as they got by then). "
               f"Idle, the ten nodes use {r['idle_cluster_cpu']:.1%} of one core.\n\n" +
               md_table(["app", "lines", "job s"] + [f"{k}" for k in roles] +
                        ["total", f"share of {os.cpu_count()} cores"], rows))
    return "\n\n".join(out)


def render_recovery(r: dict) -> str:
    def s(x, unit=" s"):
        return "-" if x is None else f"{x:.2f}{unit}"

    def gap(row):
        if row.get("gap_from_s") is None:
            return "-"
        return (f"{row['gap_from_s']:.2f} -> {row['gap_to_s']:.2f} s"
                + (" (job end)" if row.get("gap_until_job_end") else ""))
    rows = []
    for row in r["runs"]:
        victims = ", ".join(f"vm{v}" for v in row["victims"]) or "none"
        tasks = ", ".join(row.get("killed_tasks", [])) or "-"
        if row["victims"] and not row.get("killed_tasks"):
            tasks = "none (killed before its tasks started)"
        rows.append([row["scenario"], victims, tasks, row["verdict"].split(" rows")[0],
                     f"{row['seconds']:.2f}", s(row.get("extra_s")),
                     s(row.get("killed_at_s")), s(row.get("kill_to_fail_s")),
                     s(row.get("kill_to_move_s")), s(row.get("kill_to_ready_s")),
                     gap(row), s(row.get("kill_to_more_output_s")) +
                     (" (job end)" if row.get("more_output_is_job_end") else ""),
                     s(row.get("kill_to_caught_up_s")),
                     f"{row['base_rate_kill_to_move']:,} / {row['rate_kill_to_move']:,}"
                     if row.get("base_rate_kill_to_move") is not None
                     and row.get("rate_kill_to_move") is not None else "-",
                     f"{row['others_cpu']:.0%}"])
    return (f"App 2 on {r['lines']:,} lines at --rate {r['rate']:,.0f} lines/s, fresh cluster "
            f"per run, kill -9 {r['kill_after_s']} s after the call (or, if the job's tasks are "
            "not all started by then, once they are). Times are seconds after "
            "the kill. \"no output\": the longest gap after the kill between output events "
            "(rows the leader prints, from the tasks' reports every 0.5 s, and progress lines "
            "with more output): its end is when output resumed. \"output increasing again\": "
            "from the leader's progress lines (1 s apart), the first line after the stall "
            "with more output than the one before. \"caught up\": when the output count first "
            "reaches what the failure-free run had emitted by the same time into the job. "
            "Task ids are [stage, index] (stage 1 = OP1, 2 = OP2).\n\n" + md_table(
                ["failure", "killed", "tasks killed", "output", "job s", "extra s",
                 "killed at (s into job)", "-> FAIL at leader", "-> task moves",
                 "-> replacements ready", "no output", "-> output increasing again",
                 "-> caught up", "rows/s kill -> move: failure-free / this run",
                 "others' CPU"], rows))


def render(results: dict) -> str:
    meta = results["meta"]
    out = [f"# RainStorm stream benchmark\n\n{meta['date']}, code {meta['code']}, Python "
           f"{meta['python']}, {meta['cpus']} CPUs (load {meta['load_before']} before), "
           f"{'quick' if meta['quick'] else 'full'} run. 10 local nodes; membership period "
           f"{MEMBERSHIP['protocol_period']} s, ping timeout "
           f"{MEMBERSHIP['ping_timeout']} s, suspicion timeout "
           f"{MEMBERSHIP['suspicion_timeout']} s. App 1 = grep \"{APPS[1][2]}\" | "
           f"signs_select, App 2 = signs_by_category \"{APPS[2][2]}\" | count.\n"]
    def ran(part):
        run = results[part].get("run")
        if not run:
            return ""
        return (f"Run {run['date']}, code {run['code']}, {run['elapsed_s']:.0f} s (of which "
                f"{run['quiet_wait_s']:.0f} s waiting for other processes to quieten down).\n\n")
    if "throughput" in results:
        out.append("## Throughput\n\n" + ran("throughput") +
                   render_throughput(results["throughput"],
                                     results["throughput"].get("reps", meta["reps"])) + "\n")
    if "recovery" in results:
        out.append("## Recovery from kill -9 of two workers\n\n" + ran("recovery") +
                   render_recovery(results["recovery"]) + "\n")
    return "\n".join(out)


# -- command line ------------------------------------------------------------------------------

PARTS = ("throughput", "recovery")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10k,100k,1m", help="line counts (10k, 100k, 1m or numbers)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="10k and 100k lines, 1 run each")
    p.add_argument("--parts", default=",".join(PARTS), help=f"subset of {','.join(PARTS)}")
    p.add_argument("--peers", choices=("auto", "none"), default="auto",
                   help="auto: Bytewax and PySpark too if their venv exists (default)")
    p.add_argument("--peers-venv", type=Path, default=peers.DEFAULT_VENV)
    p.add_argument("--rate", type=float, default=20000, help="recovery job's lines/s")
    p.add_argument("--recovery-lines", type=parse_size, default=100_000)
    p.add_argument("--kill-after", type=float, default=1.5)
    p.add_argument("--quiet", type=float, default=0.10,
                   help="before each run, wait until other processes use less than this "
                        "share of the machine (default 0.10; 1 = never wait)")
    p.add_argument("--quiet-budget", type=float, default=300,
                   help="seconds of such waiting in all, at most 30 s per run (default 300)")
    p.add_argument("--out", type=Path, help="write OUT.md and OUT.json "
                   f"(default {DEFAULT_OUT.relative_to(REPO)}; none with --quick)")
    p.add_argument("--workdir", type=Path, help="scratch directory, kept afterwards")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (node logs)")
    args = p.parse_args(argv)
    args.sizes = [parse_size(x) for x in args.sizes.split(",") if x]
    if args.quick:
        args.sizes = [n for n in args.sizes if n <= 100_000] or [10_000, 100_000]
        args.reps = 1
    args.parts = [x for x in args.parts.split(",") if x]
    if set(args.parts) - set(PARTS):
        p.error(f"unknown parts {sorted(set(args.parts) - set(PARTS))}")
    if args.reps < 1:
        p.error("--reps must be at least 1")
    if args.out is None and not args.quick:
        args.out = DEFAULT_OUT
    return args


def merged_with_earlier(results: dict, path: Path) -> dict:
    """A run of some parts only keeps the other parts of the results file it updates."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return results
    kept = [p for p in PARTS if p not in results and p in earlier and "run" in earlier[p]]
    if kept:
        log(f"keeping the earlier results of {', '.join(kept)} in {path}")
    return dict(results, **{p: earlier[p] for p in kept})


def main(argv=None) -> int:
    args = parse_args(argv)
    own_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="stream-bench-")) if own_workdir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    results = {"meta": {"date": time.strftime("%Y-%m-%d %H:%M"), "code": code_version(),
                        "python": platform.python_version(), "cpus": os.cpu_count(),
                        "load_before": round(os.getloadavg()[0], 2), "quick": args.quick,
                        "sizes": args.sizes, "reps": args.reps, "membership": MEMBERSHIP,
                        "apps": {str(k): list(v) for k, v in APPS.items()}, "tasks": TASKS}}
    started = time.monotonic()
    bench = Bench(args, workdir)
    try:
        for part in (p for p in PARTS if p in args.parts):
            log(f"part {part}")
            part_started, waited = time.monotonic(), bench.gate.waited
            date = time.strftime("%Y-%m-%d %H:%M")
            results[part] = getattr(bench, f"part_{part}")()
            results[part]["run"] = {
                "date": date, "code": results["meta"]["code"],
                "elapsed_s": round(time.monotonic() - part_started, 1),
                "quiet_wait_s": round(bench.gate.waited - waited, 1)}
    finally:
        bench.close()
        results["meta"]["quiet_wait_s"] = round(bench.gate.waited, 1)
        if own_workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif args.keep or not own_workdir:
            log(f"scratch data and node logs kept in {workdir}")
    results["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
    if args.out and not args.quick and set(args.parts) != set(PARTS):
        results = merged_with_earlier(results, args.out.with_suffix(".json"))
    write_report(render(results), results, args.out, log)
    failed = [r for part in ("throughput", "recovery") if part in results
              for r in results[part]["runs"] if not r["ok"]]
    if failed:
        log(f"{len(failed)} runs gave a wrong output")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
