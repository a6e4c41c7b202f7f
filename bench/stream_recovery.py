"""The recovery part of the stream benchmark: App 2 at a fixed rate, with and without a
kill -9 of two workers, and the times of what follows the kill.

`expected_schedule` predicts where the leader puts the tasks (stream.scheduler's `assign`;
App 2's OP1 is a filter, so it runs in the source tasks, `[stream] chain`), so that the
victims are chosen by what they run: two OP2 workers, and a source (with its OP1) with an
OP2 worker. Each scenario gets a fresh cluster
and a warm-up job; the run's times come from the leader's output lines (JobRun.lines) and
the nodes' logs: kill -> FAIL at the leader -> "task X moves" -> replacement tasks started,
the longest stretch without output, the first progress line with more output, and
(`_catch_up`) when the output count reached the failure-free run's.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections import Counter
from pathlib import Path

from bench.harness import REPLICAS, RING_BITS, log, running_cluster
from bench.stream_job import APP2_ROW, MOVE, JobRun, first_job, placement
from bench.stream_measure import OthersMeter, QuietGate
from bench.stream_setup import LEADER, MEMBERSHIP, NODES, TASKS, Oracle, data_file
from hydfs.ring import Ring
from stream.scheduler import CHAINED_STAGES, assign, workers_for


def expected_schedule(vms: list, src: str) -> dict:
    """Where the leader will put a job's tasks with every node live: stream.scheduler's
    assign, sources first on the workers that hold a replica of SRC (when assign takes
    source_hosts, as it does since sources read their replica from local disk)."""
    workers = workers_for(vms, LEADER)
    params = inspect.signature(assign).parameters
    extra = {"stages": CHAINED_STAGES} if "stages" in params else {}
    if "source_hosts" in params:
        extra["source_hosts"] = Ring(vms, RING_BITS).replicas(src, REPLICAS)
    return assign(workers, TASKS, **extra)


class Recovery:
    """The recovery part, for the lines, rate and kill delay in `args` (see stream_bench)."""

    def __init__(self, args, workdir: Path, oracle: Oracle, gate: QuietGate):
        self.args, self.workdir, self.oracle, self.gate = args, workdir, oracle, gate

    def run(self) -> dict:
        n, rate = self.args.recovery_lines, self.args.rate
        path, _ = data_file(n)
        expected = self.oracle.rows(path, 2)
        src = f"TrafficSigns_{n}"
        schedule = expected_schedule([f"{i:02d}" for i in range(1, NODES + 1)], src)
        sources = {vm for t, vm in schedule.items() if t.stage == 0}
        non_source = [vm for vm in sorted(set(schedule.values())) if vm not in sources]
        op2s = [vm for t, vm in sorted(schedule.items()) if t.stage == 2]
        first_two = non_source[:2]
        scenarios = [("none", []), ("first two workers without a source task", first_two)]
        if not self.args.quick:     # a source, which runs OP1, and an OP2 (count) worker
            source = next((vm for t, vm in sorted(schedule.items()) if t.stage == 0
                           and vm not in op2s), None)
            if source is not None:       # (fewer workers than tasks: skipped)
                scenarios.append(("a source (with OP1) and an OP2 (count) worker",
                                  [source, op2s[0]]))
        rows = []
        for i, (label, victims) in enumerate(scenarios):
            with running_cluster(self.workdir / f"recovery-{i}", NODES, MEMBERSHIP,
                                 attempts=3) as cluster:
                cluster.query(LEADER, "create", str(path), src, timeout=600)
                first_job(cluster, self.oracle)       # warm spares, as on a cluster in use
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


def _output_at(points: list, t: float, origin: float) -> float:
    """The output count at time `t`, linear between (time, count) points that start from
    (origin, 0); the last count after them."""
    prev = (origin, 0)
    for point in points:
        if point[0] >= t:
            (t0, o0), (t1, o1) = prev, point
            return o0 + (o1 - o0) * (t - t0) / (t1 - t0) if t1 > t0 else o1
        prev = point
    return points[-1][1]


def _rate(progress: list, start: float, end: float):
    """Output rows per second between two instants (linear between progress points)."""
    if not (end > start and progress):
        return None
    origin = progress[0][0]
    return round((_output_at(progress, end, origin) - _output_at(progress, start, origin))
                 / (end - start))


def _catch_up(row: dict, baseline: dict) -> dict:
    """When (s after the kill) the output count first reached what the failure-free run had
    emitted by the same time into the job (linear between its progress points)."""
    base = [(t, out) for t, _, out in baseline["progress"]] + [(baseline["wall_s"],
                                                                baseline["records_out"])]

    def base_out(t):
        return _output_at(base, t, 0.0)
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
