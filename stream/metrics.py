"""What RainStorm counts: per job, stage and task on the leader (from the tasks' reports),
and the task processes of each worker.

A task reports its committed counters (records in and out, dropped, operator errors: the
ones its log carries, so a replacement goes on from them), its unacknowledged backlog and
a histogram of its batch latency: the seconds from a batch being taken up (read by a source,
processed by an operator) until its commit is durable in the task's log and its output sent.
The histogram is the attempt's own; `LatencyTotals` adds each replaced attempt's last counts
to its successor's, so a task's histogram only grows.

The leader exports the jobs it drives and those that ended under it; its gauges and
counters for a job are the figures of its last reports, never lowered (a replacement that
went back to its last commit redoes what it lost, and the figures come back). The last
stage's records out, summed over its tasks, are the job's records out.
"""

from __future__ import annotations

from cluster.metrics import TIME_BUCKETS, Counter, Gauge, Histogram, Registry
from stream.scheduler import STAGE_NAMES

LABELS = ("job", "stage", "task")
_TASK_COUNTERS = (("in", "records_in", "records the task took in"),
                  ("out", "records_out", "records the task put out"),
                  ("dropped", "dropped", "records its operator dropped (filtered out)"),
                  ("errors", "operator_errors", "records its operator failed on"))


class BatchLatency:
    """One attempt's batch latency histogram (in its task process)."""

    def __init__(self):
        self.counts = [0] * (len(TIME_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(TIME_BUCKETS):
            if seconds <= bound:
                break
        else:
            i = len(TIME_BUCKETS)
        self.counts[i] += 1
        self.sum += seconds

    def to_report(self) -> dict:
        return {"latency": list(self.counts), "latency_sum": round(self.sum, 6)}


class LatencyTotals:
    """A task's histogram over all its attempts, from their reports (on the leader)."""

    def __init__(self):
        self._base: dict = {}       # task -> (counts, sum) of its replaced attempts
        self._last: dict = {}       # task -> (epoch, counts, sum) of its latest report

    def update(self, task, epoch: int, counts, total) -> None:
        if not isinstance(counts, list) or len(counts) != len(TIME_BUCKETS) + 1:
            return
        last = self._last.get(task)
        if last is not None and last[0] != epoch:
            base = self._base.get(task, ([0] * len(counts), 0.0))
            self._base[task] = ([a + b for a, b in zip(base[0], last[1])], base[1] + last[2])
        if last is None or last[0] != epoch or sum(counts) >= sum(last[1]):
            self._last[task] = (epoch, [int(n) for n in counts], float(total or 0))

    def of(self, task) -> tuple[list, float] | None:
        last = self._last.get(task)
        if last is None:
            return None
        base = self._base.get(task, ([0] * len(last[1]), 0.0))
        return [a + b for a, b in zip(base[0], last[1])], base[1] + last[2]


def job_metrics(jobs) -> list:
    """The metrics of `jobs` (Job objects: job.py), filled now."""
    state = Gauge("rainstorm_stream_jobs", "jobs this leader holds, by state", ("state",))
    job_in = Counter("rainstorm_stream_job_records_in_total", "lines a job's sources read",
                     ("job",))
    job_out = Counter("rainstorm_stream_job_records_out_total",
                      "rows a job appended to its DEST", ("job",))
    recovered = Counter("rainstorm_stream_job_failures_recovered_total",
                        "task failures a job recovered from", ("job",))
    tasks = {key: Counter(f"rainstorm_stream_task_{name}_total", text, LABELS)
             for key, name, text in _TASK_COUNTERS}
    unacked = Gauge("rainstorm_stream_task_unacked_batches",
                    "batches the task sent that the next stage has not acknowledged", LABELS)
    in_flight = Gauge("rainstorm_stream_task_unacked_bytes",
                      "bytes a source read that are not yet safe downstream", LABELS)
    restarts = Counter("rainstorm_stream_task_restarts_total",
                       "attempts started to replace an earlier one", LABELS)
    latency = Histogram("rainstorm_stream_task_batch_seconds",
                        "seconds from a batch taken up to its commit durable and sent", LABELS)
    counted: dict = {}
    for job in jobs:
        counted[job.state] = counted.get(job.state, 0) + 1
        totals = job.core.totals()
        job_in.set_total(job.peak("in", totals["in"]), job=job.id)
        job_out.set_total(job.peak("out", totals["out"]), job=job.id)
        recovered.set_total(job.core.failures_recovered, job=job.id)
        for task in sorted(job.core.tasks):
            doc = job.extras.get(task, {})
            labels = {"job": job.id, "stage": STAGE_NAMES[task.stage], "task": task.index}
            stats = job.core.tasks[task].stats
            for key, _, _ in _TASK_COUNTERS:
                tasks[key].set_total(job.peak((task, key), stats.get(key, 0)), **labels)
            unacked.set(doc.get("unacked", 0), **labels)
            if task.stage == 0:
                in_flight.set(doc.get("in_flight", 0), **labels)
            restarts.set_total(job.core.tasks[task].replacements, **labels)
            histogram = job.latency.of(task)
            if histogram is not None:
                latency.set_counts(histogram[0], histogram[1], **labels)
    for name in sorted(counted):
        state.set(counted[name], state=name)
    return [state, job_in, job_out, recovered, *tasks.values(), unacked, in_flight,
            restarts, latency]


def worker_metrics(registry: Registry, running) -> Counter:
    """The worker's: task processes running now (`running()`), and started (returned)."""
    def collect():
        gauge = Gauge("rainstorm_stream_task_processes", "task processes running on this node")
        gauge.set(running())
        return [gauge]
    registry.collect(collect)
    return registry.counter("rainstorm_stream_task_starts_total",
                            "task attempts this node started")
