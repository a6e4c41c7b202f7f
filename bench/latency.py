"""End-to-end latency of following RainStorm jobs under a steady stream of appends
(`make bench-latency`).

Setup: a local 10-node cluster (`bench.harness.running_cluster`, the stream bench's
membership settings), a small traffic-signs source file in HyDFS (the header and 1,000
records of `bench/gen_traffic_signs.py`, seed 42), and on that SAME source two following
jobs, both `--follow --detach`, 3 tasks per stage:

- App 1: `RainStorm grep signs_select SRC app1_out 3 --op1-args "No Outlet" --follow --detach`
- App 2: `RainStorm signs_by_category count SRC app2_out 3 --op1-args "Punched Telespar" ...`

The client. One appender thread holds ONE persistent ctl connection to a node (`--client`,
default vm02; the REPL's `append LOCAL SRC`, many requests on one TCP connection) and appends
a batch every `--interval` (0.1 s): rate x interval lines, cut from a pool of generated
records (seed 43) whose OBJECTID is replaced by a counter, so every appended line has a
unique OBJECTID. A batch without a "No Outlet" record gets one (its last line is swapped
for one), so every batch has an App 1 row. Batches are due on a fixed schedule; a late
append is sent at once, and none is sent after the rate's `--seconds`: the achieved rate
(lines appended / seconds) says whether the appender kept up. Rates: `--rates` (default
1000,10000,50000 lines/s), after an unmeasured `--warmup` at the first rate.

Latency of a batch = when its rows are first seen in DEST - when its append RETURNED. Before
each append, the batch's markers are registered: App 1, its rows `OBJECTID,No Outlet`
(all of them must be seen); App 2, for each Category the batch holds Punched Telespar
records of, the row `Category,N` where N is that Category's count over every line up to and
including this batch (the count aggregate emits `Category,1..N`, so that row appears when
the N-th record is counted; all of the batch's categories must be seen). A watcher thread
tails both DEST files every `--poll` seconds (default 0.05 s: the measurement's resolution,
it adds poll/2 on average) with HyDFS byte-range gets (`hydfs.get` with offset) on one
persistent connection to DEST's first replica: each poll moves only the new bytes. A replica
appends pending appends in arrival order, so its bytes at an offset never change until a
merge; DEST's primary merges it every `merge_after_appends` appends (hydfs/merge.py), which
may reorder what was pending. So a reply of a new merge generation makes the tail read again
from the merged size of the generation before (`merged_size`: bytes a merge in place leaves
where they are), or from 0 if the base was rebuilt; rows seen already are not counted again.
Per rate and app: p50, p99 (nearest rank) and max over the measured batches, and the batches
never seen within `--drain` seconds after the rate's last append.

`--stages` also tails, the same way, the follower's task log (its "tail" records: the
batch of SRC's appends it took, logged before it reads them; the k-th append has seq k) and
the OP2 tasks' logs (their commit records carry the rows, logged before the DEST append),
which splits the latency into append -> the source took it -> OP2 committed it -> DEST
(stream/task_log.py describes the records). It polls 8 more files, so it is off by default.

Also per rate: sustained throughput (each job's `records_in`, from `job JOBID`, at the
first append and when the last append returned, over that window; and the lag, lines
appended but not yet read, at its end; tasks report their counts every 0.5 s, so both are
that coarse), CPU from /proc over the window in cores (node processes, their task
processes, this benchmark's own process; also once with both jobs idle), the share of the
machine other users' processes took ("others' CPU"; before each rate the run waits at most
30 s for it to drop below `--quiet`, as the stream bench does), and memory: the RSS of every
node process and all its descendants (task processes and warm spares), summed, at the start
of the rate, its largest (sampled every second) and at its end (after the drain). Memory
should be flat.

At the end both jobs are stopped (`stop JOBID`, which drains) and checked exactly-once:
`records_in` must equal the lines of SRC (initial + every append), and DEST (`get`) must
equal the oracle, `bench/reference_apps.py` over a local copy of every line of SRC.
Targets printed beside the figures: p50 <= 0.3 s and p99 <= 1 s at 10,000 lines/s.

    python bench/latency.py [--seconds 30] [--rates 1000,10000,50000] [--poll 0.05]
                            [--interval 0.1] [--warmup 3] [--client 02] [--stages] [--keep]

Output: markdown on stdout and in `--out`.md, raw numbers in `--out`.json (default
bench/results/latency; a run with other --seconds or --rates than the defaults, or with
--stages, writes nothing unless `--out` is given). Scratch data lives in a temporary
directory removed at the end (`--keep` keeps it, with the node logs). The meta records a
hash of stream/, hydfs/ and cluster/ at the start and the end: on a shared working tree,
the report warns when the code changed on disk while the nodes ran.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import reference_apps  # noqa: E402
from bench.gen_traffic_signs import iter_lines  # noqa: E402
from bench.harness import log, running_cluster  # noqa: E402
from bench.report import code_version, md_table, write_report  # noqa: E402
from bench.stream_measure import OthersMeter, QuietGate, cluster_times, own_cpu  # noqa: E402
from bench.stream_setup import LEADER, MEMBERSHIP, NODES  # noqa: E402
from cluster import ctl, wire  # noqa: E402
from cluster.connection import Connection  # noqa: E402
from cluster.local_cluster import LocalCluster, process_table, wait_until  # noqa: E402

APPS = {1: ("grep", "signs_select", "No Outlet"),
        2: ("signs_by_category", "count", "Punched Telespar")}
SRC, DESTS = "latency_src", {1: "latency_app1", 2: "latency_app2"}
TASKS = 3
INITIAL_LINES, POOL_LINES = 1000, 50_000
DEFAULT_RATES, DEFAULT_SECONDS = (1000, 10_000, 50_000), 30.0
TARGET_RATE, TARGET_P50, TARGET_P99 = 10_000, 0.3, 1.0
DEFAULT_OUT = REPO / "bench" / "results" / "latency"
MEASURED = ("stream", "hydfs", "cluster")
MAX_TAIL_READ = 64 << 20


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)),
                   help="lines per second, comma-separated (default 1000,10000,50000)")
    p.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="per rate")
    p.add_argument("--interval", type=float, default=0.1, help="seconds between appends")
    p.add_argument("--poll", type=float, default=0.05, help="seconds between DEST reads")
    p.add_argument("--warmup", type=float, default=3.0,
                   help="unmeasured seconds of appends at the first rate")
    p.add_argument("--drain", type=float, default=60.0,
                   help="seconds to wait after a rate for its last rows")
    p.add_argument("--client", default="02", help="the node the appender talks to")
    p.add_argument("--stages", action="store_true",
                   help="also tail the follower's and the OP2 tasks' logs: when each batch "
                        "was taken by the source and committed by OP2 (more polling load)")
    p.add_argument("--quiet", type=float, default=0.10,
                   help="before each rate, wait (at most 30 s) until other processes use "
                        "less than this share of the machine (default 0.10; 1 = never wait)")
    p.add_argument("--out", type=Path)
    p.add_argument("--keep", action="store_true", help="keep the temp dir (node logs)")
    args = p.parse_args(argv)
    args.rates = [int(float(x)) for x in args.rates.split(",") if x]
    args.gate = QuietGate(args.quiet, 30.0, 30.0 * len(args.rates))
    if not args.rates or min(args.rates) <= 0 or args.seconds <= 0 or args.interval <= 0:
        p.error("rates, --seconds and --interval must be positive")
    default = args.rates == list(DEFAULT_RATES) and args.seconds == DEFAULT_SECONDS \
        and not args.stages
    if args.out is None and default:
        args.out = DEFAULT_OUT
    return args


# -- the lines ------------------------------------------------------------------------------

class LinePool:
    """Generated records to append, each split around its OBJECTID (X and Y, the fields
    before it, are plain numbers), with what each App makes of it, computed once with the
    oracle's own functions; `batch` gives n lines with fresh OBJECTIDs."""

    def __init__(self, first_oid: int, seed: int = 43):
        self.entries = []               # (head, tail, App 1 Sign_Type or None, App 2 Category)
        for line in list(iter_lines(POOL_LINES, seed=seed))[1:]:
            x, y, _, rest = line.split(",", 3)
            self.entries.append((f"{x},{y},", "," + rest, *_what_apps_make(line)))
        self.app1 = [i for i, e in enumerate(self.entries) if e[2] is not None]
        self.next_oid, self.pos, self.app1_pos = first_oid, 0, 0

    def batch(self, n: int) -> tuple[str, list[str], Counter]:
        """(text, App 1 rows, App 2 Category -> Punched Telespar records) of n lines."""
        picks = [(self.pos + k) % len(self.entries) for k in range(n)]
        self.pos = (self.pos + n) % len(self.entries)
        if all(self.entries[i][2] is None for i in picks):
            picks[-1] = self.app1[self.app1_pos % len(self.app1)]
            self.app1_pos += 1
        lines, rows, cats = [], [], Counter()
        for i in picks:
            head, tail, sign_type, category = self.entries[i]
            oid, self.next_oid = self.next_oid, self.next_oid + 1
            lines.append(f"{head}{oid}{tail}\n")
            if sign_type is not None:
                rows.append(reference_apps.format_row(str(oid), sign_type))
            if category is not None:
                cats[category] += 1
        return "".join(lines), rows, cats


def _what_apps_make(line: str) -> tuple:
    """(App 1's Sign_Type or None, App 2's Category or None) of one line (the OBJECTID
    changes neither)."""
    app1 = reference_apps.app1_lines([line], APPS[1][2])
    app2 = reference_apps.app2_counts([line], APPS[2][2])
    sign_type = next(iter(app1)).split(",", 1)[1] if app1 else None
    return sign_type, next(iter(app2), None)


# -- markers: which rows make a batch visible ---------------------------------------------------

class Markers:
    """Per App, the rows each batch waits for, and when the batch became visible (its last
    awaited row seen). Registered before the batch's append is sent; thread-safe."""

    def __init__(self, initial_counts: dict):
        self.lock = threading.Lock()
        self.counts = Counter(initial_counts)          # App 2: Category -> count so far
        self.awaited = {1: {}, 2: {}}                  # row -> batch
        self.left = {1: {}, 2: {}}                     # batch -> rows not seen yet
        self.visible = {1: {}, 2: {}}                  # batch -> monotonic time

    def register(self, batch: int, app1_rows: list, app2_cats: Counter) -> None:
        with self.lock:
            self.counts.update(app2_cats)
            targets = {1: app1_rows, 2: [reference_apps.format_row(c, self.counts[c])
                                         for c in app2_cats]}
            for app, rows in targets.items():
                for row in rows:
                    self.awaited[app][row] = batch
                self.left[app][batch] = len(rows)
                if not rows:
                    self.visible[app][batch] = None

    def seen(self, app: int, rows: list, now: float) -> None:
        with self.lock:
            for row in rows:
                batch = self.awaited[app].pop(row, None)
                if batch is None:
                    continue
                self.left[app][batch] -= 1
                if not self.left[app][batch]:
                    self.visible[app][batch] = now

    def pending(self, batches) -> int:
        with self.lock:
            return sum(1 for app in (1, 2) for b in batches if self.left[app].get(b))


# -- reading DEST as it grows -------------------------------------------------------------------

class HydfsTail:
    """The new complete lines of a HyDFS file, read by byte range from one replica over
    one persistent connection (`hydfs.get` with offset: only the new bytes move)."""

    def __init__(self, cluster: LocalCluster, name: str):
        self.name = name
        self.vm = cluster.query(LEADER, "ls", name)["replicas"][0]["vm"]
        self.conn = Connection.open(cluster.address(self.vm), cluster.key, 10)
        self.offset, self.partial = 0, b""
        self.layout = None      # (merge generation, base file, pending log, merged size) read

    def poll(self) -> list[str]:
        self.conn.send({"t": "hydfs.get", "name": self.name, "offset": self.offset,
                        "length": MAX_TAIL_READ})
        reply = self.conn.recv()
        if reply.get("t") != "hydfs.data":
            raise RuntimeError(f"reading {self.name} from vm{self.vm}: {reply}")
        data = b"".join(self.conn.recv_bulk_chunks(wire.bulk_length(reply)))
        # version: [file id, merge generation, base file, pending log, ...] (replica_state.py)
        gen, base, log = reply["version"][1:4]
        before, self.layout = self.layout, (gen, base, log, reply["merged_size"])
        if before is not None and (gen, base, log) != before[:3]:   # merged or fenced since
            back = before[3] if base == before[1] else 0    # in place: the old base stays put
            if self.offset > back:              # what was pending may have moved: again
                self.offset, self.partial = back, b""
                return self.poll()
        elif reply["size"] < self.offset:
            self.offset, self.partial = 0, b""
            return self.poll()
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        return [line.decode() for line in lines if line]

    def close(self) -> None:
        self.conn.close()


class Watcher(threading.Thread):
    """Polls its tails every `poll` seconds: (what, app, tail) with `what` "dest" (rows of
    DEST, to `markers`), and with --stages "commit" (an OP2 task's log: the rows of its
    commits, to `commits`) or "source" (the follower's log: the batches it took)."""

    def __init__(self, tails: list, markers: Markers, poll: float,
                 commits: Markers | None = None):
        super().__init__(daemon=True, name="dest-watcher")
        self.tails, self.markers, self.commits, self.poll = tails, markers, commits, poll
        self.taken = {1: {}, 2: {}}          # app -> batch -> when the follower logged it
        self.stopped = threading.Event()
        self.polls, self.error = 0, None

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.poll):
                for what, app, tail in self.tails:
                    self._saw(what, app, tail.poll(), time.monotonic())
                self.polls += 1
        except Exception as exc:        # reported in the results, the run goes on
            self.error = repr(exc)
            log(f"DEST watcher stopped: {exc!r}")

    def _saw(self, what: str, app: int, lines: list, now: float) -> None:
        if what == "dest":
            self.markers.seen(app, lines, now)
        elif what == "commit":
            self.commits.seen(app, commit_rows(lines), now)
        else:
            for batch in taken_batches(lines):
                self.taken[app].setdefault(batch, now)

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)


def commit_rows(lines: list) -> list:
    """The DEST rows of a final task's log records (stream/task_log.py: "out" by block,
    "dest" -> [keys, values])."""
    rows = []
    for line in lines:
        for outs in json.loads(line).get("out", {}).values():
            keys, values = outs.get("dest", ([], []))
            rows += [reference_apps.format_row(k, v) for k, v in zip(keys, values)]
    return rows


def taken_batches(lines: list) -> list:
    """The batches a following source's log records took ("tail": the IdSet of SRC's
    appends, {client: [[lo, hi]]}; the appender's k-th append, batch k - 1, has seq k)."""
    out = []
    for line in lines:
        for spans in json.loads(line).get("tail", {}).values():
            for lo, hi in spans:
                out += range(lo - 1, hi)
    return out


# -- the appender -----------------------------------------------------------------------------

class Appender:
    """Appends batches to SRC through one node over one persistent ctl connection; keeps
    a local copy of every line (the oracle's input) and one record per batch."""

    def __init__(self, cluster: LocalCluster, vm: str, pool: LinePool, markers: list,
                 all_lines: Path):
        self.cluster, self.pool, self.markers = cluster, pool, markers
        self.conn = Connection.open(cluster.address(vm), cluster.key, 10)
        self.copy = open(all_lines, "a", encoding="utf-8", newline="")
        self.paths = [cluster.root / f"batch{k}.csv" for k in (0, 1)]
        self.batches: list[dict] = []
        self.lines = 0

    def run(self, rate: int, seconds: float, interval: float, phase: str) -> list[dict]:
        """Batches at `rate` lines/s for `seconds`; their records."""
        size = max(1, round(rate * interval))
        start, mine = time.monotonic(), []
        for k in range(int(seconds / interval + 1e-9)):
            due = start + k * interval
            if time.monotonic() >= start + seconds:
                break                                  # late: no catching up past the end
            time.sleep(max(0.0, due - time.monotonic()))
            mine.append(self._one(len(self.batches), size, due, phase, rate))
        return mine

    def _one(self, batch: int, size: int, due: float, phase: str, rate: int) -> dict:
        text, rows, cats = self.pool.batch(size)
        path = self.paths[batch % 2]
        path.write_text(text, encoding="utf-8")
        self.copy.write(text)
        for markers in self.markers:
            markers.register(batch, rows, cats)
        sent = time.monotonic()
        reply = ctl.converse(self.conn, ["append", str(path), SRC], str(self.cluster.root),
                             True, None, timeout=60)
        returned = time.monotonic()
        if not reply.get("ok"):
            raise RuntimeError(f"append {batch} failed: {reply.get('error', reply)}")
        self.lines += size
        rec = {"batch": batch, "phase": phase, "rate": rate, "lines": size, "due": due,
               "sent": sent, "returned": returned, "app1_rows": len(rows)}
        self.batches.append(rec)
        return rec

    def close(self) -> None:
        self.conn.close()
        self.copy.close()


# -- what the cluster does ----------------------------------------------------------------------

def tree_rss(cluster: LocalCluster) -> dict:
    """RSS in MB of the node processes and of all their descendants (task processes),
    summed, from /proc: {"nodes": MB, "tasks": MB, "total": MB}."""
    table = process_table()
    children = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    nodes = tasks = 0
    for proc in cluster.procs.values():
        if proc.poll() is not None or proc.pid not in table:
            continue
        nodes += table[proc.pid][1]
        todo = list(children.get(proc.pid, []))
        while todo:
            pid = todo.pop()
            tasks += table[pid][1]
            todo += children.get(pid, [])
    mb = 1 << 20
    return {"nodes": round(nodes / mb, 1), "tasks": round(tasks / mb, 1),
            "total": round((nodes + tasks) / mb, 1)}


class RssSampler(threading.Thread):
    """`tree_rss` totals every `every` seconds while a rate runs: (s since start, MB)."""

    def __init__(self, cluster: LocalCluster, every: float = 1.0):
        super().__init__(daemon=True, name="rss-sampler")
        self.cluster, self.every, self.samples = cluster, every, []
        self.stopped = threading.Event()
        self.start()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stopped.wait(self.every):
            self.samples.append((round(time.monotonic() - t0, 1),
                                 tree_rss(self.cluster)["total"]))

    def stop(self) -> list:
        self.stopped.set()
        self.join(5)
        return self.samples


def cluster_cpu(cluster: LocalCluster) -> tuple[float, float, float]:
    """CPU seconds used so far by the node processes, by their task processes, and by
    this benchmark's own process (appender, DEST watcher)."""
    times = cluster_times(cluster).values()
    return sum(t[0] for t in times), sum(t[1] for t in times), own_cpu()


def job_counts(cluster: LocalCluster, jobs: dict) -> dict:
    """app -> (records_in, records_out) as the leader reports them now."""
    out = {}
    for app, job in jobs.items():
        doc = cluster.query(LEADER, "job", job)
        out[app] = (doc["records_in"], doc["records_out"])
    return out


def placement(cluster: LocalCluster, jobs: dict) -> dict:
    """Where SRC, the DESTs and each job's tasks are (to read `cores_per_vm` by)."""
    def replicas(name):
        return [r["vm"] for r in cluster.query(LEADER, "ls", name)["replicas"]]
    return {"src": replicas(SRC), "dest": {app: replicas(DESTS[app]) for app in jobs},
            "tasks": {app: {t["task"]: t["vm"] for t in
                            cluster.query(LEADER, "job", job)["tasks"]}
                      for app, job in jobs.items()}}


def start_job(cluster: LocalCluster, app: int) -> str:
    op1, op2, arg = APPS[app]
    doc = cluster.query(LEADER, "RainStorm", op1, op2, SRC, DESTS[app], str(TASKS),
                        "--op1-args", arg, "--follow", "--detach", timeout=60)
    job = doc["job"]
    wait_until(lambda: cluster.query(LEADER, "job", job)["state"] == "running", 60,
               what=f"job {job} to run")
    return job


# -- figures ----------------------------------------------------------------------------------

def nearest_rank(values: list, q: float):
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def latency_stats(batches: list, markers: Markers, app: int) -> dict:
    lat = [markers.visible[app][b["batch"]] - b["returned"] for b in batches
           if markers.visible[app].get(b["batch"]) is not None]
    unseen = sum(1 for b in batches if markers.left[app].get(b["batch"]))
    figures = {f"p{int(q * 100)}": nearest_rank(lat, q) for q in (0.5, 0.99)}
    figures.update(max=max(lat) if lat else None, min=min(lat) if lat else None)
    return {"batches": len(lat), "unseen": unseen,
            **{k: round(v, 3) if v is not None else None for k, v in figures.items()}}


def stage_stats(batches: list, watcher: Watcher, app: int) -> dict:
    """p50 / p99 seconds from the append returning to: the follower logging the batch
    (it took it from SRC), the batch's last row in an OP2 commit record, DEST."""
    marks = {"source": watcher.taken[app], "commit": watcher.commits.visible[app],
             "dest": watcher.markers.visible[app]}
    out = {}
    for stage, seen in marks.items():
        lat = [seen[b["batch"]] - b["returned"] for b in batches
               if seen.get(b["batch"]) is not None]
        out[stage] = {"p50": _round(nearest_rank(lat, 0.5)),
                      "p99": _round(nearest_rank(lat, 0.99)), "batches": len(lat)}
    return out


def _round(v):
    return None if v is None else round(v, 3)


def appender_stats(batches: list, rate: int, seconds: float, interval: float) -> dict:
    lines = sum(b["lines"] for b in batches)
    took = [b["returned"] - b["sent"] for b in batches]
    late = [b["sent"] - b["due"] for b in batches]
    planned = int(seconds / interval + 1e-9)
    return {"target": rate, "lines": lines, "batches": len(batches),
            "planned_batches": planned, "achieved": round(lines / seconds),
            "kept_up": len(batches) == planned and lines / seconds >= 0.95 * rate,
            "append_p50_s": round(nearest_rank(took, 0.5), 4),
            "append_p99_s": round(nearest_rank(took, 0.99), 4),
            "late_p99_s": round(nearest_rank(late, 0.99), 4)}


# -- one rate -----------------------------------------------------------------------------------

def idle_cores(cluster: LocalCluster, seconds: float = 3.0) -> dict:
    """Cores used with both jobs running and nothing appended (the watcher polling)."""
    before, t0 = cluster_cpu(cluster), time.monotonic()
    time.sleep(seconds)
    after, t1 = cluster_cpu(cluster), time.monotonic()
    return {k: round((b - a) / (t1 - t0), 2)
            for k, a, b in zip(("nodes", "tasks", "bench"), before, after)}


def run_rate(cluster, jobs, appender, watcher, rate: int, args) -> dict:
    markers = watcher.markers
    args.gate.wait(cluster)
    rss_start, others = tree_rss(cluster), OthersMeter(cluster).start()
    sampler, per_vm0 = RssSampler(cluster), cluster_times(cluster)
    cpu0, counts0, t0 = cluster_cpu(cluster), job_counts(cluster, jobs), time.monotonic()
    batches = appender.run(rate, args.seconds, args.interval, "measured")
    t1 = time.monotonic()
    counts1, cpu1, per_vm1 = job_counts(cluster, jobs), cluster_cpu(cluster), \
        cluster_times(cluster)
    others = others.stop()
    ids = [b["batch"] for b in batches]
    drained = _drain(markers, ids, args.drain)
    rss_end, rss_series = tree_rss(cluster), sampler.stop()
    appended = sum(b["lines"] for b in batches)
    rec = {"rate": rate, "window_s": round(t1 - t0, 2), "drain_s": round(drained, 2),
           "appender": appender_stats(batches, rate, args.seconds, args.interval),
           "cores": {k: round((b - a) / (t1 - t0), 2) for k, a, b in
                     zip(("nodes", "tasks", "bench"), cpu0, cpu1)}, "others_cpu": others,
           "cores_per_vm": {vm: [round((b - a) / (t1 - t0), 2) for a, b in
                                 zip(per_vm0[vm], per_vm1[vm])] for vm in per_vm1},
           "rss_start_mb": rss_start, "rss_end_mb": rss_end,
           "rss_max_mb": max([rss_end["total"], *(mb for _, mb in rss_series)]),
           "rss_series": rss_series, "apps": {}}
    for app in jobs:
        read = counts1[app][0] - counts0[app][0]
        rec["apps"][app] = {"latency": latency_stats(batches, markers, app),
                            "read_lines_per_s": round(read / (t1 - t0)),
                            "lag_at_end": appended - read,
                            "rows_out": counts1[app][1] - counts0[app][1]}
        if watcher.commits is not None:
            rec["apps"][app]["stages"] = stage_stats(batches, watcher, app)
    rec["batches"] = batch_rows(batches, markers, t0)
    return rec


def batch_rows(batches: list, markers: Markers, t0: float) -> list:
    """Per batch, for the JSON: [s after the rate began it was sent, s late, s the append
    took, App 1 latency, App 2 latency] (None: not seen)."""
    def lat(app, b):
        seen = markers.visible[app].get(b["batch"])
        return None if seen is None else round(seen - b["returned"], 3)
    return [[round(b["sent"] - t0, 3), round(b["sent"] - b["due"], 3),
             round(b["returned"] - b["sent"], 4), lat(1, b), lat(2, b)] for b in batches]


def _drain(markers: Markers, ids: list, timeout: float) -> float:
    """Wait until every batch in `ids` is visible in both DESTs (or the timeout)."""
    start = time.monotonic()
    while markers.pending(ids) and time.monotonic() - start < timeout:
        time.sleep(0.05)
    return time.monotonic() - start


def log_rate(rec: dict) -> None:
    a = rec["appender"]
    parts = [f"rate {rec['rate']:,}/s: appended {a['achieved']:,}/s"
             + ("" if a["kept_up"] else " (APPENDER BEHIND)")]
    for app, r in rec["apps"].items():
        lat = r["latency"]
        parts.append(f"app{app} p50 {lat['p50']} p99 {lat['p99']} max {lat['max']} s, "
                     f"read {r['read_lines_per_s']:,}/s, {lat['unseen']} unseen")
    parts.append(f"RSS {rec['rss_start_mb']['total']} -> {rec['rss_end_mb']['total']} MB")
    log("; ".join(parts))


# -- the end: stop, exactly once ----------------------------------------------------------------

def stop_and_check(cluster: LocalCluster, jobs: dict, all_lines: Path) -> dict:
    with open(all_lines, encoding="utf-8") as f:
        src_lines = sum(1 for _ in f)
    out = {}
    for app, job in jobs.items():
        started = time.monotonic()
        doc = cluster.query(LEADER, "stop", job, timeout=600)
        stop_s = time.monotonic() - started
        local = cluster.root / f"{DESTS[app]}.out"
        cluster.query(LEADER, "get", DESTS[app], str(local), timeout=600)
        expected = reference_apps.expected_rows(app, str(all_lines), APPS[app][2])
        ok, verdict = reference_apps.verdict(expected, reference_apps.output_rows(str(local)))
        counted = doc["records_in"] == src_lines
        out[app] = {"job": job, "state": doc["state"], "stop_s": round(stop_s, 2),
                    "records_in": doc["records_in"], "src_lines": src_lines,
                    "records_out": doc["records_out"], "dropped": doc["dropped"],
                    "ok": ok and counted and doc["state"] == "stopped",
                    "verdict": verdict + ("" if counted else
                                          f"; records_in {doc['records_in']} != {src_lines}")}
        log(f"app{app} stopped in {stop_s:.2f} s: {'OK' if out[app]['ok'] else 'FAILED'} "
            f"({out[app]['verdict']})")
    return out


# -- the report -------------------------------------------------------------------------------

def _cores(c) -> str:
    return "-" if not c else f"{c['nodes']:.2f} / {c['tasks']:.2f} / {c['bench']:.2f}"


def _s(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def render(results: dict) -> str:
    meta = results["meta"]
    head = (f"# RainStorm following-job latency\n\n{meta['date']}, code {meta['code']}, Python "
            f"{meta['python']}, {meta['cpus']} CPUs (load {meta['load_before']} before). "
            f"{NODES} local nodes, {TASKS} tasks per stage; App 1 = grep \"No Outlet\" | "
            f"signs_select, App 2 = signs_by_category \"Punched Telespar\" | count, both "
            f"--follow on one source of {meta['initial_lines']:,} lines. One client appends "
            f"a batch every {meta['interval']} s for {meta['seconds']:g} s per rate (after "
            f"{meta['warmup']:g} s unmeasured); DEST read every {meta['poll']} s.\n\n"
            "Latency: from an append returning to the last of its rows appearing in DEST "
            "(App 1: its `OBJECTID,No Outlet` rows; App 2: `Category,N` with N the count after "
            "the batch, for each of its categories). Read lines/s: the job's records_in over "
            "the append window; lag: lines appended but not read when it ended. Cores: CPU "
            "of the node processes / their task processes / this benchmark's process (the "
            "appender and the DEST watcher) over the window; with both jobs running and "
            f"nothing appended: {_cores(meta.get('idle_cores'))}. RSS: node processes and "
            "their task processes, summed, at the rate's start, its largest (sampled every second) "
            "and at its end (after its drain). "
            "Others' CPU: the share of the machine other users' processes took"
            f" (the run waited {meta.get('quiet_wait_s', 0):g} s for them to quieten down).")
    rows = []
    for r in results["rates"]:
        a = r["appender"]
        for app, x in r["apps"].items():
            lat = x["latency"]
            rows.append([f"{r['rate']:,}", f"{a['achieved']:,}" + ("" if a["kept_up"] else
                         " (behind)"), app, lat["batches"], _s(lat["p50"]), _s(lat["p99"]),
                         _s(lat["max"]), lat["unseen"], f"{x['read_lines_per_s']:,}",
                         f"{x['lag_at_end']:,}", f"{a['append_p50_s'] * 1000:.1f}",
                         _cores(r["cores"]),
                         f"{r['rss_start_mb']['total']:.0f} / {r['rss_max_mb']:.0f} / "
                         f"{r['rss_end_mb']['total']:.0f}",
                         f"{r['others_cpu']:.0%}"])
    table = md_table(["rate lines/s", "appended lines/s", "app", "batches", "p50 s", "p99 s",
                      "max s", "unseen", "read lines/s", "lag at end", "append p50 ms",
                      "cores: nodes / tasks / bench", "RSS MB start / max / end",
                      "others' CPU"], rows)
    parts = [head, table, render_targets(results), render_stages(results),
             render_checks(results)]
    return "\n\n".join(p for p in parts if p) + "\n"


def render_stages(results: dict) -> str:
    rows = [[f"{r['rate']:,}", app] + [f"{_s(x['stages'][st]['p50'])} / "
                                       f"{_s(x['stages'][st]['p99'])}"
                                       for st in ("source", "commit", "dest")]
            for r in results["rates"] for app, x in r["apps"].items() if "stages" in x]
    if not rows:
        return ""
    return ("Where the time goes (--stages; p50 / p99 s after the append returned): the "
            "follower logs the batch it took from SRC (its task log), the batch's last row "
            "is in an OP2 commit record (OP2's log, written before the DEST append), the "
            "row is in DEST.\n\n" + md_table(["rate lines/s", "app", "source took it",
                                               "OP2 committed", "in DEST"], rows))


def render_targets(results: dict) -> str:
    lines = [f"Targets at {TARGET_RATE:,} lines/s: p50 <= {TARGET_P50} s, p99 <= "
             f"{TARGET_P99} s."]
    at = [r for r in results["rates"] if r["rate"] == TARGET_RATE]
    for r in at:
        for app, x in r["apps"].items():
            lat = x["latency"]
            met = (lat["p50"] is not None and lat["p50"] <= TARGET_P50 and
                   lat["p99"] <= TARGET_P99 and not lat["unseen"])
            lines.append(f"- App {app}: p50 {_s(lat['p50'])} s, p99 {_s(lat['p99'])} s: "
                         f"{'met' if met else 'NOT met'}")
    if not at:
        lines.append("- (no run at that rate)")
    return "\n".join(lines)


def render_checks(results: dict) -> str:
    lines = ["Exactly once, after `stop` (DEST against the oracle over every line of SRC):"]
    for app, c in results.get("checks", {}).items():
        lines.append(f"- App {app}: {'OK' if c['ok'] else 'FAILED'} ({c['verdict']}); "
                     f"records_in {c['records_in']:,} of {c['src_lines']:,} lines; stop "
                     f"took {c['stop_s']} s")
    meta = results["meta"]
    if meta.get("source_digest_end", meta.get("source_digest_start")) != \
            meta.get("source_digest_start"):
        lines.append("- WARNING: stream/, hydfs/ or cluster/ changed on disk during the run "
                     "(processes started after the change run other code)")
    if results["meta"].get("watcher_error"):
        lines.append(f"- the DEST watcher failed: {results['meta']['watcher_error']}")
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------

def make_tails(cluster: LocalCluster, jobs: dict, stages: bool) -> list:
    """What the watcher reads, in pipeline order (so that within one round of reads a
    later stage is never stamped before an earlier one): with `stages` each job's follower
    log (the last source task's) and its OP2 tasks' logs (stream/task_log.py names them);
    both DESTs."""
    tails = []
    if stages:
        tails += [("source", app, HydfsTail(cluster, f"rainstorm/{job}/source-{TASKS - 1}"
                                                      ".log")) for app, job in jobs.items()]
        tails += [("commit", app, HydfsTail(cluster, f"rainstorm/{job}/op2-{i}.log"))
                  for app, job in jobs.items() for i in range(TASKS)]
    return tails + [("dest", app, HydfsTail(cluster, DESTS[app])) for app in jobs]


def initial_source(root: Path) -> tuple[Path, dict]:
    """The initial SRC (header and INITIAL_LINES records) and its App 2 counts."""
    path = root / "all_lines.csv"
    lines = list(iter_lines(INITIAL_LINES, seed=42))
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path, reference_apps.app2_counts(lines, APPS[2][2])


def measure(cluster: LocalCluster, args, results: dict) -> None:
    all_lines, counts = initial_source(cluster.root)
    cluster.query(LEADER, "create", str(all_lines), SRC, timeout=60)
    jobs = {app: start_job(cluster, app) for app in APPS}
    wait_until(lambda: all(c[0] >= INITIAL_LINES + 1 for c in
                           job_counts(cluster, jobs).values()), 60, interval=0.2,
               what="both jobs to read the initial file")
    markers, commits = Markers(counts), Markers(counts) if args.stages else None
    tails = make_tails(cluster, jobs, args.stages)
    watcher = Watcher(tails, markers, args.poll, commits)
    watcher.start()
    appender = Appender(cluster, args.client, LinePool(INITIAL_LINES + 1),
                        [m for m in (markers, commits) if m is not None], all_lines)
    results["jobs"] = jobs
    results["placement"] = placement(cluster, jobs)
    try:
        results["meta"]["idle_cores"] = idle_cores(cluster)
        if args.warmup:
            warm = appender.run(args.rates[0], args.warmup, args.interval, "warmup")
            _drain(markers, [b["batch"] for b in warm], args.drain)
        for rate in args.rates:
            log(f"rate {rate:,} lines/s for {args.seconds:g} s")
            rec = run_rate(cluster, jobs, appender, watcher, rate, args)
            results["rates"].append(rec)
            log_rate(rec)
    finally:
        watcher.stop()
        appender.close()
        for _, _, tail in tails:
            tail.close()
    results["meta"]["watcher_error"] = watcher.error
    results["meta"]["watcher_polls"] = watcher.polls
    results["meta"]["lines_appended"] = appender.lines
    results["checks"] = stop_and_check(cluster, jobs, all_lines)
    results["rss_after_stop_mb"] = tree_rss(cluster)


def source_digest() -> str:
    """A hash of the measured packages' files as they are on disk now: on a shared working
    tree, a start and an end that differ mean the code changed while the nodes ran."""
    h = hashlib.sha1()
    for path in sorted(p for d in MEASURED for p in (REPO / d).rglob("*.py")):
        h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def main(argv=None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="latency-bench-"))
    results = {"meta": {"date": time.strftime("%Y-%m-%d %H:%M"), "code": code_version(MEASURED),
                        "python": platform.python_version(), "cpus": os.cpu_count(),
                        "load_before": round(os.getloadavg()[0], 2), "rates": args.rates,
                        "seconds": args.seconds, "interval": args.interval, "poll": args.poll,
                        "warmup": args.warmup, "client": args.client, "tasks": TASKS,
                        "initial_lines": INITIAL_LINES + 1, "membership": MEMBERSHIP,
                        "apps": {str(k): list(v) for k, v in APPS.items()}},
               "rates": []}
    results["meta"]["source_digest_start"] = source_digest()
    started = time.monotonic()
    try:
        with running_cluster(workdir / "cluster", NODES, MEMBERSHIP, attempts=3) as cluster:
            measure(cluster, args, results)
    finally:
        if args.keep:
            log(f"scratch data and node logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
    results["meta"]["quiet_wait_s"] = round(args.gate.waited, 1)
    results["meta"]["source_digest_end"] = source_digest()
    if results["meta"]["source_digest_end"] != results["meta"]["source_digest_start"]:
        log("WARNING: stream/, hydfs/ or cluster/ changed on disk during the run")
    write_report(render(results), results, args.out, log)
    ok = all(c["ok"] for c in results["checks"].values())
    print("exactly once: " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
