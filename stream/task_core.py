"""A RainStorm task's protocol core: what every task attempt does with time and messages (pure).

Theory of operation. A task is one source or operator task of one job. Its core is a state
machine without I/O, in the style of etcd's raft: the shell (task.py) hands it each message
from its inbox (`step(now, message, payload)`), the passing of time (`tick(now)`) and an
empty inbox (`idle(now)`), and
executes the effects it returns (effects.py) in order. The source's and the operators'
own rules are in source_core.py and operator_core.py; this base holds what they share:

- the schedule: where every task of the job runs and which attempt (epoch) is current;
  entries from older epochs are ignored, and a schedule naming a newer attempt of this very
  task stops it (delivery.py); a schedule marked `stopping` tells sources to read no more;
- epochs on the wire: every message carries its sender's epoch, and messages from replaced
  attempts are dropped (delivery.py);
- leader epochs: schedules and stops carry their leader's epoch; those of a leader older
  than the newest heard from are dropped (a deposed leader that woke up, succession.py),
  and a newer leader becomes the one to report to (`Lead`);
- acks, gathered per upstream task and sent once per batch;
- the log: every record gets the next sequence number and the running counters, so a
  replacement continues both (task_log.py);
- the lease: an attempt that has heard from neither its node nor the leader for `lease`
  seconds stops itself (it was probably cut off, and has been replaced). That is only a
  speed-up: HyDFS's fences refuse whatever a replaced attempt still tries to write;
- reports to the leader every REPORT_EVERY seconds.

Time is the caller's monotonic seconds; nothing here reads a clock.
"""

from __future__ import annotations

from stream import delivery
from stream import messages as m
from stream.effects import AppendLog, Lead, Report, Route, Send, Stop
from stream.partition import route_block, stage_salt
from stream.scheduler import TaskId
from stream.task_log import Recovered
from stream.task_spec import TaskSpec

REPORT_EVERY = 0.5
SAMPLE_ROWS = 5


def upstream_of(bid: str, stage: int, num_tasks: int, chained: bool = False) -> TaskId:
    """The task that sent block `bid` to a stage-`stage` task (routing is deterministic;
    `chained`: the job's sources run OP1, and send to stage 2 themselves)."""
    if stage == 1 or chained:
        return TaskId(0, int(bid.split(":")[0]))
    return TaskId(1, route_block(stage_salt(1, bid), num_tasks))


class TaskCore:
    def __init__(self, spec: TaskSpec, recovered: Recovered, now: float):
        self.spec = spec
        self.task = spec.task
        self.epoch = spec.epoch
        self.recovered = recovered
        self.stats = dict(recovered.stats)
        self.seq = recovered.next_seq             # the next log record's number
        self.addresses: dict[TaskId, str] = {}    # where each task of the job runs
        self.epochs: dict[TaskId, int] = {}       # ... and which attempt of it is current
        self.stopped = False
        self.leader_epoch = spec.leader_epoch     # the newest leader heard from
        self.dropped_stale = 0                    # messages from replaced attempts
        self.first_error = ""                     # the first operator error it met
        self._acks: dict[TaskId, list[str]] = {}  # block ids to ack, by upstream task
        self._effects: list = []
        self._last_contact = now
        self._last_report = float("-inf")

    # -- inputs -----------------------------------------------------------------------------

    def start(self, now: float) -> list:
        """The first effects of the attempt (a replacement's redo of its log, reports)."""
        return self._take()

    def step(self, now: float, message: dict, payload: bytes = b"") -> list:
        """One message from the inbox; the effects it causes."""
        if self.stopped:
            return []
        if not self._for_me(message):
            return []
        kind = message["t"]
        if kind in (m.SCHEDULE, m.STOP) and not self._from_current_leader(message):
            self.dropped_stale += 1
            return []
        if kind == m.SCHEDULE:
            self._on_schedule(now, message)
        elif kind == m.STOP:
            self.finish("the job is over" if "task" not in message else "told to stop")
        else:
            self.on_message(now, message, payload)
        return self._take()

    def _for_me(self, message: dict) -> bool:
        """Is the message for this attempt? An inbox port of a dead attempt may be taken by
        another task's: what was meant for that one must not be taken for this one's."""
        if message.get("job") != self.spec.job:
            return False
        if message["t"] == m.STOP and "task" in message:       # a stop for one attempt
            return message["task"] == self.task.to_wire() and \
                message.get("attempt") == self.epoch
        if message["t"] in (m.BLOCK, m.ACK):
            return message.get("to") == self.task.to_wire()
        return True

    def _from_current_leader(self, message: dict) -> bool:
        """Is the order from the newest leader (or a newer one, which it becomes)?"""
        epoch = int(message.get("leader_epoch", 0))
        if epoch < self.leader_epoch:
            return False
        if epoch > self.leader_epoch:
            self.leader_epoch = epoch
            if message.get("leader"):
                self._effects.append(Lead(tuple(message["leader"]), epoch))
        return True

    def leader_may_stop(self, leader_epoch: int) -> bool:
        """May a leader at `leader_epoch` (a report's answer) tell this attempt to stop?"""
        return leader_epoch >= self.leader_epoch

    def tick(self, now: float) -> list:
        """Time passed: batches, resends, reports, the lease; the effects."""
        if self.stopped:
            return []
        if now - self._last_contact > self.spec.lease:
            self._stop(f"no word from node or leader for {self.spec.lease:g} s", lost=True)
            return self._take()
        self.on_tick(now)
        if now - self._last_report >= REPORT_EVERY:
            self._last_report = now
            self.report(**self.report_extras())
        return self._take()

    def idle(self, now: float) -> list:
        """The inbox is empty: what waits for the next batch boundary may go sooner."""
        if self.stopped:
            return []
        self.on_idle(now)
        return self._take()

    def contact(self, now: float) -> None:
        """The node or the leader answered: renew the lease."""
        self._last_contact = now

    def next_deadline(self, now: float) -> float:
        """When `tick` has something to do next."""
        return min(self._last_report + REPORT_EVERY, self._last_contact + self.spec.lease,
                   self.own_deadline(now))

    # -- for subclasses ---------------------------------------------------------------------

    def on_message(self, now: float, message: dict, payload: bytes) -> None:
        """A block or an ack."""

    def on_tick(self, now: float) -> None:
        """A batch boundary, resends."""

    def on_idle(self, now: float) -> None:
        """The inbox is empty (operator_core.py flushes its batch early)."""

    def on_moved(self, now: float, moved: list[TaskId]) -> None:
        """Resend what the moved tasks may not have received."""

    def on_stopping(self, now: float) -> None:
        """The job is stopping (`stop JOBID`): sources read nothing new."""

    def own_deadline(self, now: float) -> float:
        return now + REPORT_EVERY

    def report_extras(self) -> dict:
        return {}

    # -- effects ----------------------------------------------------------------------------

    def send(self, to: TaskId, message: dict, payload: bytes = b"") -> None:
        message["epoch"] = self.epoch
        self._effects.append(Send(to, message, payload))

    def log(self, record: dict) -> int:
        """Append `record` to the task's log under the next sequence number; that number."""
        seq = self.seq
        self.seq += 1
        record.update(seq=seq, epoch=self.epoch, stats=dict(self.stats))
        self._effects.append(AppendLog(record))
        return seq

    def emit(self, effect) -> None:
        self._effects.append(effect)

    def ack(self, bid: str) -> None:
        up = upstream_of(bid, self.task.stage, self.spec.num_tasks, self.spec.chained)
        self._acks.setdefault(up, []).append(bid)

    def flush_acks(self) -> None:
        for up, bids in self._acks.items():
            self.send(up, {"t": m.ACK, "job": self.spec.job, "from": self.task.to_wire(),
                           "to": up.to_wire(), "ids": bids})
        self._acks = {}

    def report(self, **extra) -> None:
        fields = dict({"stats": dict(self.stats)}, **extra)
        if self.first_error:
            fields["first_error"] = self.first_error
        self._effects.append(Report(fields))

    def note_error(self, result) -> None:
        """Keep the first error an operator `result` describes, for the job's summary."""
        if result.first_error and not self.first_error:
            self.first_error = result.first_error

    def finish(self, reason: str) -> None:
        """A normal end: the last report, then stop."""
        self.report(final=True, **self.report_extras())
        self._stop(reason)

    def _stop(self, reason: str, lost: bool = False) -> None:
        self.stopped = True
        self._effects.append(Stop(reason, lost))

    def is_stale(self, message: dict) -> bool:
        sender = TaskId.from_wire(message["from"])
        return delivery.is_stale(int(message.get("epoch", 0)), self.epochs.get(sender))

    def _take(self) -> list:
        effects, self._effects = self._effects, []
        return effects

    # -- the schedule -----------------------------------------------------------------------

    def _on_schedule(self, now: float, message: dict) -> None:
        moved = []
        for stage, index, address, epoch in message["tasks"]:
            task = TaskId(stage, index)
            if task == self.task:
                if delivery.replaced(self.epoch, epoch):
                    self._stop(f"replaced by attempt {epoch}")
                    return
                continue
            if not delivery.moves(self.epochs.get(task), epoch):
                continue
            self.epochs[task] = epoch
            if self.addresses.get(task) != address:
                self.addresses[task] = address
                self._effects.append(Route(task, address))
                moved.append(task)
        if moved:
            self.on_moved(now, moved)
        if message.get("stopping"):
            self.on_stopping(now)
