"""One job as its leader holds it (`Job`), and the documents that show it: the progress
line, the summary (`RainStorm`, `stop`), the `jobs` line and `job JOBID`'s task list.
Its states are in job_states.py.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from dataclasses import dataclass, field

from stream.job_core import JobCore
from stream.job_spec import JobSpec
from stream.job_states import ENDED, STARTING
from stream.metrics import LatencyTotals
from stream.task_figures import shown_tasks

HISTORY = 180                  # samples of a job's totals kept for the web page (one a second)


@dataclass
class Job:
    id: str
    spec: JobSpec
    epoch: int = 0                                    # the leader epoch that drives it
    core: JobCore | None = None
    templates: dict = field(default_factory=dict)     # TaskId -> TaskSpec (epoch to set)
    events: queue.Queue = field(default_factory=queue.Queue)
    started: float = field(default_factory=time.monotonic)
    created: float = field(default_factory=time.time)
    state: str = STARTING
    error: str = ""
    seconds: float | None = None                      # how long it ran, once it ended
    ended: threading.Event = field(default_factory=threading.Event)
    deposed: str = ""                                 # why this leader let go of it
    consoles: list = field(default_factory=list)      # Contexts of callers waiting for it
    extras: dict = field(default_factory=dict)        # TaskId -> its last report's extras
    printed: int = 0
    skipped: int = 0
    latency: LatencyTotals = field(default_factory=LatencyTotals)   # per task, all attempts
    history: collections.deque = field(default_factory=lambda: collections.deque(
        maxlen=HISTORY))                              # [wall time, records in, records out]
    rates: dict = field(default_factory=dict)         # TaskId -> records/s at the last sample
    _sampled: tuple = ()                              # (monotonic time, {TaskId: count})
    peaks: dict = field(default_factory=dict)         # the highest figures exported
    _peaks_lock: threading.Lock = field(default_factory=threading.Lock)

    def sample(self, now: float) -> None:
        """Note the job's totals (its throughput over time) and each task's rate: records
        read for a source, records put out for an operator, per second since the last."""
        t = totals(self)
        self.history.append([round(time.time(), 2), t["in"], t["out"]])
        counts = {task: stats["in" if task.stage == 0 else "out"]
                  for task, _, stats in shown_tasks(self.core, self.templates)}
        if self._sampled and now > self._sampled[0]:
            then, before = self._sampled
            self.rates = {task: round(max(0, n - before.get(task, 0)) / (now - then), 1)
                          for task, n in counts.items()}
        self._sampled = (now, counts)

    def peak(self, key, value: int) -> int:
        """`value`, or the highest given for `key` before: exported counters never fall."""
        with self._peaks_lock:
            value = self.peaks[key] = max(self.peaks.get(key, 0), value)
        return value

    def emit(self, line: str) -> None:
        """A console line, to every caller still waiting for the job."""
        self.consoles = [ctx for ctx in self.consoles if ctx.attached()]
        for ctx in self.consoles:
            ctx.emit(line)


NO_TOTALS = {"in": 0, "op1_out": 0, "out": 0, "dropped": 0, "errors": 0}


def totals(job: Job) -> dict:
    """The job's counts; nothing yet while it is being set up (or failed while it was)."""
    return job.core.totals() if job.core is not None else dict(NO_TOTALS)


def progress_line(job: Job) -> str:
    t = totals(job)
    elapsed = time.monotonic() - job.started
    return (f"[{elapsed:5.1f}s] read {t['in']} lines ({t['in'] / max(elapsed, 1e-9):,.0f}/s)"
            f" | {job.spec.op1} out {t['op1_out']} | {job.spec.op2} out {t['out']}"
            f" | sources done {len(job.core.sources_done)}/{job.spec.num_tasks}")


def summary(job: Job) -> dict:
    t = totals(job)
    seconds = job.seconds if job.seconds is not None else \
        round(time.monotonic() - job.started, 3)
    doc = {"job": job.id, "dest": job.spec.dest, "state": job.state,
           "records_in": t["in"], "records_out": t["out"], "dropped": t["dropped"],
           "errors": t["errors"],
           "failures_recovered": job.core.failures_recovered if job.core else 0,
           "seconds": seconds,
           "lines_per_second": round(t["in"] / seconds) if seconds else 0,
           "printed": job.printed, "not_printed": job.skipped}
    first = first_error(job)
    if first:
        doc["first_error"] = first
    if job.error:
        doc["error"] = job.error
    return doc


def first_error(job: Job) -> str:
    """The first operator error that a task of the job reported (of the first such task)."""
    return next((job.extras[t]["first_error"] for t in sorted(job.extras)
                 if job.extras[t].get("first_error")), "")


def listing(job: Job) -> dict:
    t = totals(job)
    spec = job.spec
    return {"job": job.id, "state": job.state, "op1": spec.op1, "op2": spec.op2,
            "src": spec.src, "dest": spec.dest, "num_tasks": spec.num_tasks,
            "follow": spec.follow, "records_in": t["in"], "records_out": t["out"],
            "created": job.created}


def task_docs(job: Job) -> list[dict]:
    """`job JOBID`'s tasks. An OP1 chained into its sources (`[stream] chain`) is listed as
    its OP1 tasks too, each where its source runs, with `"chained": "source-N"`; so is an
    OP2 that runs in them as well (a sink)."""
    tasks = []
    for task, runner, stats in (shown_tasks(job.core, job.templates) if job.core else ()):
        st = job.core.tasks[runner]
        doc = {"task": str(task), "vm": st.vm,
               "state": "done" if job.state in ENDED else st.phase, "epoch": st.epoch,
               "records_in": stats["in"], "records_out": stats["out"],
               "restarts": st.replacements,
               "rate": 0.0 if job.state in ENDED else job.rates.get(task, 0.0)}
        if task == runner:
            doc.update(job.extras.get(task, {}))
        else:
            doc["chained"] = str(runner)
        tasks.append(doc)
    return tasks


def listing_of_record(record: dict) -> dict:
    """A `jobs` line for a job known only from its record (another leader ran it)."""
    spec = record.get("spec") or {}
    return {"job": record.get("job"), "state": record.get("state"),
            "op1": spec.get("op1"), "op2": spec.get("op2"), "src": spec.get("src"),
            "dest": spec.get("dest"), "num_tasks": spec.get("num_tasks"),
            "follow": spec.get("follow", False),
            "records_in": (record.get("summary") or {}).get("records_in", 0),
            "records_out": (record.get("summary") or {}).get("records_out", 0),
            "created": record.get("created", 0)}


def old_ended_jobs(jobs: list, keep: int) -> list[str]:
    """The ended jobs beyond the `keep` newest: memory forgets them, `jobs` and `job` read
    them back from their records."""
    ended = sorted((j for j in jobs if j.state in ENDED), key=lambda j: j.created)
    return [j.id for j in ended[:max(0, len(ended) - keep)]]
