"""Running one job on its own thread, for the leader: the job's control core (job_core.py)
fed with what happens, and its effects carried out.

The leader's shell turns membership changes, the tasks' reports and exits, the outcomes of
starts and `stop` requests into the core's inputs, on the job's thread, and carries out the
core's effects: starts (on a thread pool, so a worker that does not answer holds up no
one), schedules, stops, console lines, in this order: a new placement is in the job's
record before its attempts start. Every order carries the job's leader epoch; once a write
to the record is fenced (a newer leader), the thread lets the job go and leaves its tasks
alone.

`JobDriver` is the part of `Leader` (leader.py) that does this; it uses the Leader's
`records`, `peers`, `leadership`, `jobs`, `_lock`, `address`, `vm`, `_starts` and
`_workers`.
"""

from __future__ import annotations

import logging
import queue
import time
from concurrent.futures import ThreadPoolExecutor

from cluster.commands import CommandError
from cluster.rpc import RemoteError, Unreachable
from hydfs.client import HydfsError
from stream import messages as m
from stream.job import Job, old_ended_jobs, progress_line, summary
from stream.job_core import Done, Fail, Say, SendSchedule, StartTask, StopAttempt
from stream.job_states import DONE, FAILED, RUNNING, STARTING, STOPPED, STOPPING
from stream.job_record import Deposed, placement_to_wire
from stream.scheduler import TaskId

log = logging.getLogger("stream")

PROGRESS_EVERY = 1.0
QUIET_PROGRESS_EVERY = 10.0    # ... when nothing moved (an idle following job)
SAMPLE_EVERY = 1.0             # the job's throughput and task rates, for the web page
PRINT_ROWS_PER_SECOND = 10
TURN = 0.2                     # seconds the job's thread waits for news before a tick
FINAL_REPORTS_WAIT = 5.0
REPORTED = ("in_flight", "window", "unacked", "pending",   # a report's figures job docs show
            "first_error")
KEEP_ENDED = 100               # ended jobs kept in memory (all stay in their records)


class JobDriver:
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
        with self._lock:                  # as the Leader holds jobs (_hold)
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
        core, last_progress, shown, last_sample = job.core, 0.0, None, 0.0
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
            if now - last_sample >= SAMPLE_EVERY:
                last_sample = now
                job.sample(now)
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
            epoch = int(msg.get("epoch", 0))
            if core.is_current(task, epoch):
                job.extras[task] = {k: msg[k] for k in REPORTED if k in msg}
                job.latency.update(task, epoch, msg.get("latency"), msg.get("latency_sum"))
            done_before = len(core.sources_done)
            effects = core.report(now, task, epoch, msg["stats"],
                                  bool(msg.get("source_done")))
            if len(core.sources_done) != done_before:   # a next leader need not redo them
                self.records.update(job.id, {"sources_done": sorted(core.sources_done),
                                             "done_stats": core.done_stats(),
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
        self._write_surely(job, {"state": STOPPING})   # a next leader must stop it too
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
        """The job's end into its record (a next leader must not start it again)."""
        self._write_surely(job, {"state": job.state, "summary": summary(job),
                                 "error": job.error})

    def _write_surely(self, job: Job, fields: dict) -> None:
        """A record line a next leader relies on: tried a few times (Deposed is raised)."""
        for pause in (0.5, 1.0, 2.0, 4.0, None):
            try:
                self.records.update(job.id, fields, job.epoch, strict=True)
                return
            except HydfsError as exc:
                if pause is None:
                    log.error("JOB %s: %s is not in its record: %s", job.id, fields, exc)
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
        spec.epoch, spec.leader_epoch, spec.first = effect.epoch, job.epoch, effect.first
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
