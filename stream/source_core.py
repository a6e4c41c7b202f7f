"""A source task's core: its partition of HYDFS_SRC, cut into blocks, fed to OP1 (pure).

The shell reads the partition in pieces and `feed`s them while `wants_data` says so. The
core cuts whole-line blocks (source_plan.py); block number n of partition p is ``"p:n"``
after any restart, since cutting depends only on the bytes. Each block goes to the OP1 task
its id hashes to, and is kept until that task acks it: resent when the task moves, and when
no ack came for `resend_after` seconds (the block, or its ack, may have been lost with a
connection or a replaced attempt). Blocks acked are logged as done every `batch_interval`,
so a replacement skips them. When every block is acked and logged, the source is done: it
says so to the leader, which ends the job once every source is.

At most SOURCE_WINDOW_BYTES are unacked at once, and with `source_rate` a block leaves no
earlier than its first line is due, which replays the file as a stream.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from stream import delivery
from stream import messages as m
from stream import task_log
from stream.partition import route_block
from stream.scheduler import TaskId
from stream.source_plan import cut_blocks
from stream.task_core import TaskCore, stage_salt
from stream.task_log import Recovered
from stream.task_spec import TaskSpec

SOURCE_WINDOW_BYTES = 64 << 20    # unacked bytes a source keeps in flight
READ_AHEAD_BYTES = 16 << 20       # cut but not yet sent: feed no more beyond this


class SourceCore(TaskCore):
    def __init__(self, spec: TaskSpec, recovered: Recovered, now: float):
        super().__init__(spec, recovered, now)
        self.read_before = recovered.stats.get("in", 0)   # lines read by earlier attempts
        self.read = 0                                     # ... and by this one, from the start
        part = spec.partition
        self.acked = recovered.completed
        self.ready: deque = deque()                # (bid, dest, message, block) to send
        self.ready_bytes = 0
        self.unacked: OrderedDict = OrderedDict()  # bid -> [dest, message, block, sent_at]
        self.unacked_bytes = 0
        self.newly_acked: list[str] = []
        self.heard: dict[TaskId, float] = {}       # OP1 task -> when it last acked
        self.leftover = b""
        self.block_no = 0
        self.line = part.first_line
        self.fed_all = False
        self.done = False
        self.started = now
        self._next_commit = now + spec.batch_interval

    @property
    def wants_data(self) -> bool:
        return not self.fed_all and self.ready_bytes < READ_AHEAD_BYTES

    def feed(self, now: float, data: bytes, last: bool) -> list:
        """The next bytes of the partition (`last`: its end); the effects."""
        blocks, self.leftover = cut_blocks(self.leftover + data, final=last,
                                           limit=self.spec.block_bytes)
        for block in blocks:
            self._cut(block)
        self.fed_all = last
        self._release(now)
        return self._take()

    def _cut(self, block: bytes) -> None:
        bid = task_log.block_id(self.task.index, self.block_no)
        lines = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
        first, self.line, self.block_no = self.line, self.line + lines, self.block_no + 1
        self.read += lines                 # lines read: exact after any restart, and never
        self.stats["in"] = max(self.read, self.read_before)   # less than reported before
        if task_log.block_key(bid) in self.acked:
            return                                  # a replacement: done before
        dest = TaskId(1, route_block(stage_salt(1, bid), self.spec.num_tasks))
        message = {"t": m.BLOCK, "job": self.spec.job, "from": self.task.to_wire(),
                   "to": dest.to_wire(), "id": bid, "enc": "lines", "first_line": first,
                   "lines": lines}
        self.ready.append((bid, dest, message, block))
        self.ready_bytes += len(block)

    def _release(self, now: float) -> None:
        """Send what the window and the rate allow."""
        while self.ready and self.unacked_bytes <= SOURCE_WINDOW_BYTES and \
                self._due(self.ready[0][2]) <= now:
            bid, dest, message, block = self.ready.popleft()
            self.ready_bytes -= len(block)
            self.unacked[bid] = [dest, message, block, now]
            self.unacked_bytes += len(block)
            self.send(dest, message, block)

    def _due(self, message: dict) -> float:
        if not self.spec.source_rate:
            return float("-inf")
        return self.started + (message["first_line"] - self.spec.partition.first_line) \
            / self.spec.source_rate

    # -- acks, time -------------------------------------------------------------------------

    def on_message(self, now: float, message: dict, payload: bytes) -> None:
        if message["t"] != m.ACK:
            return
        if self.is_stale(message):
            self.dropped_stale += 1
            return
        self.heard[TaskId.from_wire(message["from"])] = now
        for bid in message["ids"]:
            entry = self.unacked.pop(bid, None)
            if entry is not None:
                self.unacked_bytes -= len(entry[2])
                self.newly_acked.append(bid)
        self._release(now)

    def on_tick(self, now: float) -> None:
        self._release(now)
        for bid, entry in list(self.unacked.items()):   # oldest timer first
            if now - entry[3] < self.spec.resend_after:
                break
            heard = self.heard.get(entry[0], self.started)
            if delivery.resend_due(entry[3], heard, now, self.spec.resend_after):
                entry[3] = now
                self.send(entry[0], entry[1], entry[2])
            else:                  # its task acks others: alive and busy; a period from then
                entry[3] = heard
            self.unacked.move_to_end(bid)
        if now >= self._next_commit:
            self._next_commit = now + self.spec.batch_interval
            self._commit()
        if not self.done and self.fed_all and not self.ready and not self.unacked:
            self._commit()
            self.done = True
            self.report(source_done=True, blocks=self.block_no)

    def _commit(self) -> None:
        if self.newly_acked:
            self.log({"done": task_log.ids_of(self.newly_acked).to_wire()})
            self.newly_acked = []

    def on_moved(self, now: float, moved: list[TaskId]) -> None:
        for bid, entry in list(self.unacked.items()):
            if entry[0] in moved:
                entry[3] = now
                self.unacked.move_to_end(bid)
                self.send(entry[0], entry[1], entry[2])

    def own_deadline(self, now: float) -> float:
        deadlines = [self._next_commit]
        if self.ready and self.unacked_bytes <= SOURCE_WINDOW_BYTES:
            deadlines.append(self._due(self.ready[0][2]))
        if self.unacked:
            deadlines.append(next(iter(self.unacked.values()))[3] + self.spec.resend_after)
        if self.fed_all and not self.done and not self.ready and not self.unacked:
            deadlines.append(now)
        return max(min(deadlines), now) if deadlines else now

    def report_extras(self) -> dict:
        return {"source_done": self.done, "blocks": self.block_no}
