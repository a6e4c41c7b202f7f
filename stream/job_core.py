"""A job's control at the leader: which attempt of each task runs where, and what to do next
(pure).

Theory of operation. The leader's shell (leader.py) feeds this core what it learns, each an
input with the time: the live workers (`members`), the outcome of each start it was asked to
make (`started`, `start_failed`), task processes that exited (`exited`), the tasks' reports
(`report`), and the passing of time (`tick`). The core answers with effects (the dataclasses
below) for the shell to carry out.

Recovery is driven by one set: the tasks that are not running. Every `tick` places each of
them on a live worker (the least loaded, avoiding one that just failed to start a task) and
asks for a start, with a new epoch: every start of a task gets a higher one, which is what
fences the attempts before it (hydfs/fences.py). Whatever goes wrong with a start or a
running task only puts the task back into that set: a start refused or unanswered, a node
that dies while it starts, a worker declared failed, a process that exits. So no single
event can be missed: the set is re-evaluated until it is empty. A start's outcome that
comes back for an older epoch than the task's current one is ignored.

A task that keeps crashing (MAX_TASK_RESTARTS exits in a row, with no progress between)
fails the job: its operator is broken.
A job that makes no progress for `stall_timeout` seconds (no counter moved, no task
started) fails too, saying why: which tasks are not running, and what the last attempt to
start them answered. So no job hangs.

A leader that takes a job over from a deposed or dead one (leader.py, `take_over`) builds
a core from the job's record and `adopt`s the attempts the workers still run: those the
record names (or newer) run on, every other task is started again, with an epoch above
`epoch_floor` (succession.attempt_floor), higher than any the earlier leader could give.

The job is done when every source task has reported that all its blocks are safe. A
following job's last source is done only after `stop`: the schedule says `stopping`, and
sources read nothing new from then on (source_core.py). The stall rule spares a following
job whose tasks all run: it may wait for input for ever.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stream.scheduler import ALL_STAGES, TaskId, assign, reassign

MAX_TASK_RESTARTS = 3          # a task that keeps dying (a broken operator) fails the job
AVOID_FOR = 10.0               # seconds a worker that failed a start is passed over
SCHEDULE_EVERY = 2.0           # the schedule goes out again this often: one may be lost


@dataclass(frozen=True)
class StartTask:
    task: TaskId
    vm: str
    epoch: int
    first: bool = False      # no attempt of the task ever ran: nothing to fence or replay


@dataclass(frozen=True)
class SendSchedule:
    """Tell every running attempt where every task runs: [[stage, index, address, epoch]]."""
    entries: list
    addresses: list               # where to send it
    stopping: bool = False        # the job stops: sources read nothing new


@dataclass(frozen=True)
class StopAttempt:
    """Tell a replaced attempt to stop (a speed-up: fences refuse it anyway). It names the
    attempt: its address may be another attempt's by now."""
    address: str
    task: TaskId
    epoch: int


@dataclass(frozen=True)
class Say:
    """A line for the user's console."""
    text: str


@dataclass(frozen=True)
class Fail:
    reason: str


@dataclass(frozen=True)
class Done:
    pass


DOWN, STARTING, RUNNING, FINISHED = "down", "starting", "running", "finished"


@dataclass
class TaskState:
    vm: str | None = None
    epoch: int = 0
    phase: str = DOWN
    address: str | None = None
    stats: dict = field(default_factory=dict)
    restarts: int = 0                # exits since the task last made progress
    replacements: int = 0            # attempts started here to replace an earlier one
    last_error: str = ""
    heard_at: float = 0.0            # its last report (or start)


class JobCore:
    def __init__(self, num_tasks: int, workers: list[str], now: float, stall_timeout: float,
                 source_hosts: list[str] = (), silence: float = 30.0, following: bool = False,
                 epoch_floor: int = 0, stages: tuple = ALL_STAGES):
        """`silence`: a running attempt that has not reported for this long is taken for
        dead (its node's word of its exit may have been lost). `following`: a job that
        reads SRC until stopped, which may rightly be idle for ever. `epoch_floor`: every
        attempt this core starts gets a higher epoch. `stages`: those that have tasks
        (CHAINED_STAGES when the sources run OP1)."""
        placement = assign(workers, num_tasks, source_hosts=source_hosts, stages=stages)
        self.tasks = {task: TaskState(vm=vm) for task, vm in placement.items()}
        self.num_tasks = num_tasks
        self.live = list(workers)
        self.stall_timeout = stall_timeout
        self.silence = silence
        self._next_schedule = now + SCHEDULE_EVERY
        self.sources_done: set[int] = set()
        self.failures_recovered = 0
        self.finished = False
        self.following = following
        self.stopping = False
        self.epoch_floor = epoch_floor
        self._avoid: dict[str, float] = {}       # worker -> until when it is passed over
        self._last_progress = now
        self._effects: list = []

    # -- inputs -----------------------------------------------------------------------------

    def tick(self, now: float) -> list:
        if self.finished:
            return []
        for task, st in sorted(self.tasks.items()):
            if st.phase == RUNNING and now - st.heard_at > self.silence:
                self._down(task, f"no report for {self.silence:g} s")
                self.failures_recovered += 1
        self._place_down_tasks(now)
        if now >= self._next_schedule:
            self._send_schedule(now)
        if now - self._last_progress > self.stall_timeout and self._may_stall():
            self._fail(self._stall_reason())
        return self._take()

    def stop(self, now: float) -> list:
        """`stop JOBID`: sources read nothing new; the job ends when what they read is
        safe end to end (the schedule carries the word, again and again)."""
        if not self.finished and not self.stopping:
            self.stopping = True
            self._last_progress = now
            self._send_schedule(now)
        return self._take()

    def adopt(self, now: float, placement: dict, running: list, sources_done=(),
              failures_recovered: int = 0, stopping: bool = False, leader: str = "",
              done_stats: dict | None = None) -> list:
        """Take the job over: `placement` is the record's {task: (vm, epoch)}, `running`
        the attempts the live workers run, [(task, vm, epoch, address)]. The newest attempt
        of a task runs on if it is not older than the record's; every other one is told to
        stop, and tasks with none are started anew by the next `tick`. Attempts on the
        new leader's own node (`leader`, a worker until now) run on too. `done_stats`: the
        counters of the sources done ({index: stats}, `done_stats()`): such a source is
        not started again, and its process may be gone, so nothing would report them."""
        self.sources_done = set(sources_done)
        for index, stats in (done_stats or {}).items():
            if TaskId(0, int(index)) in self.tasks:
                self.tasks[TaskId(0, int(index))].stats = dict(stats)
        self.failures_recovered = failures_recovered
        self.stopping = stopping
        newest: dict[TaskId, tuple] = {}
        for task, vm, epoch, address in sorted(running, key=lambda a: a[2]):
            if task in self.tasks and (vm in self.live or vm == leader):
                if task in newest:
                    self._effects.append(StopAttempt(newest[task][2], task, newest[task][1]))
                newest[task] = (vm, epoch, address)
        for task, st in self.tasks.items():
            st.vm, st.epoch = placement.get(task, (st.vm, 0))
            attempt = newest.get(task)
            if attempt is not None and attempt[1] >= st.epoch:
                st.vm, st.epoch, st.address = attempt
                st.phase, st.heard_at = RUNNING, now
                continue
            if attempt is not None:
                self._effects.append(StopAttempt(attempt[2], task, attempt[1]))
            done = task.stage == 0 and task.index in self.sources_done
            st.phase, st.address = (FINISHED if done else DOWN), None
        self._last_progress = now
        self._send_schedule(now)
        if len(self.sources_done) == self.num_tasks:
            self.finished = True            # the earlier leader died just before the end
            self._effects.append(Done())
        return self._take()

    def members(self, now: float, workers: list[str], failed=()) -> list:
        """The live workers now, and those that failed or left (`failed`: a node restarted
        quickly is live again, as a new member, but ran none of its tasks any more): tasks
        on a worker that is gone are down."""
        gone = (set(self.live) - set(workers)) | set(failed)
        self.live = list(workers)
        lost = [t for t, st in self.tasks.items() if st.vm in gone and st.phase != DOWN]
        # one failure per worker lost: two killed at once and detected together are two
        self.failures_recovered += len({self.tasks[task].vm for task in lost})
        for task in lost:
            self._down(task, f"vm{self.tasks[task].vm} failed")
        return self._take()

    def started(self, now: float, task: TaskId, epoch: int, address: str) -> list:
        st = self.tasks[task]
        if epoch != st.epoch or st.phase != STARTING:
            self._effects.append(StopAttempt(address, task, epoch))   # overtaken by a newer one
            return self._take()
        st.phase, st.address, st.heard_at = RUNNING, address, now
        self._last_progress = now
        self._send_schedule(now)
        return self._take()

    def start_failed(self, now: float, task: TaskId, epoch: int, reason: str) -> list:
        st = self.tasks[task]
        if epoch != st.epoch or st.phase != STARTING:
            return []
        self._avoid[st.vm] = now + AVOID_FOR
        self._effects.append(Say(f"could not start task {task} on vm{st.vm}: {reason}"))
        st.phase, st.last_error = DOWN, reason
        return self._take()

    def exited(self, now: float, task: TaskId, epoch: int, code) -> list:
        st = self.tasks[task]
        if epoch != st.epoch or st.phase == DOWN:
            return []
        st.restarts += 1
        if st.restarts > MAX_TASK_RESTARTS:
            self._fail(f"task {task} failed {st.restarts} times (an operator error? see "
                       f"logs/vmNN-tasks.log); job stopped")
            return self._take()
        self._down(task, f"its process exited with status {code}")
        self.failures_recovered += 1
        return self._take()

    def report(self, now: float, task: TaskId, epoch: int, stats: dict,
               source_done: bool = False) -> list:
        st = self.tasks[task]
        if epoch != st.epoch:
            return []                   # from a replaced attempt: not believed
        st.heard_at = now
        if stats != st.stats:
            st.stats = dict(stats)
            st.restarts = 0              # it works: earlier exits were not its operator's
            self._last_progress = now
        if source_done and task.stage == 0 and task.index not in self.sources_done:
            self.sources_done.add(task.index)
            self._last_progress = now
            if st.phase == DOWN:    # it exited after it said so: nothing left to redo
                st.phase, st.address = FINISHED, None
            if len(self.sources_done) == self.num_tasks:
                self.finished = True
                self._effects.append(Done())
        return self._take()

    # -- views ------------------------------------------------------------------------------

    def done_stats(self) -> dict[str, dict]:
        """The counters of the sources that are done, by index: for the job's record."""
        return {str(i): dict(self.tasks[TaskId(0, i)].stats) for i in sorted(self.sources_done)}

    def running(self) -> dict[TaskId, str]:
        """Address of every running attempt."""
        return {t: st.address for t, st in self.tasks.items() if st.phase == RUNNING}

    def not_running(self) -> list[TaskId]:
        return sorted(t for t, st in self.tasks.items() if st.phase not in (RUNNING, FINISHED))

    def is_current(self, task: TaskId, epoch: int) -> bool:
        """Is `epoch` the attempt of `task` this job runs (or starts) now?"""
        st = self.tasks.get(task)
        return st is not None and st.epoch == epoch

    def totals(self) -> dict:
        def total(stage, key):
            return sum(st.stats.get(key, 0) for t, st in self.tasks.items() if t.stage == stage)
        # a source that runs OP1 (chained) counts OP1's output, drops and errors itself,
        # and OP2's as op2_* when it runs that too (a sink)
        return {"in": total(0, "in"), "op1_out": total(0, "out") + total(1, "out"),
                "out": total(2, "out") + total(0, "op2_out"),
                "dropped": sum(total(stage, "dropped") for stage in ALL_STAGES)
                + total(0, "op2_dropped"),
                "errors": sum(total(stage, "errors") for stage in ALL_STAGES)
                + total(0, "op2_errors")}

    # -- placing ----------------------------------------------------------------------------

    def _place_down_tasks(self, now: float) -> None:
        """Start every task that is not running or starting: where it was if that worker
        is fine (a crashed process restarts in place), else on the least loaded live
        worker that has not just failed a start (scheduler.reassign)."""
        # the last stage first: a source's first schedule then names where to send
        down = sorted((t for t, st in self.tasks.items() if st.phase == DOWN),
                      key=lambda t: (-t.stage, t.index))
        usable = [vm for vm in self.live if self._avoid.get(vm, 0) <= now] or self.live
        if not down or not usable:
            return                       # no worker at all: wait (the stall bound applies)
        moves = reassign({t: st.vm for t, st in self.tasks.items()}, usable)
        for task in down:
            st = self.tasks[task]
            vm = moves.get(task, st.vm)
            if st.epoch and vm != st.vm:
                self._effects.append(Say(f"task {task} moves from vm{st.vm} to vm{vm}"))
            first = not st.epoch             # (a taken-over job's record holds its epochs)
            if not first:
                st.replacements += 1
            st.vm, st.phase, st.address = vm, STARTING, None
            st.epoch = max(st.epoch, self.epoch_floor) + 1
            self._effects.append(StartTask(task, vm, st.epoch, first))

    def _down(self, task: TaskId, why: str) -> None:
        """The attempt of `task` is gone: start another, unless it is a source that has
        done all its work (it would only read its partition again)."""
        st = self.tasks[task]
        if st.phase == RUNNING and st.address:
            self._effects.append(StopAttempt(st.address, task, st.epoch))
        done = task.stage == 0 and task.index in self.sources_done
        st.phase, st.address, st.last_error = (FINISHED if done else DOWN), None, why

    def _send_schedule(self, now: float) -> None:
        self._next_schedule = now + SCHEDULE_EVERY
        entries = [[t.stage, t.index, st.address, st.epoch]
                   for t, st in sorted(self.tasks.items()) if st.phase == RUNNING]
        self._effects.append(SendSchedule(entries, [e[2] for e in entries], self.stopping))

    def _may_stall(self) -> bool:
        """A following job with every task running may wait for input for ever."""
        return not self.following or self.stopping or bool(self.not_running())

    def _stall_reason(self) -> str:
        waiting = self.not_running()
        if waiting:
            why = "; ".join(f"{t}: {self.tasks[t].last_error or self.tasks[t].phase}"
                            for t in waiting[:6])
            return (f"no progress for {self.stall_timeout:g} s: {len(waiting)} tasks are not "
                    f"running ({why}); live workers: {', '.join(self.live) or 'none'}")
        return (f"no progress for {self.stall_timeout:g} s with every task running "
                f"(sources done {len(self.sources_done)}/{self.num_tasks})")

    def _fail(self, reason: str) -> None:
        self.finished = True
        self._effects.append(Fail(reason))

    def _take(self) -> list:
        effects, self._effects = self._effects, []
        return effects
