"""The RainStorm leader: runs jobs from start to summary, through worker failures, and
answers for them (`jobs`, `job JOBID`, `stop JOBID`).

`RainStorm OP1 OP2 SRC DEST NUM_TASKS [options]` on the leader node:

1. check everything a user can get wrong (operators, SRC, DEST, NUM_TASKS) before starting;
2. take the job's snapshot of SRC (the appends settled on its replicas, read in merge order
   from any of them), create DEST, the job's record and one empty log per task, and cut the
   snapshot into NUM_TASKS line-aligned partitions;
3. run the job on a thread of its own: its control core (job_core.py) places the
   3 x NUM_TASKS tasks on the live workers, and whenever one is not running (a start
   failed, its worker failed, its process exited) starts it again, as a new attempt with a
   higher epoch, and sends every running task the schedule (who runs where, which attempt);
4. meanwhile print progress and a rate-limited sample of the output to whoever waits for
   the job (`--detach`: nobody; the command returns at once);
5. when every source's blocks are safe end to end (a `--follow` job: after `stop`), stop
   the tasks, write the summary into the job's record and hand it to those waiting.

Job states: starting (tasks being placed), running, stopping (`stop` asked: sources read
nothing new, what they read goes on to DEST), then done, stopped or failed. Jobs stay
listed after they end; `jobs` also lists those in HyDFS's job records (job_record.py).

This module is the core's shell: it turns membership changes, the tasks' reports and exits,
the outcomes of starts and `stop` requests into the core's inputs, on the thread that runs
the job, and carries out the core's effects: starts (on a thread pool, so a worker that does
not answer holds up no one), schedules, stops, console lines.
"""

from __future__ import annotations

import logging
import queue
import threading
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
from stream.job_record import JobRecords
from stream.job_spec import JobSpec, parse_job
from stream.operators import AGGREGATE, OperatorError, load_operator
from stream.scheduler import TaskId, workers_for
from stream.source_plan import block_bytes_for, plan_partitions
from stream.task_spec import TaskSpec

log = logging.getLogger("stream")

PROGRESS_EVERY = 1.0
QUIET_PROGRESS_EVERY = 10.0    # ... when nothing moved (an idle following job)
PRINT_ROWS_PER_SECOND = 10
TURN = 0.2                     # seconds the job's thread waits for news before a tick
FINAL_REPORTS_WAIT = 5.0
KEEP_ENDED = 100               # ended jobs kept in memory (all stay in their records)

STARTING, RUNNING, STOPPING = "starting", "running", "stopping"
DONE, STOPPED, FAILED = "done", "stopped", "failed"
ENDED = (DONE, STOPPED, FAILED)


@dataclass
class Job:
    id: str
    spec: JobSpec
    core: JobCore | None = None
    templates: dict = field(default_factory=dict)     # TaskId -> TaskSpec (epoch to set)
    events: queue.Queue = field(default_factory=queue.Queue)
    started: float = field(default_factory=time.monotonic)
    created: float = field(default_factory=time.time)
    state: str = STARTING
    error: str = ""
    seconds: float | None = None                      # how long it ran, once it ended
    ended: threading.Event = field(default_factory=threading.Event)
    consoles: list = field(default_factory=list)      # Contexts of callers waiting for it
    extras: dict = field(default_factory=dict)        # TaskId -> its last report's extras
    printed: int = 0
    skipped: int = 0

    def emit(self, line: str) -> None:
        """A console line, to every caller still waiting for the job."""
        self.consoles = [ctx for ctx in self.consoles if ctx.attached()]
        for ctx in self.consoles:
            ctx.emit(line)


class Leader:
    def __init__(self, config, vm: str, membership, client: HydfsClient,
                 detection: float):
        """`detection`: how long the cluster takes to declare a crashed node failed."""
        self.config = config
        self.vm = vm
        self.membership = membership
        self.client = client
        self.peers = Peers(config)
        self.records = JobRecords(client, vm)
        self.jobs: dict[str, Job] = {}                # every job this leader ran, by id
        self._old_records: dict[str, dict] = {}       # ended jobs' records, read before
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
        if job is None or job.state in ENDED:
            stop = "its job is not running"
        elif job.core is not None and not job.core.is_current(TaskId.from_wire(msg["task"]),
                                                              int(msg.get("epoch", 0))):
            stop = "a newer attempt runs"
        else:
            job.events.put(("report", msg))
        conn.send({"t": OK, "stop": stop})

    def handle_task_exit(self, conn, msg: dict) -> None:
        job = self.jobs.get(msg.get("job"))
        if job is not None and job.state not in ENDED:
            job.events.put(("exit", msg))
        conn.send({"t": OK})

    def on_membership(self, events) -> None:
        if any(e.kind in ("fail", "leave", "join") for e in events):
            workers = self._workers()
            failed = sorted({e.member.vm for e in events
                             if e.kind in ("fail", "leave") and e.member})
            for job in list(self.jobs.values()):
                if job.state not in ENDED:
                    job.events.put(("members", workers, failed))

    def _workers(self) -> list[str]:
        return workers_for([member.vm for member in self.membership.members()], self.vm)

    # -- the commands -----------------------------------------------------------------------

    def run(self, ctx: Context, args: list[str]) -> dict:
        """`RainStorm ...`: start a job; its summary once it ends (`--detach`: at once)."""
        spec = parse_job(args)
        job = Job(uuid.uuid4().hex[:8], spec)
        op1, op2 = self._check_operators(ctx, spec)
        view = self._check_files(spec)
        self._plan(ctx, job, op2, view)
        self.jobs[job.id] = job
        self.records.create(job.id, spec.to_wire())
        if not spec.detach:
            job.consoles.append(ctx)
        threading.Thread(target=self._run_job, args=(job,), daemon=True,
                         name=f"job-{job.id}").start()
        if spec.detach:
            return {"job": job.id, "state": RUNNING}
        return self._await(job)

    def stop(self, ctx: Context, job_id: str) -> dict:
        """`stop JOBID`: the sources read nothing new; the summary once the job ends."""
        job = self.jobs.get(job_id)
        if job is None:
            doc = self._recorded(job_id)
            if doc.get("state") not in ENDED:
                raise CommandError(f"job {job_id} is {doc.get('state')} in its record, but no "
                                   f"leader runs it (its leader was restarted)")
            return doc                        # ended under an earlier leader
        if job.state not in ENDED:
            job.events.put(("stop",))
            job.consoles.append(ctx)
        return self._await(job)

    def job_doc(self, job_id: str) -> dict:
        """`job JOBID`: the job's summary so far, its state and its tasks."""
        job = self.jobs.get(job_id)
        if job is None:
            return self._recorded(job_id)
        doc = self._summary(job)
        doc["tasks"] = self._tasks(job)
        return doc

    def jobs_doc(self) -> dict:
        """`jobs`: every job this leader knows, newest first."""
        docs = {job.id: self._listing(job) for job in list(self.jobs.values())}
        try:
            for job_id in self.records.job_ids():
                if job_id not in docs:
                    record = self._record(job_id)
                    if record:
                        docs[job_id] = _listing_of_record(record)
        except HydfsError as exc:
            log.warning("job records unreadable: %s", exc)
        return {"jobs": sorted(docs.values(), key=lambda d: d.get("created", 0),
                               reverse=True)}

    def _await(self, job: Job) -> dict:
        job.ended.wait()
        if job.state == FAILED:
            raise CommandError(job.error)
        return self._summary(job)

    def _recorded(self, job_id: str) -> dict:
        """The document of a job this leader does not hold, from its record."""
        try:
            record = self._record(job_id)
        except HydfsError as exc:
            raise CommandError(f"job {job_id}: its record is unreadable: {exc}") from None
        if not record:
            raise CommandError(f"no such job {job_id}")
        return dict(record.get("summary") or {"job": job_id}, state=record.get("state"),
                    tasks=[])

    def _record(self, job_id: str) -> dict | None:
        """A job's record, read from HyDFS once it ended (it changes no more)."""
        record = self._old_records.get(job_id) or self.records.read(job_id)
        if record and record.get("state") in ENDED:
            self._old_records[job_id] = record
        return record

    # -- checking and planning --------------------------------------------------------------

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

    def _check_files(self, spec: JobSpec):
        """Create DEST; the job's snapshot of SRC: the appends settled on its replicas (a
        merge first, so that they usually read as one stretch of the base)."""
        try:
            checked_name(spec.dest)
            self.client.size(spec.src)          # "no such file" before anything else
            self.client.merge(spec.src)
            view = self.client.settled(spec.src)
            self.client.create_bytes(spec.dest, b"")
        except HydfsError as exc:
            raise CommandError(str(exc)) from None
        return view

    def _plan(self, ctx: Context, job: Job, op2, view) -> None:
        """Partitions, the tasks' logs, their specs and first placement."""
        spec = job.spec
        try:
            size, chunks = self.client.read_view(spec.src, view, True, 0, 1 << 62)
            partitions = plan_partitions(chunks if size else [b""], size, spec.num_tasks,
                                         follow=spec.follow)
        except HydfsError as exc:
            raise CommandError(str(exc)) from None
        log.info("JOB %s partitions planned at %.3f s", job.id, time.monotonic() - job.started)
        workers = self._workers()
        if not workers:
            raise CommandError("no live worker to run the job")
        job.core = JobCore(spec.num_tasks, workers, time.monotonic(), self.stall_timeout,
                           source_hosts=self.client.owners(spec.src), silence=self.lease,
                           following=spec.follow)
        with ThreadPoolExecutor(max_workers=8) as pool:   # the tasks' (empty) logs
            list(pool.map(lambda t: self.client.create_bytes(task_log.log_name(job.id, str(t)),
                                                             b""), job.core.tasks))
        for task in job.core.tasks:
            job.templates[task] = self._task_spec(ctx, job, task, op2, partitions, size, view)
        placed = {st.vm for st in job.core.tasks.values()}
        ctx.emit(f"job {job.id}: {spec.op1} -> {spec.op2} over {spec.src} ({size} bytes"
                 f"{', following its appends' if spec.follow else ''}) into {spec.dest}, "
                 f"{spec.num_tasks} tasks per stage on {len(placed)} workers")

    def _task_spec(self, ctx, job: Job, task: TaskId, op2, partitions, size: int,
                   view) -> TaskSpec:
        spec = job.spec
        operator, arg = [("", ""), (spec.op1, spec.op1_args), (spec.op2, spec.op2_args)][task.stage]
        source = task.stage == 0
        return TaskSpec(
            job.id, task, spec.num_tasks, spec.src, spec.dest,
            self.config.stream.batch_interval, self.config.stream.state_flush_interval,
            operator, arg, ctx.cwd, next_stateful=task.stage == 1 and op2.kind == AGGREGATE,
            partition=partitions[task.index] if source else None,
            block_bytes=block_bytes_for(size, spec.num_tasks),
            source_rate=spec.source_rate / spec.num_tasks, lease=self.lease,
            resend_after=self.resend_after, view=view.to_wire() if source else None,
            follow=spec.follow and source,
            window_bytes=int(self.config.stream.source_window_mb * (1 << 20)))

    # -- running a job ----------------------------------------------------------------------

    def _run_job(self, job: Job) -> None:
        """The job's thread: drive it to its end; the record and the waiting callers get
        the summary."""
        try:
            self._drive(job)
            log.info("JOB %s sources done at %.3f s", job.id, time.monotonic() - job.started)
            self._stop(job, final_reports=True)
            job.state = STOPPED if job.core.stopping else DONE
        except CommandError as exc:
            job.state, job.error = FAILED, str(exc)
            self._stop(job)                        # a failed job leaves no task behind
        except Exception as exc:
            log.exception("job %s failed", job.id)
            job.state, job.error = FAILED, f"internal error: {exc}"
            self._stop(job)
        job.seconds = round(time.monotonic() - job.started, 3)
        summary = self._summary(job)
        try:
            self.records.update(job.id, {"state": job.state, "summary": summary,
                                         "error": job.error})
            if job.state == FAILED:
                job.emit(f"job {job.id} failed: {job.error}")
        finally:
            job.ended.set()           # whatever happened, nobody waits for ever
            self._forget_old_jobs()

    def _forget_old_jobs(self) -> None:
        for job_id in old_ended_jobs(list(self.jobs.values()), KEEP_ENDED):
            self.jobs.pop(job_id, None)

    def _drive(self, job: Job) -> None:
        """Feed the core until it says done (or raise its failure)."""
        core, last_progress, shown = job.core, 0.0, None
        effects = core.tick(time.monotonic())
        while True:
            if self._execute(job, effects):
                return
            if job.state == STARTING and not core.not_running():
                job.state = RUNNING
                self.records.update(job.id, {"state": RUNNING})
                log.info("JOB %s started in %.3f s", job.id, time.monotonic() - job.started)
            effects = self._news(job)
            effects += core.tick(time.monotonic())
            now = time.monotonic()
            totals = core.totals()
            if now - last_progress >= (PROGRESS_EVERY if totals != shown
                                       else QUIET_PROGRESS_EVERY):
                last_progress, shown = now, totals
                job.emit(self._progress(job))

    def _news(self, job: Job) -> list:
        """The core's answers to whatever arrived within one TURN."""
        effects = []
        try:
            item = job.events.get(timeout=TURN)
        except queue.Empty:
            return effects
        while item is not None:
            effects += self._step(job, *item)
            try:
                item = job.events.get_nowait()
            except queue.Empty:
                item = None
        return effects

    def _step(self, job: Job, kind: str, *data) -> list:
        core, now = job.core, time.monotonic()
        if kind == "report":
            msg = data[0]
            task = TaskId.from_wire(msg["task"])
            self._show(job, msg)
            if "in_flight" in msg:
                job.extras[task] = {"in_flight": msg["in_flight"], "window": msg.get("window")}
            return core.report(now, task, int(msg.get("epoch", 0)), msg["stats"],
                               bool(msg.get("source_done")))
        if kind == "exit":
            return core.exited(now, TaskId.from_wire(data[0]["task"]),
                               int(data[0].get("epoch", 0)), data[0].get("code"))
        if kind == "members":
            return core.members(now, *data)
        if kind == "started":
            return core.started(now, *data)
        if kind == "start_failed":
            return core.start_failed(now, *data)
        if kind == "stop":
            return self._stopping(job, now)
        return []

    def _stopping(self, job: Job, now: float) -> list:
        if job.core.stopping:
            return []
        for template in job.templates.values():   # what a source started from now on reads
            template.stopping = True
        job.state = STOPPING
        job.emit(f"job {job.id}: stopping (sources read nothing new)")
        effects = job.core.stop(now)
        self._execute(job, effects)                # the word goes out before the record
        self.records.update(job.id, {"state": STOPPING})
        return []

    def _execute(self, job: Job, effects: list) -> bool:
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
                job.emit(effect.text)
            elif isinstance(effect, Fail):
                raise CommandError(effect.reason)
        if schedules:           # only the newest matters
            last = schedules[-1]
            message = {"t": m.SCHEDULE, "job": job.id, "tasks": last.entries}
            if last.stopping:
                message["stopping"] = True
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

    def _stop(self, job: Job, final_reports: bool = False) -> None:
        if job.core is None:
            return
        running = job.core.running()
        for address in running.values():
            self._tell(address, {"t": m.STOP, "job": job.id})
        if final_reports:
            self._final_reports(job, set(running))
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

    def _final_reports(self, job: Job, waiting: set) -> None:
        """Wait (a little) for every task's last counts before the summary."""
        deadline = time.monotonic() + FINAL_REPORTS_WAIT
        while waiting and time.monotonic() < deadline:
            try:
                kind, *data = job.events.get(timeout=0.1)
            except queue.Empty:
                continue
            if kind == "report":
                self._step(job, kind, *data)
                if data[0].get("final"):
                    waiting.discard(TaskId.from_wire(data[0]["task"]))

    # -- what the user sees -----------------------------------------------------------------

    def _show(self, job: Job, msg: dict) -> None:
        allowed = PRINT_ROWS_PER_SECOND * (1 + time.monotonic() - job.started)
        for row in msg.get("sample", []):
            if job.printed < allowed:
                job.emit(row)
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
        seconds = job.seconds if job.seconds is not None else \
            round(time.monotonic() - job.started, 3)
        doc = {"job": job.id, "dest": job.spec.dest, "state": job.state,
               "records_in": t["in"], "records_out": t["out"], "dropped": t["dropped"],
               "errors": t["errors"], "failures_recovered": job.core.failures_recovered,
               "seconds": seconds,
               "lines_per_second": round(t["in"] / seconds) if seconds else 0,
               "printed": job.printed, "not_printed": job.skipped}
        if job.error:
            doc["error"] = job.error
        return doc

    def _listing(self, job: Job) -> dict:
        t = job.core.totals()
        spec = job.spec
        return {"job": job.id, "state": job.state, "op1": spec.op1, "op2": spec.op2,
                "src": spec.src, "dest": spec.dest, "num_tasks": spec.num_tasks,
                "follow": spec.follow, "records_in": t["in"], "records_out": t["out"],
                "created": job.created}

    def _tasks(self, job: Job) -> list[dict]:
        tasks = []
        for task, st in sorted(job.core.tasks.items()):
            doc = {"task": str(task), "vm": st.vm,
                   "state": "done" if job.state in ENDED else st.phase, "epoch": st.epoch,
                   "records_in": st.stats.get("in", 0), "records_out": st.stats.get("out", 0)}
            doc.update(job.extras.get(task, {}))
            tasks.append(doc)
        return tasks


def old_ended_jobs(jobs: list, keep: int) -> list[str]:
    """The ended jobs beyond the `keep` newest: memory forgets them, `jobs` and `job` read
    them back from their records."""
    ended = sorted((j for j in jobs if j.state in ENDED), key=lambda j: j.created)
    return [j.id for j in ended[:max(0, len(ended) - keep)]]


def _listing_of_record(record: dict) -> dict:
    """A `jobs` line for a job known only from its record (another leader ran it)."""
    spec = record.get("spec") or {}
    return {"job": record.get("job"), "state": record.get("state"),
            "op1": spec.get("op1"), "op2": spec.get("op2"), "src": spec.get("src"),
            "dest": spec.get("dest"), "num_tasks": spec.get("num_tasks"),
            "follow": spec.get("follow", False),
            "records_in": (record.get("summary") or {}).get("records_in", 0),
            "records_out": (record.get("summary") or {}).get("records_out", 0),
            "created": record.get("created", 0)}
