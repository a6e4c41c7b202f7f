"""What RainStorm counts: per job, stage and task on the leader (from the tasks' reports),
and the task processes of each worker.

A task reports its committed counters (records in and out, dropped, operator errors: the
ones its log carries, so a replacement goes on from them), its unacknowledged backlog and
a histogram of its batch latency: the seconds from a batch being taken up (read by a source,
processed by an operator) until its commit is durable in the task's log and its output sent.
The histogram is the attempt's own; `LatencyTotals` adds each replaced attempt's last counts
to its successor's, so a task's histogram only grows.

An OP1 chained into the sources has its counters under stage "op1", as `job JOBID` shows
it (task_figures.py), and its backlog, restarts and latency under its source's.

The leader exports the jobs it drives and those that ended under it (an ended job's
per-task series for TASK_SERIES_AFTER_END seconds more). A task's counters are the figures
of its last reports, never lowered (a replacement that went back to its last commit redoes
what it lost, and the figures come back); a job's are the sums of its tasks', so the last
stage's records out, summed over its tasks, are the job's records out. A node that leads
again later starts its jobs' series afresh, as a restarted process would: Prometheus
takes a counter that fell for a reset.
"""

from __future__ import annotations

from cluster.metrics import TIME_BUCKETS, Counter, Gauge, Histogram, Registry, bucket_of
from stream.job_states import ENDED, STATES
from stream.scheduler import STAGE_NAMES
from stream.task_figures import shown_tasks

LABELS = ("job", "stage", "task")
TASK_SERIES_AFTER_END = 600.0
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
        self.counts[bucket_of(TIME_BUCKETS, seconds)] += 1
        self.sum += seconds

    def to_report(self) -> dict:
        return {"latency": list(self.counts), "latency_sum": round(self.sum, 6)}


class LatencyTotals:
    """A task's histogram over all its attempts, from their reports (on the leader)."""

    def __init__(self):
        # task -> (epoch of its latest attempt, its (counts, sum), the earlier attempts'),
        # replaced by one assignment, so a scrape on another thread sees one or the other.
        self._tasks: dict = {}

    def update(self, task, epoch: int, counts, total) -> None:
        if not isinstance(counts, list) or len(counts) != len(TIME_BUCKETS) + 1:
            return
        now = ([int(n) for n in counts], float(total or 0))
        held = self._tasks.get(task)
        if held is None:
            self._tasks[task] = (epoch, now, ([0] * len(counts), 0.0))
        elif epoch > held[0]:            # a new attempt: the last one's figures are final
            self._tasks[task] = (epoch, now, _added(held[2], held[1]))
        elif epoch == held[0] and sum(now[0]) >= sum(held[1][0]):
            self._tasks[task] = (epoch, now, held[2])
        # else: a report older than one already counted

    def of(self, task) -> tuple[list, float] | None:
        held = self._tasks.get(task)
        return None if held is None else _added(held[2], held[1])


def _added(a: tuple, b: tuple) -> tuple[list, float]:
    return [x + y for x, y in zip(a[0], b[0])], a[1] + b[1]


def job_metrics(jobs, now: float) -> list:
    """The metrics of `jobs` (Job objects: job.py), filled at monotonic time `now`."""
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
    counted = dict.fromkeys(STATES, 0)
    for job in jobs:
        counted[job.state] = counted.get(job.state, 0) + 1
        if job.core is None:             # still being set up, or failed while it was
            continue
        recovered.set_total(job.core.failures_recovered, job=job.id)
        sums = {"in": 0, "out": 0}
        show_tasks = job.state not in ENDED or job.seconds is None or \
            now - (job.started + job.seconds) < TASK_SERIES_AFTER_END
        for task, runner, stats in shown_tasks(job.core, job.templates):
            peaks = {key: job.peak((task, key), stats[key]) for key, _, _ in _TASK_COUNTERS}
            sums["in"] += peaks["in"] if task.stage == 0 else 0
            sums["out"] += peaks["out"] if task.stage == len(STAGE_NAMES) - 1 else 0
            if not show_tasks:
                continue
            labels = {"job": job.id, "stage": STAGE_NAMES[task.stage], "task": task.index}
            for key, _, _ in _TASK_COUNTERS:
                tasks[key].set_total(peaks[key], **labels)
            if task != runner:       # an OP1 chained into its source: the source's process
                continue
            doc = job.extras.get(task, {})
            unacked.set(doc.get("unacked", 0), **labels)
            if task.stage == 0:
                in_flight.set(doc.get("in_flight", 0), **labels)
            restarts.set_total(job.core.tasks[task].replacements, **labels)
            histogram = job.latency.of(task)
            if histogram is not None:
                latency.set_counts(histogram[0], histogram[1], **labels)
        job_in.set_total(sums["in"], job=job.id)
        job_out.set_total(sums["out"], job=job.id)
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
