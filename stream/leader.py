"""The RainStorm leader: runs a job from start to summary, through worker failures.

`RainStorm OP1 OP2 SRC DEST NUM_TASKS [--op1-args S] [--op2-args S]` on the leader node:

1. check everything a user can get wrong (operators, SRC, DEST, NUM_TASKS) before starting;
2. create DEST and one empty log per task; cut SRC into NUM_TASKS line-aligned partitions;
3. run the job's control core (job_core.py) until it is done or fails: it places the
   3 x NUM_TASKS tasks on the live workers, and whenever one is not running (a start
   failed, its worker failed, its process exited) starts it again, as a new attempt with a
   higher epoch, and sends every running task the schedule (who runs where, which attempt);
4. meanwhile print progress and a rate-limited sample of the output;
5. when every source's blocks are safe end to end, stop the tasks and print the summary.

This module is the core's shell: it turns membership changes, the tasks' reports and exits,
and the outcomes of starts into the core's inputs, on the one thread that runs the job, and
carries out the core's effects: starts (on a thread pool, so a worker that does not answer
holds up no one), schedules, stops, console lines.
"""

from __future__ import annotations

import logging
import queue
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cluster.commands import CommandError, Context
from cluster.messages import OK
from cluster.rpc import Peers, RemoteError, Unreachable
from hydfs.client import HydfsClient, HydfsError, checked_name
from stream import messages as m
from stream import task_log
from stream.job_core import Done, Fail, JobCore, Say, SendSchedule, StartTask, StopAttempt
from stream.job_spec import JobSpec, parse_job
from stream.operators import AGGREGATE, OperatorError, load_operator
from stream.scheduler import TaskId, workers_for
from stream.source_plan import block_bytes_for, plan_partitions
from stream.task_spec import TaskSpec

log = logging.getLogger("stream")

PROGRESS_EVERY = 1.0
PRINT_ROWS_PER_SECOND = 10
TURN = 0.2                     # seconds the job's thread waits for news before a tick
FINAL_REPORTS_WAIT = 5.0


@dataclass
class Job:
    id: str
    spec: JobSpec
    core: JobCore | None = None
    templates: dict = field(default_factory=dict)     # TaskId -> TaskSpec (epoch to set)
    events: queue.Queue = field(default_factory=queue.Queue)
    started: float = field(default_factory=time.monotonic)
    final: set = field(default_factory=set)           # tasks whose last report came
    printed: int = 0
    skipped: int = 0


class Leader:
    def __init__(self, config, vm: str, membership, client: HydfsClient,
                 detection: float):
        """`detection`: how long the cluster takes to declare a crashed node failed."""
        self.config = config
        self.vm = vm
        self.membership = membership
        self.client = client
        self.peers = Peers(config)
        self.jobs: dict[str, Job] = {}
        self._starts = ThreadPoolExecutor(max_workers=16, thread_name_prefix="leader-start")
        self.lease = max(2 * detection, detection + 5.0)
        self.stall_timeout = max(60.0, 5 * detection)
        self.resend_after = max(2.0, 20 * config.stream.batch_interval)

    def routes(self) -> dict:
        return {m.REPORT: self.handle_report, m.TASK_EXIT: self.handle_task_exit}

    # -- news from tasks, workers and membership: to the job's thread -----------------------

    def handle_report(self, conn, msg: dict) -> None:
        """A task's counters, to its job's thread; the answer tells an attempt that this
        leader does not run (any more) to stop: its job ended, or it was replaced."""
        job = self.jobs.get(msg.get("job"))
        stop = None
        if job is None:
            stop = "its job is not running"
        elif job.core is not None and not job.core.is_current(TaskId.from_wire(msg["task"]),
                                                              int(msg.get("epoch", 0))):
            stop = "a newer attempt runs"
        else:
            job.events.put(("report", msg))
        conn.send({"t": OK, "stop": stop})

    def handle_task_exit(self, conn, msg: dict) -> None:
        job = self.jobs.get(msg.get("job"))
        if job is not None:
            job.events.put(("exit", msg))
        conn.send({"t": OK})

    def on_membership(self, events) -> None:
        if any(e.kind in ("fail", "leave", "join") for e in events):
            workers = self._workers()
            failed = sorted({e.member.vm for e in events
                             if e.kind in ("fail", "leave") and e.member})
            for job in list(self.jobs.values()):
                job.events.put(("members", workers, failed))

    def _workers(self) -> list[str]:
        return workers_for([member.vm for member in self.membership.members()], self.vm)

    # -- running a job ----------------------------------------------------------------------

    def run(self, ctx: Context, args: list[str]) -> dict:
        spec = parse_job(args)
        job = Job(uuid.uuid4().hex[:8], spec)
        op1, op2 = self._check_operators(ctx, spec)
        size = self._check_files(spec)
        self.jobs[job.id] = job
        try:
            self._plan(ctx, job, op2, size)
            self._drive(ctx, job)
            log.info("JOB %s sources done at %.3f s", job.id, time.monotonic() - job.started)
            self._stop(job, ctx)                  # and collect the tasks' last counts
        except BaseException:
            self._stop(job)                       # a failed job leaves no task behind
            raise
        finally:
            self.jobs.pop(job.id, None)
        return self._summary(job)

    def _check_operators(self, ctx: Context, spec: JobSpec):
        loaded = []
        for name, arg in ((spec.op1, spec.op1_args), (spec.op2, spec.op2_args)):
            try:
                op = load_operator(name, arg, ctx.cwd)
            except OperatorError as exc:
                raise CommandError(str(exc)) from None
            loaded.append(op)
            op.close()
        return loaded

    def _check_files(self, spec: JobSpec) -> int:
        try:
            checked_name(spec.dest)
            self.client.size(spec.src)          # "no such file" before anything else
            # Replicas may order unmerged appends differently; after a merge every replica
            # holds the same bytes, so sources can read their byte ranges from any of them.
            self.client.merge(spec.src)
            size = self.client.size(spec.src)
            self.client.create_bytes(spec.dest, b"")
        except HydfsError as exc:
            raise CommandError(str(exc)) from None
        return size

    def _plan(self, ctx: Context, job: Job, op2, size: int) -> None:
        """Partitions, the tasks' logs, their specs and first placement."""
        spec = job.spec
        chunks = self.client.read_range(spec.src, 0, size) if size else [b""]
        partitions = plan_partitions(chunks, size, spec.num_tasks)
        log.info("JOB %s partitions planned at %.3f s", job.id, time.monotonic() - job.started)
        workers = self._workers()
        if not workers:
            raise CommandError("no live worker to run the job")
        job.core = JobCore(spec.num_tasks, workers, time.monotonic(), self.stall_timeout,
                           source_hosts=self.client.owners(spec.src), silence=self.lease)
        with ThreadPoolExecutor(max_workers=8) as pool:   # the tasks' (empty) logs
            list(pool.map(lambda t: self.client.create_bytes(task_log.log_name(job.id, str(t)),
                                                             b""), job.core.tasks))
        for task in job.core.tasks:
            job.templates[task] = self._task_spec(ctx, job, task, op2, partitions, size)
        placed = {st.vm for st in job.core.tasks.values()}
        ctx.emit(f"job {job.id}: {spec.op1} -> {spec.op2} over {spec.src} ({size} bytes) "
                 f"into {spec.dest}, {spec.num_tasks} tasks per stage on {len(placed)} workers")

    def _task_spec(self, ctx, job: Job, task: TaskId, op2, partitions, size: int) -> TaskSpec:
        spec = job.spec
        operator, arg = [("", ""), (spec.op1, spec.op1_args), (spec.op2, spec.op2_args)][task.stage]
        return TaskSpec(
            job.id, task, spec.num_tasks, spec.src, spec.dest,
            self.config.stream.batch_interval, self.config.stream.state_flush_interval,
            operator, arg, ctx.cwd, next_stateful=task.stage == 1 and op2.kind == AGGREGATE,
            partition=partitions[task.index] if task.stage == 0 else None,
            block_bytes=block_bytes_for(size, spec.num_tasks),
            source_rate=spec.source_rate / spec.num_tasks, lease=self.lease,
            resend_after=self.resend_after)

    def _drive(self, ctx: Context, job: Job) -> None:
        """Feed the core until it says done (or raise its failure)."""
        core, last_progress, logged_start = job.core, 0.0, False
        effects = core.tick(time.monotonic())
        while True:
            if self._execute(ctx, job, effects):
                return
            if not logged_start and not core.not_running():
                logged_start = True
                log.info("JOB %s started in %.3f s", job.id, time.monotonic() - job.started)
            effects = self._news(ctx, job)
            effects += core.tick(time.monotonic())
            if time.monotonic() - last_progress >= PROGRESS_EVERY:
                last_progress = time.monotonic()
                ctx.emit(self._progress(job))

    def _news(self, ctx: Context, job: Job) -> list:
        """The core's answers to whatever arrived within one TURN."""
        effects = []
        try:
            item = job.events.get(timeout=TURN)
        except queue.Empty:
            return effects
        while item is not None:
            effects += self._step(ctx, job, *item)
            try:
                item = job.events.get_nowait()
            except queue.Empty:
                item = None
        return effects

    def _step(self, ctx: Context, job: Job, kind: str, data, *rest) -> list:
        core, now = job.core, time.monotonic()
        if kind == "report":
            self._show(ctx, job, data)
            return core.report(now, TaskId.from_wire(data["task"]), int(data.get("epoch", 0)),
                               data["stats"], bool(data.get("source_done")))
        if kind == "exit":
            return core.exited(now, TaskId.from_wire(data["task"]), int(data.get("epoch", 0)),
                               data.get("code"))
        if kind == "members":
            return core.members(now, data, *rest)
        if kind == "started":
            return core.started(now, data, *rest)
        if kind == "start_failed":
            return core.start_failed(now, data, *rest)
        return []

    def _execute(self, ctx: Context, job: Job, effects: list) -> bool:
        """Carry out the core's effects; True once the job is done."""
        schedules = [e for e in effects if isinstance(e, SendSchedule)]
        for effect in effects:
            if isinstance(effect, StartTask):
                self._start(job, effect)
            elif isinstance(effect, StopAttempt):
                self._tell(effect.address, {"t": m.STOP, "job": job.id,
                                            "task": effect.task.to_wire(),
                                            "attempt": effect.epoch})
            elif isinstance(effect, Say):
                ctx.emit(effect.text)
            elif isinstance(effect, Fail):
                raise CommandError(effect.reason)
        if schedules:           # only the newest matters
            last = schedules[-1]
            message = {"t": m.SCHEDULE, "job": job.id, "tasks": last.entries}
            for address in last.addresses:
                self._tell(address, message)     # a task gone is the core's to notice
        return any(isinstance(e, Done) for e in effects)

    def _tell(self, address: str, message: dict) -> None:
        """A one-way message to a task's inbox, off the job's thread (a host that is gone
        takes a connect timeout to say so)."""
        self._starts.submit(self.peers.tell, address, message)

    def _start(self, job: Job, effect: StartTask) -> None:
        spec = job.templates[effect.task]
        spec.epoch = effect.epoch
        wire_spec = spec.to_wire()

        def start():
            try:
                reply = self.peers.call(effect.vm, {"t": m.START_TASK, "spec": wire_spec}, 60)
            except (Unreachable, RemoteError) as exc:
                job.events.put(("start_failed", effect.task, effect.epoch, str(exc)))
            else:
                job.events.put(("started", effect.task, effect.epoch, reply["address"]))
        self._starts.submit(start)

    def _stop(self, job: Job, ctx: Context | None = None) -> None:
        if job.core is None:
            return
        running = job.core.running()
        for address in running.values():
            self._tell(address, {"t": m.STOP, "job": job.id})
        if ctx is not None:
            self._final_reports(ctx, job, set(running))
        # Every live worker, not only those the job's tasks are on: an attempt whose start
        # reply was lost runs where the leader does not know it.
        vms = sorted({st.vm for st in job.core.tasks.values() if st.vm} | set(self._workers()))
        with ThreadPoolExecutor(max_workers=max(len(vms), 1)) as pool:
            list(pool.map(lambda vm: self._stop_job_on(vm, job.id), vms))

    def _stop_job_on(self, vm: str, job_id: str) -> None:
        try:
            self.peers.call(vm, {"t": m.STOP_JOB, "job": job_id}, 15)
        except (Unreachable, RemoteError):
            pass                  # a worker that is gone runs nothing of the job any more

    def _final_reports(self, ctx: Context, job: Job, waiting: set) -> None:
        """Wait (a little) for every task's last counts before the summary."""
        deadline = time.monotonic() + FINAL_REPORTS_WAIT
        while waiting and time.monotonic() < deadline:
            try:
                kind, data, *_ = job.events.get(timeout=0.1)
            except queue.Empty:
                continue
            if kind == "report":
                self._step(ctx, job, kind, data)
                if data.get("final"):
                    waiting.discard(TaskId.from_wire(data["task"]))

    # -- what the user sees -----------------------------------------------------------------

    def _show(self, ctx: Context, job: Job, msg: dict) -> None:
        allowed = PRINT_ROWS_PER_SECOND * (1 + time.monotonic() - job.started)
        for row in msg.get("sample", []):
            if job.printed < allowed:
                ctx.emit(row)
                job.printed += 1
        job.skipped = max(0, job.core.totals()["out"] - job.printed)

    def _progress(self, job: Job) -> str:
        t = job.core.totals()
        elapsed = time.monotonic() - job.started
        return (f"[{elapsed:5.1f}s] read {t['in']} lines ({t['in'] / max(elapsed, 1e-9):,.0f}/s)"
                f" | {job.spec.op1} out {t['op1_out']} | {job.spec.op2} out {t['out']}"
                f" | sources done {len(job.core.sources_done)}/{job.spec.num_tasks}")

    def _summary(self, job: Job) -> dict:
        t = job.core.totals()
        seconds = round(time.monotonic() - job.started, 3)
        return {"job": job.id, "dest": job.spec.dest, "records_in": t["in"],
                "records_out": t["out"], "dropped": t["dropped"], "errors": t["errors"],
                "failures_recovered": job.core.failures_recovered, "seconds": seconds,
                "lines_per_second": round(t["in"] / seconds) if seconds else 0,
                "printed": job.printed, "not_printed": job.skipped}
