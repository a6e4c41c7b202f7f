"""A RainStorm task process's shell: the I/O around its core (task_core.py).

The core decides; this module reads the inbox, the clock and the source partition, and
executes the core's effects (effects.py) in the order given, each done before the next:

    AppendLog   the task's log in HyDFS, append id (this attempt, record seq)
    AppendDest  HYDFS_DEST, append id (this attempt, commit seq; a sink's: its reach)
    Route       the next sends to that task go to its new address
    Send        to a task's inbox, in order, across its moves (task_io.Sender)
    Report      to the leader, from a thread of its own (`Reporter`): a leader that is gone
                or paused holds up no output; a lost report is logged, not fatal
    Lead        a newer leader: report to it
    Stop        the end of this attempt

Start-up fences before it reads (hydfs/fences.py), so that what it reads cannot grow behind
its back: first the task's log, then it is read and replayed (task_log.py); the last stage
(or a source that is a sink) then fences DEST, whose sealed set says which commits earlier
attempts appended (a sink's: how far their output reached). A task's
first attempt (`spec.first`: the leader never started one before) skips all three: its log
is empty and no earlier attempt can write; a later attempt's fence shuts it out.

A source reads its partition as a range of the job's snapshot of SRC (`read_view`), from
its node's own copy directly when the node has one (local_view.py); the
follower also reads the batches its core logged, asks for SRC's settled appends when the
core says a poll is due, and runs a `Watcher` thread that waits at a replica of SRC for
news and wakes the loop with a NEWS item in the inbox.

If HyDFS refuses an append as `fenced`, a newer attempt of this task runs: the shell stops at
once. Any other failure of an append is raised: the process exits, its node tells the
leader, and the leader starts the task again.

The lease: every answer from the node renews it (TaskCore.contact); when
nothing was asked of either for a third of the lease, the shell asks its node, which also
says whether this attempt should stop (its node was declared failed, or restarted it).
"""

from __future__ import annotations

import logging
import threading
import time

from cluster.rpc import RemoteError, Unreachable
from hydfs.idset import IdSet
from hydfs.messages import FENCED
from stream import messages as m
from stream import task_log
from stream.effects import AppendDest, AppendLog, Lead, Report, Route, Send, Stop
from stream.local_view import LocalView, Unusable
from stream.metrics import BatchLatency
from stream.node_link import NodeLink
from stream.operator_core import OperatorCore
from stream.source_core import SourceCore
from stream.task_core import TaskCore
from stream.task_io import Inbox, Sender, drain
from stream.task_spec import TaskSpec

log = logging.getLogger("task")

READ_PIECE = 8 << 20              # a source reads its partition this much per request
LOG_READS, LOG_READ_PAUSE = 20, 0.5   # reading a log that disagrees with its seal


class Fenced(Exception):
    """A newer attempt of this task fenced its files: this one must stop."""


NEWS = object()                   # (NEWS, held): a replica of SRC holds an append not seen
WATCH_FOR = 10.0                  # seconds one watch waits at a replica


class Watcher(threading.Thread):
    """A following source's subscription to SRC: it waits at a replica (hydfs.watch) until
    that one holds an append the source has not seen, then puts NEWS in the inbox and waits
    until the source has polled, so that an idle source costs one request per WATCH_FOR
    seconds and a busy one at most one per poll."""

    def __init__(self, link: NodeLink, src: str, taken: IdSet, items):
        super().__init__(daemon=True, name="watch")
        self.link, self.src, self.items = link, src, items
        self.seen = taken
        self._polled = threading.Event()
        self._stopped = False
        self.start()

    def polled(self, taken: IdSet) -> None:
        self.seen = self.seen.union(taken)
        self._polled.set()

    def stop(self) -> None:
        self._stopped = True
        self._polled.set()

    def run(self) -> None:
        while not self._stopped:
            seen = self.seen
            try:
                held = self.link.watch(self.src, seen, WATCH_FOR)
            except (Unreachable, RemoteError, OSError):
                held = None
                time.sleep(1.0)
            if held is None or seen.covers(held):
                continue
            self.seen = seen.union(held)
            self._polled.clear()
            self.items.put((NEWS, held))
            self._polled.wait(WATCH_FOR)


class Reporter(threading.Thread):
    """Sends the task's reports to the leader off the task's loop. Only the newest report
    waits to be sent (each carries the running counters). The leader's answer may say stop
    (`stop_reason`); the loop acts on it, if that leader is not older than the newest the
    task heard from."""

    def __init__(self, link: NodeLink):
        super().__init__(daemon=True, name="report")
        self.link = link
        self.stop_said: tuple[int, str] | None = None    # (leader epoch, why)
        self._next: dict | None = None
        self._final = False              # the final report is sent: nothing after it
        self._ready = threading.Condition()
        self._sending = threading.Lock()  # one report at a time, in order
        self._failures = 0
        self.start()

    def submit(self, message: dict) -> None:
        with self._ready:
            self._next = message
            self._ready.notify()

    def send_final(self, message: dict) -> None:
        """Send the final report now, on the caller's thread, after any report on its way
        (an older one arriving later would undo its counts) and instead of any waiting."""
        with self._ready:
            self._next, self._final = None, True
        with self._sending:
            self._send(message)

    def _send(self, message: dict) -> None:
        try:
            reply = self.link.report(message)
        except (Unreachable, RemoteError) as exc:
            self._failures += 1
            if self._failures in (1, 10) or self._failures % 100 == 0:
                log.warning("report to the leader failed (%d so far): %s", self._failures, exc)
            return
        if reply.get("stop") and not message.get("final"):
            self.stop_said = (int(reply.get("leader_epoch", 0)), str(reply["stop"]))

    def run(self) -> None:
        while True:
            with self._ready:
                while self._next is None:
                    self._ready.wait()
                message, self._next = self._next, None
            with self._sending:
                if not self._final:
                    self._send(message)


class TaskRunner:
    def __init__(self, spec: TaskSpec, link: NodeLink, inbox: Inbox, operator=None,
                 last_operator=None):
        self.spec = spec
        self.link = link
        self.inbox = inbox
        self.operator = operator
        self.last_operator = last_operator       # OP2, run by a source that is a sink
        self.log_file = task_log.log_name(spec.job, spec.name)
        self.senders: dict = {}
        self.core: TaskCore | None = None
        self.reason = ""
        self.lost = False          # stopped on its own: its node must tell the leader
        self._last_asked = time.monotonic()
        self._read_at = spec.partition.offset if spec.partition else 0
        self._view = spec.view_ids     # the job's snapshot of SRC: what the partition is of
        self._batch_at = 0             # where in the batch being read
        self._local: LocalView | None = None   # the node's copy of SRC, read directly
        self._local_asked = False
        self._watcher: Watcher | None = None
        self.reporter = Reporter(link)
        self.latency = BatchLatency()

    # -- start-up ---------------------------------------------------------------------------

    def run(self) -> str:
        """Run the attempt to its end; why it ended."""
        try:
            core = self.core = self._start()
            self._execute(core.start(time.monotonic()))
            while not core.stopped:
                self._turn(core)
        except Fenced as exc:
            log.warning("%s: %s", self.spec.name, exc)
            return str(exc)
        finally:
            if self._watcher is not None:
                self._watcher.stop()
            if self._local is not None:
                self._local.close()
            for operator in (self.operator, self.last_operator):
                if operator is not None:
                    operator.close()
        return self.reason

    def _start(self) -> TaskCore:
        writes_dest = self.spec.writes_dest
        if self.spec.first:        # no attempt before it: nothing to fence, nothing to redo
            recovered, dest_sealed = task_log.recover(b""), IdSet() if writes_dest else None
        else:
            recovered = task_log.recover(self._read_log(self._fence(self.log_file)))
            dest_sealed = self._fence(self.spec.dest) if writes_dest else None
        now = time.monotonic()
        if self.spec.task.stage == 0:
            # the stream's start on this clock: a replacement catches up on what fell due
            origin = now - max(0.0, time.time() - self.spec.rate_origin) \
                if self.spec.rate_origin else None
            return SourceCore(self.spec, recovered, now, self.operator, origin,
                              self.last_operator, dest_sealed)
        return OperatorCore(self.spec, recovered, now, self.operator, dest_sealed)

    def _read_log(self, sealed) -> bytes:
        """The log, as its fence sealed it: a replica that answers with other records (one
        that rejoined and has not heard of the fence yet) is not believed; read again."""
        for _ in range(LOG_READS):
            data = self._ask(lambda: self.link.read_all(self.log_file))
            if task_log.record_ids(data, self.spec.writer_key) == sealed:
                return data
            time.sleep(LOG_READ_PAUSE)
        raise RuntimeError(f"{self.log_file}: no replica answers with its sealed records")

    def _fence(self, name: str):
        try:
            return self._ask(lambda: self.link.fence(name, self.spec.writer_key, self.spec.epoch))
        except RemoteError as exc:
            if exc.code == FENCED:
                raise Fenced(f"attempt {self.spec.epoch} was replaced before it began") from None
            raise

    # -- the loop ---------------------------------------------------------------------------

    def _turn(self, core: TaskCore) -> None:
        said = self.reporter.stop_said
        if said is not None and core.leader_may_stop(said[0]):
            raise Fenced(f"attempt {self.spec.epoch}: the leader says stop ({said[1]})")
        now = time.monotonic()
        if isinstance(core, SourceCore) and core.wants_data:
            data, last = self._read_source()
            self._execute(core.feed(time.monotonic(), data, last), now)
        elif isinstance(core, SourceCore) and core.batch_to_read is not None:
            data, last = self._read_batch(core.batch_to_read)
            self._execute(core.feed_batch(time.monotonic(), data, last), now)
        elif isinstance(core, SourceCore) and core.poll_due(now):
            self._poll(core)
        else:           # messages until the core's next deadline, then its tick
            for item in drain(self.inbox.items, lambda: core.next_deadline(time.monotonic())):
                if item[0] is NEWS:      # a poll may be due now: back to the top
                    core.on_news(time.monotonic(), item[1])
                    break
                now = time.monotonic()
                self._execute(core.step(now, *item), now)
                if core.stopped:
                    break
                self._idle_if_empty(core)
            self._idle_if_empty(core)
        if time.monotonic() - self._last_asked > self.spec.lease / 3:
            self._lease_ping()
        now = time.monotonic()
        self._execute(core.tick(now), now)

    def _idle_if_empty(self, core: TaskCore) -> None:
        """Nothing more in the inbox: the core may flush its batch before its tick."""
        if self.inbox.items.empty():
            now = time.monotonic()
            self._execute(core.idle(now), now)

    def _read_source(self) -> tuple[bytes, bool]:
        """The next piece of the partition, a range of the job's snapshot of SRC."""
        part = self.spec.partition
        end = part.offset + part.length
        length = self.core.read_size(min(READ_PIECE, end - self._read_at))
        data = b""
        if length:
            data = self._read_directly(self._read_at, length)
            if data is None:
                _, data = self._ask(lambda: self.link.read_view(
                    self.spec.src, self._view, True, self._read_at, length))
            if len(data) != length:
                raise RuntimeError(f"{self.spec.src}: the snapshot's range is short "
                                   f"({len(data)} of {length} bytes)")
        self._read_at += length
        return data, self._read_at >= end

    def _read_directly(self, offset: int, length: int) -> bytes | None:
        """Bytes of the partition from the node's own copy of SRC, read here
        (local_view.py); None when there is none, or it failed: read through the node."""
        if not self._local_asked:
            self._local_asked = True
            try:
                where = self._ask(lambda: self.link.local_view(self.spec.src, self._view, True))
                self._local = LocalView(where) if where else None
                if self._local is not None:
                    log.info("%s reads %s from its node's copy", self.spec.name, self.spec.src)
            except (Unreachable, RemoteError, Unusable) as exc:
                log.warning("%s: reading %s through the node: %s", self.spec.name,
                            self.spec.src, exc)
        if self._local is None:
            return None
        try:
            return self._local.read(offset, length)
        except Unusable as exc:
            log.warning("%s: reading %s through the node from now on: %s", self.spec.name,
                        self.spec.src, exc)
            self._local.close()
            self._local = None
            return None

    def _read_batch(self, batch: IdSet) -> tuple[bytes, bool]:
        """The next piece of a following source's batch of SRC's appends."""
        size, data = self._ask(lambda: self.link.read_view(
            self.spec.src, batch, False, self._batch_at, self.core.read_size(READ_PIECE)))
        self._batch_at += len(data)
        if self._batch_at < size and not data:
            raise RuntimeError(f"{self.spec.src}: a batch's view ended early")
        last = self._batch_at >= size
        if last:
            self._batch_at = 0
        return data, last

    def _poll(self, core: SourceCore) -> None:
        """SRC's settled appends, to a following source; a watch for news after them."""
        try:
            settled = self._ask(lambda: self.link.settled(self.spec.src))
        except (Unreachable, RemoteError) as exc:
            log.warning("%s: polling %s failed: %s", self.spec.name, self.spec.src, exc)
            core.poll_failed(time.monotonic())
            return
        self._execute(core.offer(time.monotonic(), settled))
        if self._watcher is None and not core.fed_all:
            self._watcher = Watcher(self.link, self.spec.src, core.taken, self.inbox.items)
        if self._watcher is not None:
            self._watcher.polled(core.taken)

    def _lease_ping(self) -> None:
        try:
            reply = self._ask(lambda: self.link.lease(self.spec.job, self.spec.task.to_wire(),
                                                      self.spec.epoch))
        except (Unreachable, RemoteError):
            return                     # no renewal: the core stops once the lease runs out
        if reply.get("stop"):
            raise Fenced(f"attempt {self.spec.epoch}: its node says stop ({reply['stop']})")

    def _ask(self, request):
        """`request()` to the node or the leader; its answer renews the lease (a request
        that failed does not count as asking)."""
        result = request()
        self._last_asked = time.monotonic()
        if self.core is not None:
            self.core.contact(self._last_asked)
        return result

    # -- effects ----------------------------------------------------------------------------

    def _execute(self, effects: list, began: float | None = None) -> None:
        """Do `effects` in order. `began`: when the core call that made them began; a
        commit among them (a log append) counts in the batch latency from then."""
        for effect in effects:
            if isinstance(effect, Send):
                self._sender(effect.to).send(effect.message, effect.payload)
            elif isinstance(effect, Route):
                self._sender(effect.to).set_address(effect.address)
            elif isinstance(effect, AppendLog):
                self._append(self.log_file, task_log.encode(effect.record), effect.record["seq"])
            elif isinstance(effect, AppendDest):
                self._append(self.spec.dest, effect.rows, effect.seq)
            elif isinstance(effect, Report):
                self._report(effect.fields)
            elif isinstance(effect, Lead):
                self.link.leader = effect.address
                log.info("%s reports to the leader at %s:%s (leader epoch %d) from now on",
                         self.spec.name, *effect.address, effect.epoch)
            elif isinstance(effect, Stop):
                self.reason, self.lost = effect.reason, effect.lost
                log.info("%s attempt %d stops: %s", self.spec.name, self.spec.epoch,
                         effect.reason)
        if began is not None and any(isinstance(e, AppendLog) for e in effects):
            self.latency.observe(time.monotonic() - began)

    def _append(self, name: str, data: bytes, seq: int) -> None:
        try:
            self._ask(lambda: self.link.append(name, data, (self.spec.writer, seq)))
        except RemoteError as exc:
            if exc.code == FENCED:
                raise Fenced(f"attempt {self.spec.epoch} was replaced: {exc}") from None
            raise

    def _report(self, fields: dict) -> None:
        message = dict({"t": m.REPORT, "job": self.spec.job, "task": self.spec.task.to_wire(),
                        "epoch": self.spec.epoch}, **fields, **self.latency.to_report())
        if fields.get("final"):
            self.reporter.send_final(message)     # the summary waits for it
        else:
            self.reporter.submit(message)

    def _sender(self, task) -> Sender:
        if task not in self.senders:
            self.senders[task] = Sender(str(task), self.inbox.key)
        return self.senders[task]
