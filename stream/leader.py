"""The RainStorm leader: runs jobs from start to summary, through worker failures, and
answers for them (`jobs`, `job JOBID`, `stop JOBID`).

`RainStorm OP1 OP2 SRC DEST NUM_TASKS [options]` on the leader node:

1. check everything a user can get wrong (operators, SRC, DEST, NUM_TASKS) before starting;
2. record the job in HyDFS (job_record.py); take its snapshot of SRC (the appends settled
   on its replicas, read in merge order from any of them), create DEST and one empty log
   per task, cut the snapshot into NUM_TASKS line-aligned partitions, and record the tasks'
   specs (job_setup.py);
3. run the job on a thread of its own: its control core (job_core.py) places the
   3 x NUM_TASKS tasks (2 x NUM_TASKS when a stateless OP1 runs inside the sources,
   `[stream] chain`, NUM_TASKS when a stateless OP2 does too) on the live workers, and whenever one is not running (a start
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

Setting a job up is job_setup.py's; running it, on its thread, job_driver.py's (the
`JobDriver` part of this class). This module holds the rest: the news from tasks, workers
and membership, taking over and letting go, and the commands.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from cluster.commands import CommandError, Context
from cluster.messages import OK
from cluster.metrics import Gauge
from cluster.rpc import Peers, RemoteError, Unreachable
from hydfs.client import HydfsClient, HydfsError
from hydfs.messages import FENCED
from stream import messages as m
from stream.job import Job, listing, listing_of_record, summary, task_docs
from stream.job_core import JobCore
from stream.job_driver import JobDriver
from stream.job_record import Deposed, JobExists, JobRecords, placement_of
from stream.job_setup import JobSetup
from stream.job_states import ENDED, FAILED, RUNNING, STOPPING
from stream.job_spec import JobSpec, parse_job
from stream.metrics import job_metrics
from stream.scheduler import TaskId, workers_for
from stream.succession import attempt_floor
from stream.task_spec import TaskSpec

log = logging.getLogger("stream")

JOB_ID = re.compile(r"[0-9a-f]{8,32}")   # a job id a request may choose
ANNOUNCE_TIMEOUT = 5.0
RETAKE_EVERY = 2.0             # seconds between tries to take over a job not taken yet
RETAKE_MAX = 30.0              # ... at most, once they grew


class Leader(JobDriver):
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
        self.setup = JobSetup(config, client, self.lease, self.stall_timeout,
                              self.resend_after)

    def routes(self) -> dict:
        return {m.REPORT: self.handle_report, m.TASK_EXIT: self.handle_task_exit}

    def metrics(self) -> list:
        """This leader's jobs' metrics (stream/metrics.py) and whether it leads; nothing of
        the jobs once it stopped leading (its successor exports them)."""
        leads = Gauge("rainstorm_leader", "1 if this node is the leader")
        epoch = Gauge("rainstorm_leader_epoch", "the leader epoch this node leads at")
        with self._lock:
            active = self.active
            jobs = [job for job in self.jobs.values()
                    if active and job.epoch and not job.deposed]
        leads.set(1 if active else 0)
        epoch.set(self.epoch if active else 0)
        return [leads, epoch, *job_metrics(jobs, time.monotonic())]

    # -- news from tasks, workers and membership: to the job's thread -----------------------

    def handle_report(self, conn, msg: dict) -> None:
        """A task's counters, to its job's thread; the answer tells an attempt that this
        leader does not run (any more) to stop: its job ended, or it was replaced. A node
        that does not lead never says stop (the leader's schedules tell tasks where it is)."""
        job = self.jobs.get(msg.get("job"))
        drives, stop = self._drives(job), None
        if not drives:                    # not ours to judge: the leader's schedule will
            if job is None and self.active and self._old_records.get(msg.get("job")):
                stop = "its job is not running"
        elif job.state in ENDED:
            stop = "its job is not running"
        elif job.core is not None and not job.core.is_current(TaskId.from_wire(msg["task"]),
                                                              int(msg.get("epoch", 0))):
            stop = "a newer attempt runs"
        else:
            job.events.put(("report", msg))
        claim = self.leadership.current()
        epoch = job.epoch if drives else (self.epoch if self.active else 0)
        conn.send({"t": OK, "stop": stop, "leader_epoch": epoch,
                   "leader": claim.to_wire() if claim else None})

    def handle_task_exit(self, conn, msg: dict) -> None:
        job = self.jobs.get(msg.get("job"))
        if self._drives(job) and job.state not in ENDED:
            job.events.put(("exit", msg))
        conn.send({"t": OK})

    def on_membership(self, events) -> None:
        if any(e.kind in ("fail", "leave", "join") for e in events):
            workers = self._workers()
            failed = sorted({e.member.vm for e in events
                             if e.kind in ("fail", "leave") and e.member})
            for job in list(self.jobs.values()):
                if self._drives(job) and job.state not in ENDED:
                    job.events.put(("members", workers, failed))

    def _drives(self, job: Job | None) -> bool:
        """Is `job` this node's to drive (it leads at the job's epoch), also while it is
        still taking the other jobs over?"""
        return job is not None and job.epoch > 0 and self.leadership.leads_at(job.epoch)

    def _hold(self, job: Job) -> bool:
        """Drive `job` here from now on, unless this node no longer leads at its epoch or
        holds that job at this epoch or a newer one already (two take-overs of one job)."""
        with self._lock:
            held = self.jobs.get(job.id)
            if not self.leadership.leads_at(job.epoch) or (
                    held is not None and held.epoch >= job.epoch and not held.deposed):
                return False
            self.jobs[job.id] = job
            return True

    def _workers(self) -> list[str]:
        return workers_for([member.vm for member in self.membership.members()], self.vm)

    # -- leading, and letting go ------------------------------------------------------------

    def take_over(self, epoch: int) -> None:
        """Lead at `epoch`: fence the job index and every running job's record, learn what
        the workers run, and drive each job on from its record. Jobs whose record cannot be
        read or fenced now, and jobs to set up again, are done after this node is active, by
        a thread of their own. A fence refused (a newer leader) raises: this node does not
        lead."""
        with self._lock:
            self.epoch = epoch
        self.records.fence_index(epoch)
        running = self._announce(epoch)
        ids = [i for i in self.records.job_ids()
               if not (i in self.jobs and self.jobs[i].state in ENDED)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            later = [job_id for job_id, done in zip(ids, pool.map(
                lambda job_id: self._take_job(job_id, epoch, running), ids)) if not done]
        with self._lock:
            self.active = self.leadership.leads_at(epoch)
        for job in list(self.jobs.values()):     # what membership said meanwhile
            if job.epoch == epoch and job.state not in ENDED:
                job.events.put(("members", self._workers(), []))
        if later:
            threading.Thread(target=self._retake, args=(later, epoch, running), daemon=True,
                             name="retake").start()

    def _take_job(self, job_id: str, epoch: int, running: list, set_up: bool = False) -> bool:
        """Take one job over; False if that must wait: its record cannot be read or fenced
        now, or (unless `set_up`) its leader died setting it up and it is to be set up here.
        Raises Deposed if a newer leader fenced its record."""
        try:
            record = self._record(job_id)
            if not record or record.get("state") in ENDED:
                return True
            record = self.records.fence(job_id, epoch)
            if not record or record.get("state") in ENDED:
                return True
            if not record.get("templates"):          # its leader died setting it up
                return set_up and self._set_up_again(record, epoch)
            job = self._resumed(record, running, epoch)
        except HydfsError as exc:
            if exc.code == FENCED:
                raise Deposed(f"a newer leader fenced job {job_id}'s record") from None
            log.warning("JOB %s not taken over yet: %s", job_id, exc)
            return False
        except (KeyError, TypeError, ValueError) as exc:
            log.error("JOB %s cannot be taken over: its record is damaged (%r)", job_id, exc)
            return True
        if self._hold(job):
            threading.Thread(target=self._run_job, args=(job,), daemon=True,
                             name=f"job-{job.id}").start()
            log.info("JOB %s taken over at epoch %d", job.id, epoch)
        return True

    def _set_up_again(self, record: dict, epoch: int) -> bool:
        """A job whose leader died before any of its tasks started: set it up here."""
        spec = JobSpec.from_wire(record["spec"])
        job = Job(record["job"], spec, epoch=epoch,
                  created=float(record.get("created", time.time())))
        if not self._hold(job):
            return True
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

    def _retake(self, job_ids: list, epoch: int, running: list) -> None:
        """Take over, with a growing pause, what could not be taken over at first."""
        pause = 0.0
        while job_ids and self.leadership.leads_at(epoch):
            time.sleep(pause)
            pause = min(max(2 * pause, RETAKE_EVERY), RETAKE_MAX)
            try:
                job_ids = [j for j in job_ids
                           if not self._take_job(j, epoch, running, set_up=True)]
            except Deposed:
                self.leadership.check_soon()
                return
            running = self._announce(epoch) if job_ids else running

    def step_down(self, successor) -> None:
        """Another leader took over (or the take-over failed): drive nothing any more. The
        tasks run on; whoever waits for a job here is told where to follow it."""
        why = (f"vm{self.vm} is no longer the leader (vm{successor.vm} took over); the job "
               f"goes on: follow it with 'job {{job}}'" if successor else
               f"vm{self.vm} stopped leading; the job goes on: follow it with 'job {{job}}'")
        with self._lock:
            self.active = False
            jobs = [job for job in self.jobs.values()
                    if job.state not in ENDED and job.epoch != 0 and not job.deposed]
            for job in jobs:
                job.deposed = why.format(job=job.id)
        for job in jobs:
            job.events.put(("deposed",))
            job.ended.set()                # whoever waits is told now, not at its next turn

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
        for wire_spec in record["templates"]:
            template = TaskSpec.from_wire(wire_spec)
            template.stopping = template.stopping or job.state == STOPPING
            job.templates[template.task] = template
        job.core = JobCore(spec.num_tasks, self._workers(), time.monotonic(),
                           self.stall_timeout, silence=self.lease, following=spec.follow,
                           epoch_floor=attempt_floor(epoch),
                           stages=tuple(sorted({t.stage for t in job.templates})))
        effects = job.core.adopt(
            time.monotonic(), placement_of(record),
            [(task, vm, epoch, address) for job_id, task, vm, epoch, address in running
             if job_id == job.id],
            record.get("sources_done", ()), int(record.get("failures_recovered", 0)),
            job.state == STOPPING, leader=self.vm, done_stats=record.get("done_stats"))
        job.events.put(("effects", effects))
        return job

    # -- the commands -----------------------------------------------------------------------

    def run(self, ctx: Context, args: list[str]) -> dict:
        """`RainStorm ...`: start a job; its summary once it ends (`--detach`: at once).
        The job's id is the request's (`ctx.request`, chosen where the user typed it): a
        request that arrives again (relayed to a successor after the leader was lost on
        the way, or read late by a leader that was frozen) follows the job it started
        instead of starting another."""
        spec = parse_job(args)
        epoch = self._must_lead()
        job_id = ctx.request if JOB_ID.fullmatch(ctx.request or "") else uuid.uuid4().hex[:8]
        if job_id == ctx.request and (job_id in self.jobs or self._readable_record(job_id)):
            return self._again(ctx, spec, job_id, epoch)
        job = Job(job_id, spec, epoch=epoch)
        ops = self.setup.check_operators(ctx, spec)
        self.setup.check_names(spec)
        try:
            self.records.create(job.id, {"spec": spec.to_wire(), "cwd": ctx.cwd}, epoch)
        except JobExists:
            return self._again(ctx, spec, job_id, epoch)
        except Deposed as exc:
            raise self._deposed(str(exc)) from None
        except HydfsError as exc:
            raise CommandError(f"job {job.id} not started: its record could not be written "
                               f"({exc})") from None
        if not self._hold(job):
            raise self._deposed(f"vm{self.vm} was deposed as job {job.id} began")
        ctx.note({"job": job.id})
        if not spec.detach:
            job.consoles.append(ctx)
        self._prepare(ctx, job, dest_made=False, ops=ops)
        if spec.detach:
            return {"job": job.id, "state": RUNNING}
        return self._await(job)

    def _again(self, ctx: Context, spec: JobSpec, job_id: str, epoch: int) -> dict:
        """The same `RainStorm` request once more: follow the job it started (`--detach`:
        say that it runs)."""
        job = self._held(job_id, epoch)
        if spec.detach:
            return {"job": job_id, "state": job.state if job else RUNNING}
        return self.wait(ctx, job_id)

    def _prepare(self, ctx: Context, job: Job, dest_made: bool, ops=None) -> None:
        """Snapshot, DEST, partitions, the tasks' logs and specs, into the record; then the
        job's thread. `dest_made`: an earlier leader may have made DEST and the logs (and
        nothing else: no task starts before the specs are in the record). On failure the
        job is failed (or, if this node was deposed meanwhile, left to the new leader)."""
        try:
            ops = ops or self.setup.check_operators(ctx, job.spec)
            self.setup.plan(ctx, job, ops, self._workers(), made=dest_made)
            self.records.update(job.id, {"templates": [
                job.templates[t].to_wire() for t in sorted(job.templates)]}, job.epoch,
                strict=True)
        except (CommandError, HydfsError, Deposed) as exc:
            if isinstance(exc, Deposed) or not self.leadership.leads_at(job.epoch):
                self._let_go(job, str(exc))
                raise self._deposed(f"vm{self.vm} was deposed while it set up job {job.id}") \
                    from None
            job.state, job.error = FAILED, str(exc)
            try:
                self.records.update(job.id, {"state": FAILED, "error": job.error}, job.epoch)
            except Deposed:
                pass
            job.ended.set()
            raise CommandError(job.error) from None
        threading.Thread(target=self._run_job, args=(job,), daemon=True,
                         name=f"job-{job.id}").start()

    def _deposed(self, why: str) -> CommandError:
        """The error that sends a request on to the new leader (NOT_LEADER)."""
        self.leadership.check_soon()
        return CommandError(why, code=m.NOT_LEADER)

    def _held(self, job_id: str, epoch: int) -> Job | None:
        """The job this node drives, taking it over now if its record says it runs but no
        leader took it over yet (it is still on the take-over's list): a request about it
        must not hear 'no such job' or get an old answer."""
        job = self.jobs.get(job_id)
        if job is not None:
            return job
        record = self._readable_record(job_id)
        if not record or record.get("state") in ENDED:
            return None
        try:
            taken = self._take_job(job_id, epoch, self._announce(epoch), set_up=True)
        except Deposed as exc:
            raise self._deposed(str(exc)) from None
        if not taken or job_id not in self.jobs:
            raise CommandError(f"job {job_id} is not taken over yet", code=m.NOT_LEADER)
        return self.jobs[job_id]

    def wait(self, ctx: Context, job_id: str) -> dict:
        """`job JOBID --wait`: follow a job to its end; its summary."""
        job = self._held(job_id, self._must_lead())
        if job is None:
            doc = self._recorded(job_id)
            if doc.get("state") == FAILED:
                raise CommandError(doc.get("error") or f"job {job_id} failed")
            return doc
        if job.state not in ENDED:
            job.consoles.append(ctx)
        return self._await(job)

    def _must_lead(self) -> int:
        """The epoch this node leads at (NOT_LEADER if it does not)."""
        with self._lock:
            if self.active:
                return self.epoch
        raise CommandError(f"vm{self.vm} does not lead (vm{self.leadership.leader_vm()} "
                           f"does)", code=m.NOT_LEADER)

    def stop(self, ctx: Context, job_id: str) -> dict:
        """`stop JOBID`: the sources read nothing new; the summary once the job ends."""
        job = self._held(job_id, self._must_lead())
        if job is None:
            return self._recorded(job_id)         # ended under an earlier leader
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
        doc["history"] = list(job.history)
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
        record = self._readable_record(job_id)
        if not record:
            raise CommandError(f"no such job {job_id}")
        return dict(record.get("summary") or {"job": job_id}, state=record.get("state"),
                    tasks=[])

    def _record(self, job_id: str) -> dict | None:
        """A job's record, read from HyDFS once it ended (it changes no more). Raises
        HydfsError."""
        record = self._old_records.get(job_id) or self.records.read(job_id)
        if record and record.get("state") in ENDED:
            self._old_records[job_id] = record
        return record

    def _readable_record(self, job_id: str) -> dict | None:
        """`_record` for a command: a record that cannot be read is the command's error."""
        try:
            return self._record(job_id)
        except HydfsError as exc:
            raise CommandError(f"job {job_id}: its record is unreadable: {exc}") from None
