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

Job states are in job.py. Jobs stay listed after they end; `jobs` also lists those in
HyDFS's job records (job_record.py).

Every node has a Leader; it acts only while this node leads (leadership.py). It then
carries its leader epoch on every order (starts, schedules, stops) and every write to a
job's record, so that workers, tasks and HyDFS refuse it once a newer leader took over.
A new leader `take_over`s: it fences every running job's record, asks every live worker
what it runs (the announcement, `stream.leader`), and drives each job on from its record,
restarting only the tasks that do not run. A deposed leader `step_down`s: it stops driving
its jobs and leaves their tasks alone; whoever waited for a job is told to follow it on.

This module is the core's shell: it turns membership changes, the tasks' reports and exits,
the outcomes of starts and `stop` requests into the core's inputs, on the thread that runs
the job, and carries out the core's effects: starts (on a thread pool, so a worker that does
not answer holds up no one), schedules, stops, console lines.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from cluster.commands import CommandError, Context
from cluster.messages import OK
from cluster.rpc import Peers, RemoteError, Unreachable
from hydfs.client import HydfsClient, HydfsError, checked_name
from hydfs.messages import FENCED, FILE_EXISTS, NO_SUCH_FILE
from stream import messages as m
from stream import task_log
from stream.job import (ENDED, FAILED, RUNNING, STARTING, STOPPED, STOPPING, DONE, Job,
                        listing, listing_of_record, old_ended_jobs, progress_line, summary,
                        task_docs)
from stream.job_core import Done, Fail, JobCore, Say, SendSchedule, StartTask, StopAttempt
from stream.job_record import Deposed, JobExists, JobRecords, placement_of, placement_to_wire
from stream.job_spec import JobSpec, parse_job
from stream.operators import AGGREGATE, OperatorError, load_operator
from stream.scheduler import TaskId, workers_for
from stream.source_plan import block_bytes_for, plan_partitions
from stream.succession import attempt_floor
from stream.task_spec import TaskSpec

log = logging.getLogger("stream")

PROGRESS_EVERY = 1.0
QUIET_PROGRESS_EVERY = 10.0    # ... when nothing moved (an idle following job)
PRINT_ROWS_PER_SECOND = 10
TURN = 0.2                     # seconds the job's thread waits for news before a tick
FINAL_REPORTS_WAIT = 5.0
JOB_ID = re.compile(r"[0-9a-f]{8,32}")   # a job id a request may choose
KEEP_ENDED = 100               # ended jobs kept in memory (all stay in their records)
ANNOUNCE_TIMEOUT = 5.0
RETAKE_EVERY = 2.0             # seconds between tries to take over a job not taken yet


class Leader:
    def __init__(self, config, vm: str, membership, client: HydfsClient,
                 detection: float, leadership):
        """`detection`: how long the cluster takes to declare a crashed node failed."""
        self.config = config
        self.vm = vm
        self.address = list(config.address(vm))
        self.membership = membership
        self.client = client
        self.leadership = leadership
        self.peers = Peers(config)
        self.records = JobRecords(client, vm)
        self.epoch = 0                 # the leader epoch this node leads at (0: never did)
        self.active = False            # leading, with every running job taken over
        self._lock = threading.Lock()  # orders `active`: a take-over, a step down
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
        leader does not run (any more) to stop: its job ended, or it was replaced. A node
        that does not lead never says stop (the leader's schedules tell tasks where it is)."""
        job = self.jobs.get(msg.get("job"))
        stop = None
        if not self.active:
            pass                          # not ours to judge: the leader's schedule will
        elif job is None:
            record = self._old_records.get(msg.get("job"))
            stop = "its job is not running" if record else None
        elif job.state in ENDED:
            stop = "its job is not running"
        elif job.core is not None and not job.core.is_current(TaskId.from_wire(msg["task"]),
                                                              int(msg.get("epoch", 0))):
            stop = "a newer attempt runs"
        else:
            job.events.put(("report", msg))
        claim = self.leadership.current()
        conn.send({"t": OK, "stop": stop, "leader_epoch": self.epoch if self.active else 0,
                   "leader": claim.to_wire() if claim else None})

    def handle_task_exit(self, conn, msg: dict) -> None:
        job = self.jobs.get(msg.get("job"))
        if self.active and job is not None and job.state not in ENDED:
            job.events.put(("exit", msg))
        conn.send({"t": OK})

    def on_membership(self, events) -> None:
        if self.active and any(e.kind in ("fail", "leave", "join") for e in events):
            workers = self._workers()
            failed = sorted({e.member.vm for e in events
                             if e.kind in ("fail", "leave") and e.member})
            for job in list(self.jobs.values()):
                if job.state not in ENDED:
                    job.events.put(("members", workers, failed))

    def _workers(self) -> list[str]:
        return workers_for([member.vm for member in self.membership.members()], self.vm)

    # -- leading, and letting go ------------------------------------------------------------

    def take_over(self, epoch: int) -> None:
        """Lead at `epoch`: fence the job index and every running job's record, learn what
        the workers run, and drive each job on from its record. A job whose record cannot
        be read or fenced now is tried again every RETAKE_EVERY s; a fence refused (a newer
        leader) raises Deposed: this node does not lead."""
        self.epoch = epoch
        self.records.fence_index(epoch)
        running = self._announce(epoch)
        ids = [i for i in self.records.job_ids()
               if not (i in self.jobs and self.jobs[i].state in ENDED)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            left = [job_id for job_id, ok in zip(ids, pool.map(
                lambda job_id: self._take_job(job_id, epoch, running), ids)) if not ok]
        with self._lock:
            self.active = self.leadership.leads_at(epoch)
        for job in list(self.jobs.values()):     # what membership said meanwhile
            if job.epoch == epoch and job.state not in ENDED:
                job.events.put(("members", self._workers(), []))
        if left:
            threading.Thread(target=self._retake, args=(left, epoch), daemon=True,
                             name="retake").start()

    def _take_job(self, job_id: str, epoch: int, running: list) -> bool:
        """Take one job over (or end it, if its leader died before it started); False if
        its record cannot be read or fenced now (try again)."""
        try:
            record = self._old_records.get(job_id) or self.records.read(job_id)
            if not record or record.get("state") in ENDED:
                return True
            record = self.records.fence(job_id, epoch)
            if not record or record.get("state") in ENDED:
                return True
            if not record.get("templates"):          # its leader died setting it up
                return self._set_up_again(record, epoch)
            job = self._resumed(record, running, epoch)
        except HydfsError as exc:
            if exc.code == FENCED:
                raise Deposed(f"a newer leader fenced job {job_id}'s record") from None
            log.warning("JOB %s not taken over yet: %s", job_id, exc)
            return False
        except (KeyError, TypeError, ValueError) as exc:
            log.error("JOB %s cannot be taken over: its record is damaged (%r)", job_id, exc)
            return True
        self.jobs[job.id] = job
        threading.Thread(target=self._run_job, args=(job,), daemon=True,
                         name=f"job-{job.id}").start()
        log.info("JOB %s taken over at epoch %d", job.id, epoch)
        return True

    def _set_up_again(self, record: dict, epoch: int) -> bool:
        """A job whose leader died before any of its tasks started: set it up here."""
        spec = JobSpec.from_wire(record["spec"])
        job = Job(record["job"], spec, epoch=epoch,
                  created=float(record.get("created", time.time())))
        try:
            self._prepare(Context(cwd=str(record.get("cwd") or ".")), job, dest_made=True)
        except CommandError as exc:
            if exc.code == m.NOT_LEADER:
                raise Deposed(str(exc)) from None
            log.warning("JOB %s could not be set up again: %s", job.id, exc)
            return True
        log.info("JOB %s set up again at epoch %d (its leader died setting it up)", job.id,
                 epoch)
        return True

    def _retake(self, job_ids: list, epoch: int) -> None:
        while job_ids and self.leadership.leads_at(epoch):
            time.sleep(RETAKE_EVERY)
            running = self._announce(epoch)
            try:
                job_ids = [j for j in job_ids if not self._take_job(j, epoch, running)]
            except Deposed:
                self.leadership.check_soon()
                return

    def step_down(self, successor) -> None:
        """Another leader took over (or the take-over failed): drive nothing any more. The
        tasks run on; whoever waits for a job here is told where to follow it."""
        with self._lock:
            self.active = False
        why = (f"vm{self.vm} is no longer the leader (vm{successor.vm} took over); the job "
               f"goes on: follow it with 'job {{job}}'" if successor else
               f"vm{self.vm} stopped leading; the job goes on: follow it with 'job {{job}}'")
        for job in list(self.jobs.values()):
            if job.state not in ENDED and job.epoch != 0 and not job.deposed:
                job.deposed = why.format(job=job.id)
                job.events.put(("deposed",))

    def _announce(self, epoch: int) -> list:
        """Tell every live node who leads now; what task attempts they run:
        [(job, task, vm, epoch, address)]."""
        message = {"t": m.LEADER, "epoch": epoch, "vm": self.vm, "address": self.address}
        vms = sorted({member.vm for member in self.membership.members()} | {self.vm})

        def ask(vm):
            try:
                return vm, self.peers.call(vm, message, ANNOUNCE_TIMEOUT).get("tasks", [])
            except (Unreachable, RemoteError) as exc:
                log.warning("LEADER vm%s did not hear the announcement: %s", vm, exc)
                return vm, []
        with ThreadPoolExecutor(max_workers=max(len(vms), 1)) as pool:
            answers = list(pool.map(ask, vms))
        return [(t["job"], TaskId.from_wire(t["task"]), vm, int(t["epoch"]), t["address"])
                for vm, tasks in answers for t in tasks]

    def _resumed(self, record: dict, running: list, epoch: int) -> Job:
        """A job of an earlier leader, from its record, adopting the attempts still running."""
        spec = JobSpec.from_wire(record["spec"])
        created = float(record.get("created", time.time()))
        job = Job(record["job"], spec, epoch=epoch, created=created,
                  started=time.monotonic() - max(0.0, time.time() - created),
                  state=RUNNING if record.get("state") != STOPPING else STOPPING)
        job.templates = {}
        for wire_spec in record["templates"]:
            template = TaskSpec.from_wire(wire_spec)
            template.stopping = template.stopping or job.state == STOPPING
            job.templates[template.task] = template
        job.core = JobCore(spec.num_tasks, self._workers(), time.monotonic(),
                           self.stall_timeout, silence=self.lease, following=spec.follow,
                           epoch_floor=attempt_floor(epoch))
        effects = job.core.adopt(
            time.monotonic(), placement_of(record),
            [(task, vm, epoch, address) for job_id, task, vm, epoch, address in running
             if job_id == job.id],
            record.get("sources_done", ()), int(record.get("failures_recovered", 0)),
            job.state == STOPPING, leader=self.vm)
        job.events.put(("effects", effects))
        return job

    # -- the commands -----------------------------------------------------------------------

    def run(self, ctx: Context, args: list[str]) -> dict:
        """`RainStorm ...`: start a job; its summary once it ends (`--detach`: at once).
        The job's id is the request's (`ctx.request`, chosen where the user typed it): a
        request that arrives again (relayed to a successor after the leader was lost on
        the way) follows the job it started instead of starting another."""
        spec = parse_job(args)
        self._must_lead()
        job_id = ctx.request if JOB_ID.fullmatch(ctx.request or "") else uuid.uuid4().hex[:8]
        if job_id in self.jobs:
            return self.wait(ctx, job_id)
        job = Job(job_id, spec, epoch=self.epoch)
        _, op2 = self._check_operators(ctx, spec)
        self._check_names(spec)
        try:
            self.records.create(job.id, {"spec": spec.to_wire(), "cwd": ctx.cwd}, job.epoch)
        except JobExists:
            return self.wait(ctx, job_id)
        except (HydfsError, Deposed) as exc:
            self._still_leading(job)
            raise CommandError(f"job {job.id} not started: its record could not be written "
                               f"({exc})") from None
        ctx.note({"job": job.id})
        if not spec.detach:
            job.consoles.append(ctx)
        self._prepare(ctx, job, dest_made=False, op2=op2)
        if spec.detach:
            return {"job": job.id, "state": RUNNING}
        return self._await(job)

    def _prepare(self, ctx: Context, job: Job, dest_made: bool, op2=None) -> None:
        """Snapshot, DEST, partitions, the tasks' logs and specs, into the record; then the
        job's thread. `dest_made`: an earlier leader may have made DEST and the logs (and
        nothing else: no task starts before the specs are in the record)."""
        try:
            op2 = op2 or self._check_operators(ctx, job.spec)[1]
            view = self._check_files(job.spec, dest_made)
            self._plan(ctx, job, op2, view, logs_made=dest_made)
            self.records.update(job.id, {"templates": [
                job.templates[t].to_wire() for t in sorted(job.templates)]}, job.epoch,
                strict=True)
        except (CommandError, HydfsError, Deposed) as exc:
            self._still_leading(job)
            self.records.update(job.id, {"state": FAILED, "error": str(exc)}, job.epoch)
            raise CommandError(str(exc)) from None
        self.jobs[job.id] = job
        threading.Thread(target=self._run_job, args=(job,), daemon=True,
                         name=f"job-{job.id}").start()

    def _still_leading(self, job: Job) -> None:
        """A job that could not be set up because this node was deposed meanwhile is the
        new leader's to set up: say so (NOT_LEADER: the request goes there)."""
        if not self.leadership.leads_at(job.epoch):
            raise CommandError(f"vm{self.vm} was deposed while it set up job {job.id}",
                               code=m.NOT_LEADER)

    def wait(self, ctx: Context, job_id: str) -> dict:
        """`job JOBID --wait`: follow a job to its end; its summary."""
        self._must_lead()
        job = self.jobs.get(job_id)
        if job is None:
            doc = self._recorded(job_id)
            if doc.get("state") == FAILED:
                raise CommandError(doc.get("error") or f"job {job_id} failed")
            return doc
        if job.state not in ENDED:
            job.consoles.append(ctx)
        return self._await(job)

    def _must_lead(self) -> None:
        if not self.active:
            raise CommandError(f"vm{self.vm} does not lead (vm{self.leadership.leader_vm()} "
                               f"does)", code=m.NOT_LEADER)

    def stop(self, ctx: Context, job_id: str) -> dict:
        """`stop JOBID`: the sources read nothing new; the summary once the job ends."""
        self._must_lead()
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
        doc = summary(job)
        doc["tasks"] = task_docs(job)
        return doc

    def jobs_doc(self) -> dict:
        """`jobs`: every job this leader knows, newest first."""
        docs = {job.id: listing(job) for job in list(self.jobs.values())}
        try:
            for job_id in self.records.job_ids():
                if job_id not in docs:
                    record = self._record(job_id)
                    if record:
                        docs[job_id] = listing_of_record(record)
        except HydfsError as exc:
            log.warning("job records unreadable: %s", exc)
        return {"jobs": sorted(docs.values(), key=lambda d: d.get("created", 0),
                               reverse=True)}

    def _await(self, job: Job) -> dict:
        job.ended.wait()
        if job.deposed:
            raise CommandError(job.deposed, code=m.NOT_LEADER)
        if job.state == FAILED:
            raise CommandError(job.error)
        return summary(job)

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

    def _check_names(self, spec: JobSpec) -> None:
        """What a user can get wrong about SRC and DEST, before the job is recorded."""
        try:
            checked_name(spec.dest)
            self.client.size(spec.src)          # "no such file" before anything else
        except HydfsError as exc:
            raise CommandError(str(exc)) from None
        try:
            self.client.size(spec.dest)
        except HydfsError as exc:
            if exc.code != NO_SUCH_FILE:
                raise CommandError(str(exc)) from None
        else:
            raise CommandError(f"file {spec.dest} already exists in HyDFS")

    def _check_files(self, spec: JobSpec, dest_made: bool = False):
        """Create DEST (`dest_made`: it may exist, empty); the job's snapshot of SRC: the
        appends settled on its replicas (a merge first, so that they usually read as one
        stretch of the base)."""
        try:
            self.client.merge(spec.src)
            view = self.client.settled(spec.src)
            _create(self.client, spec.dest, may_exist=dest_made)
        except HydfsError as exc:
            raise CommandError(str(exc)) from None
        return view

    def _plan(self, ctx: Context, job: Job, op2, view, logs_made: bool = False) -> None:
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
                           following=spec.follow, epoch_floor=attempt_floor(job.epoch))
        with ThreadPoolExecutor(max_workers=8) as pool:   # the tasks' (empty) logs
            list(pool.map(lambda t: _create(self.client, task_log.log_name(job.id, str(t)),
                                            logs_made), job.core.tasks))
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
        except Deposed as exc:
            self._let_go(job, str(exc))
            return
        except CommandError as exc:
            job.state, job.error = FAILED, str(exc)
            self._stop(job)                        # a failed job leaves no task behind
        except Exception as exc:
            log.exception("job %s failed", job.id)
            job.state, job.error = FAILED, f"internal error: {exc}"
            self._stop(job)
        job.seconds = round(time.monotonic() - job.started, 3)
        try:
            self._final_record(job)
            if job.state == FAILED:
                job.emit(f"job {job.id} failed: {job.error}")
        except Deposed as exc:        # the end is the new leader's to write
            self._let_go(job, str(exc))
        finally:
            job.ended.set()           # whatever happened, nobody waits for ever
            self._forget_old_jobs()

    def _let_go(self, job: Job, why: str) -> None:
        """This node was deposed while it drove `job`: leave its tasks alone, and forget
        the job (its new leader answers for it)."""
        log.warning("JOB %s let go: %s", job.id, why)
        if self.jobs.get(job.id) is job:
            del self.jobs[job.id]
        if not job.deposed:
            job.deposed = (f"vm{self.vm} is no longer the leader; job {job.id} goes on: "
                           f"follow it with 'job {job.id}'")
        self.leadership.check_soon()
        job.ended.set()

    def _forget_old_jobs(self) -> None:
        for job_id in old_ended_jobs(list(self.jobs.values()), KEEP_ENDED):
            self.jobs.pop(job_id, None)

    def _drive(self, job: Job) -> None:
        """Feed the core until it says done (or raise its failure)."""
        core, last_progress, shown = job.core, 0.0, None
        effects = core.tick(time.monotonic())
        while True:
            if job.deposed:
                raise Deposed(job.deposed)
            if self._execute(job, effects):
                return
            if job.state == STARTING and not core.not_running():
                job.state = RUNNING
                self.records.update(job.id, {"state": RUNNING}, job.epoch)
                log.info("JOB %s started in %.3f s", job.id, time.monotonic() - job.started)
            effects = self._news(job)
            effects += core.tick(time.monotonic())
            now = time.monotonic()
            totals = core.totals()
            if now - last_progress >= (PROGRESS_EVERY if totals != shown
                                       else QUIET_PROGRESS_EVERY):
                last_progress, shown = now, totals
                job.emit(progress_line(job))

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
            done_before = len(core.sources_done)
            effects = core.report(now, task, int(msg.get("epoch", 0)), msg["stats"],
                                  bool(msg.get("source_done")))
            if len(core.sources_done) != done_before:   # a next leader need not redo them
                self.records.update(job.id, {"sources_done": sorted(core.sources_done),
                                             "failures_recovered": core.failures_recovered},
                                    job.epoch)
            return effects
        if kind == "effects":                # a take-over's first (core.adopt)
            return list(data[0])
        if kind == "deposed":
            raise Deposed(job.deposed)
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
        self.records.update(job.id, {"state": STOPPING}, job.epoch)
        return []

    def _execute(self, job: Job, effects: list) -> bool:
        """Carry out the core's effects; True once the job is done. New placements are in
        the job's record before their attempts start (a next leader must not start an
        epoch twice)."""
        if job.deposed:
            raise Deposed(job.deposed)
        schedules = [e for e in effects if isinstance(e, SendSchedule)]
        starts = [e for e in effects if isinstance(e, StartTask)]
        recorded = not starts or self._record_placement(job, starts)
        for effect in effects:
            if isinstance(effect, StartTask):
                if recorded:
                    self._start(job, effect)
            elif isinstance(effect, StopAttempt):
                self._tell(effect.address, self._order(job, {
                    "t": m.STOP, "job": job.id, "task": effect.task.to_wire(),
                    "attempt": effect.epoch}))
            elif isinstance(effect, Say):
                job.emit(effect.text)
            elif isinstance(effect, Fail):
                raise CommandError(effect.reason)
        if schedules:           # only the newest matters
            last = schedules[-1]
            message = self._order(job, {"t": m.SCHEDULE, "job": job.id, "tasks": last.entries})
            if last.stopping:
                message["stopping"] = True
            for address in last.addresses:
                self._tell(address, message)     # a task gone is the core's to notice
        return any(isinstance(e, Done) for e in effects)

    def _record_placement(self, job: Job, starts: list) -> bool:
        """The new placements into the record, before their attempts start; if it cannot
        be written, the starts fail (the core places them again at its next tick)."""
        try:
            self.records.update(job.id, {"tasks": placement_to_wire(job.core.tasks),
                                         "failures_recovered": job.core.failures_recovered},
                                job.epoch, strict=True)
            return True
        except HydfsError as exc:
            for start in starts:
                job.events.put(("start_failed", start.task, start.epoch,
                                f"its placement could not be recorded: {exc}"))
            return False

    def _final_record(self, job: Job) -> None:
        """The job's end into its record: tried a few times (a next leader must not start
        an ended job again)."""
        for pause in (0.5, 1.0, 2.0, 4.0, None):
            try:
                self.records.update(job.id, {"state": job.state, "summary": summary(job),
                                             "error": job.error}, job.epoch, strict=True)
                return
            except HydfsError as exc:
                if pause is None:
                    log.error("JOB %s: its end is not in its record: %s", job.id, exc)
                    return
                time.sleep(pause)

    def _order(self, job: Job, message: dict) -> dict:
        """A message from this job's leader: its epoch (fencing) and where to report."""
        return dict(message, leader_epoch=job.epoch, leader=self.address, leader_vm=self.vm)

    def _tell(self, address: str, message: dict) -> None:
        """A one-way message to a task's inbox, off the job's thread (a host that is gone
        takes a connect timeout to say so)."""
        self._starts.submit(self.peers.tell, address, message)

    def _start(self, job: Job, effect: StartTask) -> None:
        spec = job.templates[effect.task]
        spec.epoch, spec.leader_epoch = effect.epoch, job.epoch
        wire_spec = spec.to_wire()
        order = self._order(job, {"t": m.START_TASK, "spec": wire_spec})

        def start():
            try:
                reply = self.peers.call(effect.vm, order, 60)
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
            self._tell(address, self._order(job, {"t": m.STOP, "job": job.id}))
        if final_reports:
            self._final_reports(job, set(running))
        # Every live worker, not only those the job's tasks are on: an attempt whose start
        # reply was lost runs where the leader does not know it.
        vms = sorted({st.vm for st in job.core.tasks.values() if st.vm} | set(self._workers()))
        with ThreadPoolExecutor(max_workers=max(len(vms), 1)) as pool:
            list(pool.map(lambda vm: self._stop_job_on(vm, job), vms))

    def _stop_job_on(self, vm: str, job: Job) -> None:
        try:
            self.peers.call(vm, self._order(job, {"t": m.STOP_JOB, "job": job.id}), 15)
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


def _create(client: HydfsClient, name: str, may_exist: bool) -> None:
    """An empty HyDFS file; one that exists already is fine if `may_exist` and it is empty."""
    try:
        client.create_bytes(name, b"")
    except HydfsError as exc:
        if not (may_exist and exc.code == FILE_EXISTS and client.size(name) == 0):
            raise
