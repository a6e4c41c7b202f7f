"""A RainStorm task: one source or operator task of one job, in its own process.

Exactly-once, per block (source_plan.py, task_log.py):

- A source task reads its partition of HYDFS_SRC, cuts it into blocks and sends each to
  the OP1 task the block id hashes to. It keeps a block until that task acks it, and
  resends unacked blocks whenever the schedule moves their task.
- An operator task processes the blocks it has not finished, every `batch_interval`
  (`state_flush_interval` for an aggregate). A block is *finished* once everything it
  produced is safe downstream: acked by every next-stage task it went to, or, in the last
  stage, appended to HYDFS_DEST. Only then is it acked upstream, so until then the upstream
  task still holds it and resends it to a replacement. Finished blocks are logged; a block
  that arrives again after it finished is just acked again.
- A stateful or final task logs its state changes and outputs before sending (write-ahead),
  so a replacement resends the same outputs rather than recomputing them from newer state;
  the final stage appends a commit's rows to DEST under the append id (task, commit seq),
  which HyDFS stores once however often a replacement retries it.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from dataclasses import dataclass, field

from cluster.rpc import RemoteError, Unreachable
from stream import messages as m
from stream import task_log
from stream.node_link import NodeLink
from stream.partition import route_block, split_by_key
from stream.scheduler import TaskId
from stream.source_plan import Partition, block_lines, cut_blocks
from stream.task_io import Inbox, Sender, drain

log = logging.getLogger("task")

SOURCE_WINDOW_BYTES = 64 << 20    # unacked bytes a source keeps in flight
READ_PIECE = 8 << 20              # a source reads its partition this much per request
REPORT_EVERY = 0.5
SAMPLE_ROWS = 5


def stage_salt(stage: int, bid: str) -> str:
    return f"{bid}/{stage}"


def upstream_of(bid: str, stage: int, num_tasks: int) -> TaskId:
    """The task that sent block `bid` to a stage-`stage` task (routing is deterministic)."""
    if stage == 1:
        return TaskId(0, int(bid.split(":")[0]))
    return TaskId(1, route_block(stage_salt(1, bid), num_tasks))


@dataclass
class TaskSpec:
    job: str
    task: TaskId
    num_tasks: int
    src: str
    dest: str
    batch_interval: float
    state_flush_interval: float
    operator: str = ""           # OP spec for stage 1/2
    arg: str = ""
    cwd: str = "."
    next_stateful: bool = False  # is the next stage an aggregate (split by key)?
    partition: Partition | None = None
    block_bytes: int = 1 << 20
    source_rate: float = 0.0     # lines per second per source task; 0: as fast as possible
    schedule: dict = field(default_factory=dict)

    @classmethod
    def from_wire(cls, d: dict) -> "TaskSpec":
        spec = cls(d["job"], TaskId.from_wire(d["task"]), int(d["num_tasks"]), d["src"],
                   d["dest"], float(d["batch_interval"]), float(d["state_flush_interval"]),
                   d.get("operator", ""), d.get("arg", ""), d.get("cwd", "."),
                   bool(d.get("next_stateful")))
        if d.get("partition"):
            spec.partition = Partition.from_wire(d["partition"])
        spec.block_bytes = int(d.get("block_bytes", spec.block_bytes))
        spec.source_rate = float(d.get("source_rate", 0.0))
        return spec


class TaskBase:
    def __init__(self, spec: TaskSpec, link: NodeLink, inbox: Inbox):
        self.spec = spec
        self.link = link
        self.inbox = inbox
        self.name = str(spec.task)
        self.log_file = task_log.log_name(spec.job, self.name)
        self.schedule: dict[TaskId, str] = {}
        self.senders: dict[TaskId, Sender] = {}
        self.stopped = False
        self.last_report = 0.0
        self.recovered = task_log.recover(link.read_all(self.log_file) or b"")
        self.stats = dict(self.recovered.stats)
        self.seq = self.recovered.next_seq
        self._acks: dict[TaskId, list[str]] = {}

    # -- peers ------------------------------------------------------------------------------

    def sender(self, task: TaskId) -> Sender:
        if task not in self.senders:
            self.senders[task] = Sender(str(task), self.inbox.key)
            if task in self.schedule:
                self.senders[task].set_address(self.schedule[task])
        return self.senders[task]

    def on_schedule(self, msg: dict) -> list[TaskId]:
        """Take a new schedule; returns the tasks that moved."""
        moved = []
        for stage, index, address in msg["tasks"]:
            task = TaskId(stage, index)
            if self.schedule.get(task) != address:
                moved.append(task)
                self.schedule[task] = address
                if task in self.senders:
                    self.senders[task].set_address(address)
        return moved

    def ack(self, bid: str) -> None:
        up = upstream_of(bid, self.spec.task.stage, self.spec.num_tasks)
        self._acks.setdefault(up, []).append(bid)

    def flush_acks(self) -> None:
        for up, bids in self._acks.items():
            self.sender(up).send({"t": m.ACK, "job": self.spec.job,
                                  "from": self.spec.task.to_wire(), "to": up.to_wire(),
                                  "ids": bids})
        self._acks = {}

    def write_log(self, record: dict) -> None:
        record["stats"] = self.stats
        self.link.append(self.log_file, task_log.encode(record))

    def report_due(self) -> bool:
        return time.monotonic() - self.last_report >= REPORT_EVERY

    def report(self, force: bool = False, **extra) -> None:
        """Counters (and extras) to the leader, at most every REPORT_EVERY unless forced."""
        if not force and not self.report_due():
            return
        self.last_report = time.monotonic()
        try:
            self.link.report(dict({"t": m.REPORT, "job": self.spec.job,
                                   "task": self.spec.task.to_wire(), "stats": self.stats},
                                  **extra))
        except (Unreachable, RemoteError) as exc:
            log.warning("report to the leader failed: %s", exc)

    def handle_common(self, msg: dict) -> bool:
        """Schedule and stop messages; True if handled."""
        if msg["t"] == m.SCHEDULE:
            self.on_moved(self.on_schedule(msg))
            return True
        if msg["t"] == m.STOP:
            self.stopped = True
            return True
        return False

    def on_moved(self, moved: list[TaskId]) -> None:
        """Resend what the moved tasks may not have received (subclasses)."""


class SourceTask(TaskBase):
    """Reads a partition of the source file and feeds it, block by block, to OP1."""

    def run(self) -> None:
        part = self.spec.partition
        acked = self.recovered.completed
        self.unacked: dict[str, tuple[TaskId, dict, bytes]] = {}
        self.newly_acked: list[str] = []
        leftover, block_no, line = b"", 0, part.first_line
        self.started = time.monotonic()
        limit = self.spec.block_bytes
        for chunk in self._read_partition(part):
            if self.stopped:
                return                      # the leader gave up on the job
            blocks, leftover = cut_blocks(leftover + chunk, final=False, limit=limit)
            for block in blocks:
                line = self._emit(block, block_no, line, acked)
                block_no += 1
        for block in cut_blocks(leftover, final=True, limit=limit)[0]:
            line = self._emit(block, block_no, line, acked)
            block_no += 1
        total_blocks = block_no
        while self.unacked and not self.stopped:
            self._pump(time.monotonic() + self.spec.batch_interval)
        self._commit()
        self.report(force=True, source_done=not self.unacked, blocks=total_blocks)
        while not self.stopped:
            self._pump(time.monotonic() + self.spec.batch_interval)
        self.report(force=True, source_done=True, final=True)

    def _read_partition(self, part: Partition):
        """The partition's bytes, in short requests (a slow pipeline never stalls a read)."""
        for start in range(part.offset, part.offset + part.length, READ_PIECE):
            length = min(READ_PIECE, part.offset + part.length - start)
            yield b"".join(self.link.read_range(self.spec.src, start, length))

    def _emit(self, block: bytes, block_no: int, first_line: int, acked) -> int:
        bid = task_log.block_id(self.spec.task.index, block_no)
        lines = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
        if task_log.block_key(bid) in acked:
            return first_line + lines
        while sum(len(p) for _, _, p in self.unacked.values()) > SOURCE_WINDOW_BYTES:
            self._pump(time.monotonic() + self.spec.batch_interval)
        if self.spec.source_rate:          # replay the file as a stream of so many lines/s
            due = self.started + (first_line - self.spec.partition.first_line) / self.spec.source_rate
            while time.monotonic() < due:
                self._pump(min(due, time.monotonic() + self.spec.batch_interval))
        dest = TaskId(1, route_block(stage_salt(1, bid), self.spec.num_tasks))
        msg = {"t": m.BLOCK, "job": self.spec.job, "from": self.spec.task.to_wire(),
               "to": dest.to_wire(), "id": bid, "enc": "lines", "first_line": first_line,
               "lines": lines}
        self.unacked[bid] = (dest, msg, block)
        self.sender(dest).send(msg, block)
        self.stats["in"] += lines
        self._pump(time.monotonic())
        return first_line + lines

    def _pump(self, until: float) -> None:
        for msg, _ in drain(self.inbox.items, until):
            if self.handle_common(msg):
                continue
            if msg["t"] == m.ACK:
                for bid in msg["ids"]:
                    if self.unacked.pop(bid, None) is not None:
                        self.newly_acked.append(bid)
        if self.newly_acked and time.monotonic() >= until:
            self._commit()
        self.report(source_done=False)

    def _commit(self) -> None:
        if self.newly_acked:
            self.write_log({"seq": self.seq, "done": task_log.ids_of(self.newly_acked).to_wire()})
            self.seq += 1
            self.newly_acked = []

    def on_moved(self, moved: list[TaskId]) -> None:
        for dest, msg, block in self.unacked.values():
            if dest in moved:
                self.sender(dest).send(msg, block)


class OperatorTask(TaskBase):
    """Runs OP1 or OP2 on blocks, forwards or appends the output, acks when safe."""

    def __init__(self, spec: TaskSpec, link: NodeLink, inbox: Inbox, operator):
        super().__init__(spec, link, inbox)
        self.op = operator
        self.final = spec.task.stage == 2
        self.write_ahead = self.final or operator.stateful
        self.state = dict(self.recovered.state)
        self.completed = self.recovered.completed
        self.inflight: dict[str, set] = {}         # block -> next-stage tasks yet to ack
        self.sent: dict[str, dict] = {}             # block -> {dest: (msg, payload)}
        self.newly_done: list[str] = []
        self.pending: dict[str, tuple[dict, bytes]] = {}
        self.sample: list[str] = []
        self.client = f"{spec.job}/{self.name}"
        self.interval = spec.state_flush_interval if operator.stateful else spec.batch_interval

    def run(self) -> None:
        self._redo_unfinished()
        while not self.stopped:
            deadline = time.monotonic() + self.interval
            for msg, payload in drain(self.inbox.items, deadline):
                self._receive(msg, payload)
            if self.pending:
                self._process_batch()
            if self.newly_done:
                self.write_log({"seq": self.seq, "done": task_log.ids_of(self.newly_done).to_wire()})
                self.seq += 1
                self.newly_done = []
            self.flush_acks()
            if self.report_due():
                self.report(sample=self._take_sample())
        self.report(force=True, final=True, sample=self._take_sample())

    # -- input ------------------------------------------------------------------------------

    def _receive(self, msg: dict, payload: bytes) -> None:
        if self.handle_common(msg):
            return
        if msg["t"] == m.ACK:
            self._on_ack(TaskId.from_wire(msg["from"]), msg["ids"])
        elif msg["t"] == m.BLOCK:
            bid = msg["id"]
            if task_log.block_key(bid) in self.completed:
                self.ack(bid)                      # a resend of a finished block
            elif bid not in self.inflight:
                self.pending[bid] = (msg, payload)

    def _tuples(self, msg: dict, payload: bytes) -> tuple[list, list]:
        if msg["enc"] == "lines":
            values = block_lines(payload)
            first, src = msg["first_line"], self.spec.src
            return [f"{src}:{first + i}" for i in range(len(values))], values
        keys, values = json.loads(payload)
        return keys, values

    # -- processing -------------------------------------------------------------------------

    def _process_batch(self) -> None:
        batch, self.pending = self.pending, {}
        outputs, state_before = {}, dict(self.state) if self.op.stateful else None
        for bid, (msg, payload) in batch.items():
            result = None
            if msg["enc"] == "lines":
                result = self.op.apply_lines(payload, msg["first_line"], self.spec.src)
            if result is None:
                keys, values = self._tuples(msg, payload)
                result = self.op.apply(keys, values, self.state if self.op.stateful else None)
            self.stats["in"] += msg["lines"] if "lines" in msg else len(keys)
            self.stats["dropped"] += result.dropped
            self.stats["errors"] += result.errors
            outputs[bid] = self._route(bid, result.keys, result.values)
        seq = self.seq
        self.seq += 1
        if self.final:    # counted before the commit is logged: a replacement inherits it
            self.stats["out"] += sum(len(o["dest"][0]) for o in outputs.values() if o)
        if self.write_ahead:
            changed = {k: v for k, v in self.state.items() if state_before.get(k) != v} \
                if self.op.stateful else {}
            self.write_log({"seq": seq, "blocks": list(batch), "state": changed, "out": outputs,
                            "done": task_log.ids_of(self.newly_done).to_wire()})
            self.newly_done = []
        if self.final:
            keys, values = self._append_dest(seq, list(batch), outputs, list(batch))
            if keys and len(self.sample) < SAMPLE_ROWS:
                self.sample += csv_rows(keys[:SAMPLE_ROWS],
                                        values[:SAMPLE_ROWS]).decode().splitlines()
        else:
            for bid, outs in outputs.items():
                self._forward(bid, outs)

    def _route(self, bid: str, keys: list, values: list) -> dict:
        if self.final:
            return {"dest": [keys, values]} if keys else {}
        n = self.spec.num_tasks
        if self.spec.next_stateful:
            return {str(i): [k, v] for i, (k, v) in enumerate(split_by_key(keys, values, n)) if k}
        return {str(route_block(stage_salt(2, bid), n)): [keys, values]} if keys else {}

    def _forward(self, bid: str, outs: dict) -> None:
        if not outs:
            self._finish(bid)
            return
        self.inflight[bid] = {int(d) for d in outs}
        self.sent[bid] = {}
        for dest, (keys, values) in outs.items():
            to = TaskId(2, int(dest))
            msg = {"t": m.BLOCK, "job": self.spec.job, "from": self.spec.task.to_wire(),
                   "to": to.to_wire(), "id": bid, "enc": "json"}
            payload = json.dumps([keys, values], separators=(",", ":")).encode()
            self.sent[bid][to] = (msg, payload)
            self.sender(to).send(msg, payload)
        self.stats["out"] += sum(len(k) for k, _ in outs.values())

    def _on_ack(self, sender: TaskId, bids: list) -> None:
        for bid in bids:
            waiting = self.inflight.get(bid)
            if waiting is None:
                continue
            waiting.discard(sender.index)
            if not waiting:
                del self.inflight[bid]
                self.sent.pop(bid, None)
                self._finish(bid)

    def _finish(self, bid: str) -> None:
        self.completed.add(*task_log.block_key(bid))
        self.newly_done.append(bid)
        self.ack(bid)

    def on_moved(self, moved: list[TaskId]) -> None:
        for bid, by_dest in self.sent.items():
            for to, (msg, payload) in by_dest.items():
                if to in moved and to.index in self.inflight.get(bid, ()):
                    self.sender(to).send(msg, payload)

    # -- the last stage: rows into HYDFS_DEST -----------------------------------------------

    def _append_dest(self, seq: int, bids: list, outputs: dict, finish: list) -> tuple:
        """Append commit `seq`'s rows (the outputs of `bids`, in order) to DEST under the
        append id (task, seq), so however often it is retried it lands once; then the
        blocks of `finish` are done. The rows."""
        keys, values = [], []
        for bid in bids:
            k, v = outputs.get(bid, {}).get("dest", ([], []))
            keys += k
            values += v
        if keys:
            self.link.append(self.spec.dest, csv_rows(keys, values), (self.client, seq))
        for bid in finish:
            self._finish(bid)
        return keys, values

    def _redo_unfinished(self) -> None:
        """After a restart: output logged but maybe never delivered goes out again."""
        rec = self.recovered
        for seq in rec.unfinished_commits():
            bids = [b for b in rec.commits[seq] if task_log.block_key(b) not in self.completed]
            if self.final:
                self._append_dest(seq, rec.commits[seq], rec.outputs, bids)
            else:
                for b in bids:
                    self._forward(b, rec.outputs.get(b, {}))

    def _take_sample(self) -> list:
        sample, self.sample = self.sample, []
        return sample


def csv_rows(keys: list, values: list) -> bytes:
    """`key,value` rows, quoted by CSV rules only where needed."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(zip(keys, values))
    return out.getvalue().encode("utf-8")
