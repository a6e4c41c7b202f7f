"""A source task's core: its partition of HYDFS_SRC, then (following) SRC's new appends,
cut into blocks and fed to OP1: sent to OP1's tasks, or, when the job chains a stateless
OP1 into its sources, run through OP1 here and its output sent to OP2's; when OP2 is
stateless too, run through both here and appended to HYDFS_DEST (a *sink*) (pure).

Reading. The job reads a snapshot of SRC: the create's content and the appends that were
settled when the job began (the spec's `view`), in HyDFS's merge order, so every replica
serves the same bytes whatever merges happen meanwhile (hydfs `read_view`). The leader cut
the snapshot into partitions; the shell reads this task's in pieces and `feed`s them while
`wants_data` says so. The follower (the last source of a `--follow` job) then goes on
with SRC's later appends, batch by batch:

- when told of news (its shell watches a replica of SRC), or every SLOW_POLL seconds, it
  asks for SRC's settled appends (`poll_due`, then `offer`); those it has not taken yet
  form the next batch, which it logs before it reads a byte of it. The log's batches, in
  order, are the order and numbering of every line read after the partition, for every
  later attempt (replicas may order pending appends differently; a batch's bytes are
  its appends in merge order, the same from any replica);
- the shell reads the batch (`batch_to_read`, then `feed_batch`); at the batch's end its
  complete lines become a block even if short, so new lines go out at once, and the cuts
  still depend only on logged facts;
- line numbers go on from the partition's last line.

Cutting. Whole-line blocks (source_plan.py); block n of partition p is ``"p:n"``, the same
lines after any restart. Each block goes to the OP1 task its id hashes to (chained: OP1's
output of it goes to OP2's tasks as forwarding.py routes it, under the same id, and its
counts wait in `op_counts` for the record that marks it done), and is kept until every
task it went to acks it (in_flight.py): resent when the task moves, and when no ack came for
`resend_after` seconds. Acked blocks are logged as done every DONE_LOG_EVERY seconds
(`batch_interval` if longer), so a replacement skips them: nothing waits for these records
(a block leaves memory once acked), so logging them more often would only add appends.

A sink. A source that runs OP2 too keeps each block's rows until no more blocks are due
to be released (or DEST_APPEND_BYTES wait), then appends them to DEST in one append whose
seq is the last block's number + 1 (its key in done sets). Its appends are in block order
and one at a time (effects run in order), so the highest seq of an attempt's appends that
DEST's fence sealed is how far that attempt's output reached: a replacement fences DEST
and counts the blocks below that (`dest_reach`) without appending them again; it logs no
output, as its blocks' output is a function of their lines. A block is done (and logged as
such, with both operators' counts) once the append holding its rows was made: the log
record comes after that append among the effects.

Stopping. When the job stops (the schedule says so, or the spec of a replacement), the
source reads nothing new. In a following job every source still reads its partition, and
the follower polls once more (so every append that returned before the stop is taken),
reads that last batch and its unfinished last line; in a finite job a source ends where
it is if it is its task's first attempt. It logs its block count (`end`), so a replacement
cuts exactly those blocks again. A replacement that did not find an end in its log reads its
whole partition when the job stops: it may be behind what its predecessor sent. When every
block is acked, the source is done: it says so to the leader, which ends the job once every
source is, and then logs its last done marks.

Backpressure. At most `window_bytes` are unacked at once (one block more only when none
is), and no more is read or polled while as much (at most READ_AHEAD_BYTES) waits to be
sent: a slow stage slows the source instead of filling memory. With `source_rate` a partition's block leaves
no earlier than its first line is due, which replays the file as a stream (from the job's
start: a replacement catches up at once on the lines due while no attempt ran).
"""

from __future__ import annotations

from collections import deque

from hydfs.fences import writer_of
from hydfs.idset import IdSet
from stream import messages as m
from stream import task_log
from stream.effects import AppendDest
from stream.forwarding import apply_to_lines, block_messages, csv_rows, route_output
from stream.in_flight import InFlight
from stream.partition import route_block, stage_salt
from stream.scheduler import TaskId
from stream.source_plan import cut_blocks
from stream.task_core import SAMPLE_ROWS, TaskCore
from stream.task_log import Recovered
from stream.task_spec import TaskSpec

READ_AHEAD_BYTES = 16 << 20       # cut but not yet sent: read no more beyond this
SLOW_POLL = 5.0                   # a following source polls this often without news
AWAIT_POLL_MAX = 1.0              # ... and at least this often while news is not settled
FAILED_POLL_PAUSE = 1.0
DONE_LOG_EVERY = 0.5              # acked blocks are logged as done this often
DEST_APPEND_BYTES = 4 << 20       # a sink appends its rows once this many wait, at the latest


class SourceCore(TaskCore):
    def __init__(self, spec: TaskSpec, recovered: Recovered, now: float, operator=None,
                 rate_origin: float | None = None, last_operator=None,
                 dest_sealed: IdSet | None = None):
        """`rate_origin`: when (on the caller's clock) the stream's first line was due,
        under `source_rate`; now, if not given. A sink's `last_operator` is OP2, and
        `dest_sealed` what DEST's fence sealed of earlier attempts' appends."""
        super().__init__(spec, recovered, now)
        self.op = operator                         # a chained OP1 (spec.chained), or None
        self.last_op = last_operator               # a chained OP2 (spec.sink), or None
        self.dest_reach = dest_reach(dest_sealed, spec.writer_key)
        self.to_dest: list[bytes] = []             # a sink's rows not appended yet ...
        self.to_dest_blocks: list[str] = []        # ... and the blocks they are of
        self.to_dest_bytes = 0
        self.sample: list[str] = []
        self.read_before = recovered.stats.get("in", 0)   # lines read by earlier attempts
        self.read = 0                                     # ... and by this one, from the start
        self.acked = recovered.completed
        self.ready: deque = deque()                # (bid, first line, lines, block, due)
        self.ready_bytes = 0
        self.unacked = InFlight(spec.resend_after, now)   # sent, not acked by all: resent
        self.newly_acked: list[str] = []
        self.op_counts: dict[str, dict] = {}       # chained: block -> OP1's counts, till done
        self.leftover = b""
        self.block_no = 0
        self.line = spec.partition.first_line
        self.partition_read = False
        self.fed_all = False                       # no more blocks will be cut
        self.done = False
        self.rate_origin = now if rate_origin is None else rate_origin
        self.commit_every = max(spec.batch_interval, DONE_LOG_EVERY)
        self._next_commit = now + self.commit_every
        # following: the batches logged and not read yet, what they and the snapshot hold
        self.batches: deque = deque(recovered.tail)
        self.taken = spec.view_ids
        for batch in recovered.tail:
            self.taken = self.taken.union(batch)
        self.end = recovered.end                   # blocks in all, once the job stopped
        self.stopping = spec.stopping or self.end is not None
        self.next_poll = now
        self.awaited = IdSet()                     # appends news told of, maybe not settled
        self.misses = 0                            # polls since that found them unsettled
        self.gap = spec.batch_interval / 2          # the least time between two polls
        self.last_poll = float("-inf")
        self.final_polled = False
        self._end_to_log = False
        self.follower = spec.follow and self.task.index == spec.num_tasks - 1
        self.batches_read = 0                      # batches of the log fully cut
        self.boundaries: deque = deque()           # checkpoints not yet safe to log
        if self.follower and recovered.resume:
            self._resume(recovered.resume)
            self._after_batches()              # a stopped predecessor's end may be here
        # A finite job's replacement started after the stop, which its predecessor did not
        # log (no `end`), reads its whole partition, as on_stopping says.

    # -- reading: the partition -------------------------------------------------------------

    @property
    def wants_data(self) -> bool:
        return not self.partition_read and not self.fed_all and self._room()

    def feed(self, now: float, data: bytes, last: bool) -> list:
        """The next bytes of the partition (`last`: its end); the effects."""
        # A following source's last line may go on in SRC's next append: it is kept.
        blocks, self.leftover = cut_blocks(self.leftover + data,
                                           final=last and not self.follower,
                                           limit=self.spec.block_bytes, flush=last)
        for block in blocks:
            self._cut(block, paced=True)
        if last:
            self.partition_read = True
            if not self.follower:
                self.fed_all = True
            self._after_batches()
        self._release(now)
        return self._take()

    def _room(self) -> bool:
        return self.ready_bytes < self._ahead()

    def _ahead(self) -> int:
        """Cut but unsent bytes that may wait: no more than the window either."""
        return min(READ_AHEAD_BYTES, self.spec.window_bytes)

    def read_size(self, most: int) -> int:
        """How much the shell should read next (at most `most`): what the read-ahead has
        room for, but a block's worth at least."""
        return min(most, max(self._ahead() - self.ready_bytes, self.spec.block_bytes))

    # -- reading: SRC's appends (following) -------------------------------------------------

    @property
    def batch_to_read(self) -> IdSet | None:
        """The logged batch the shell should read now, if any."""
        if self.partition_read and not self.fed_all and self.batches and self._room():
            return self.batches[0]
        return None

    def feed_batch(self, now: float, data: bytes, last: bool) -> list:
        """The next bytes of the batch `batch_to_read` named (`last`: its end)."""
        blocks, self.leftover = cut_blocks(self.leftover + data, final=False,
                                           limit=self.spec.block_bytes, flush=last)
        for block in blocks:
            self._cut(block)
        if last:
            self.batches.popleft()
            self.batches_read += 1
            if not self.leftover:
                self.boundaries.append((self.batches_read, self.block_no, self.line))
            self._after_batches()
        self._release(now)
        return self._take()

    def poll_due(self, now: float) -> bool:
        """Should the shell ask for SRC's settled appends now?"""
        return (self.follower and self.partition_read and not self.fed_all
                and not self.batches and self.end is None and self._room()
                and self.unacked.bytes <= self.spec.window_bytes and now >= self.next_poll)

    def on_news(self, now: float, held: IdSet | None = None) -> None:
        """A replica of SRC holds an append this source has not seen (`held`: what that
        replica holds): poll soon, and keep polling until those appends are settled."""
        if held is not None:
            self.awaited = self.awaited.union(held)
        self.misses = 0
        self.next_poll = min(self.next_poll, max(now, self.last_poll + self.gap))

    def offer(self, now: float, settled: IdSet) -> list:
        """SRC's settled appends, polled after every input so far (after the stop, if the
        job is stopping): those not taken yet become the next batch, logged first."""
        final = self.stopping
        self.last_poll = now
        new = settled.difference(self.taken)
        if len(new):
            self.taken = self.taken.union(new)
            self.batches.append(new)
            self.log({"tail": new.to_wire()})
        self.awaited = self.awaited.difference(self.taken)
        if final:
            self.final_polled = True
            self._after_batches()
        elif len(new):
            self.next_poll, self.misses = now + self.gap, 0
        elif len(self.awaited):      # news, not on enough replicas yet: again, backing off
            self.misses += 1
            self.next_poll = now + min(AWAIT_POLL_MAX, self.gap * 2 ** self.misses)
        else:
            self.next_poll = now + SLOW_POLL
        return self._take()

    def poll_failed(self, now: float) -> None:
        self.next_poll = now + FAILED_POLL_PAUSE

    def _after_batches(self) -> None:
        """Every logged batch read: a stopping following source ends here, once it polled
        after the stop (or an earlier attempt logged the end)."""
        if self.fed_all or self.batches or not self.stopping or not self.partition_read:
            return
        if self.end is not None or self.final_polled:
            self._end(final_line=True)

    # -- stopping ---------------------------------------------------------------------------

    def on_stopping(self, now: float) -> None:
        """The job stops. A following job's sources finish their partitions, and its
        follower polls once more after the stop; a finite job's sources end where they
        are, if they are their task's first attempt. A replacement reads its partition to
        the end: it may be behind its predecessor, which may have sent blocks it has not
        cut yet, and the output of those may be in DEST (their lines must be counted)."""
        if self.stopping or self.fed_all:
            self.stopping = True
            return
        self.stopping = True
        if not self.spec.follow and self.spec.first:
            self._end(final_line=False)
        elif self.follower:
            self.next_poll = now               # the last poll: after the stop
        self._release(now)

    def _end(self, final_line: bool) -> None:
        """No blocks beyond these: the last line without a newline (a following source
        at the end of SRC) is one; a partition ended early loses its partial line."""
        if final_line and self.leftover and (self.end is None or self.block_no < self.end):
            self._cut(self.leftover)
        self.leftover = b""
        if self.end is None:
            self.end, self._end_to_log = self.block_no, True
        if self._end_to_log:
            self._end_to_log = False
            self.log({"end": self.end})
        self.fed_all = True

    # -- blocks -----------------------------------------------------------------------------

    def _cut(self, block: bytes, paced: bool = False) -> None:
        """Queue `block` as the next block (`paced`: a partition's, under `source_rate`)."""
        if self.end is not None and self.block_no >= self.end:
            self._end(final_line=False)             # a replacement at a stopped source's end
            return
        bid = task_log.block_id(self.task.index, self.block_no)
        lines = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
        first, self.line, self.block_no = self.line, self.line + lines, self.block_no + 1
        if task_log.block_key(bid) in self.acked:
            self._count(lines)
            return                                  # a replacement: done before
        due = self._due(first) if paced else float("-inf")
        self.ready.append((bid, first, lines, block, due))
        self.ready_bytes += len(block)

    def _release(self, now: float) -> None:
        """Send what the window and the rate allow."""
        while self.ready and self.ready[0][4] <= now and self._window_takes(self.ready[0][3]):
            bid, first, lines, block, _ = self.ready.popleft()
            self._count(lines)                  # `--rate` paces this: so do the counts
            self.ready_bytes -= len(block)
            if self.last_op is not None:
                self._to_dest(bid, first, lines, block)
                if self.to_dest_bytes >= DEST_APPEND_BYTES:
                    self._append_dest()
                continue
            sends = self._messages(bid, first, lines, block)
            if not sends:                       # a chained OP1 put nothing out: done
                self.newly_acked.append(bid)
                continue
            for to, message, payload in self.unacked.add(now, bid, sends, len(block)):
                self.send(to, message, payload)
        if self.to_dest_blocks and not self._due_now(now):
            self._append_dest()         # nothing more to release now: no reason to wait

    def _due_now(self, now: float) -> bool:
        """Is a block ready to be released now?"""
        return bool(self.ready) and self.ready[0][4] <= now and \
            self._window_takes(self.ready[0][3])

    def _messages(self, bid: str, first: int, lines: int, block: bytes) -> dict:
        """Block `bid`'s messages: the lines to their OP1 task, or a chained OP1's output
        to the stage-2 tasks it goes to (none, for none)."""
        if self.op is None:
            to = TaskId(1, route_block(stage_salt(1, bid), self.spec.num_tasks))
            return {to: ({"t": m.BLOCK, "job": self.spec.job, "from": self.task.to_wire(),
                          "to": to.to_wire(), "id": bid, "enc": "lines",
                          "first_line": first, "lines": lines}, block)}
        result = apply_to_lines(self.op, block, first, self.spec.src)
        self.note_error(result)
        self.op_counts[bid] = {"op1_in": lines, "out": len(result.keys),
                               "dropped": result.dropped, "errors": result.errors}
        return block_messages(self.spec, bid,
                              route_output(self.spec, bid, result.keys, result.values))

    # -- a sink: rows into HYDFS_DEST ------------------------------------------------------

    def _to_dest(self, bid: str, first: int, lines: int, block: bytes) -> None:
        """OP1 and OP2 on a block's lines; its rows wait for the next DEST append, unless an
        earlier attempt's appends hold them (below `dest_reach`): then it is only counted."""
        mid = apply_to_lines(self.op, block, first, self.spec.src)
        out = self.last_op.apply(mid.keys, mid.values, None)
        self.note_error(mid)
        self.note_error(out)
        self.op_counts[bid] = {"op1_in": lines, "out": len(mid.keys), "dropped": mid.dropped,
                               "errors": mid.errors, "op2_out": len(out.keys),
                               "op2_dropped": out.dropped, "op2_errors": out.errors}
        if task_log.block_key(bid)[1] <= self.dest_reach:
            self.newly_acked.append(bid)            # in DEST already: an attempt before
            return
        if out.keys:
            rows = csv_rows(out.keys, out.values)
            self.to_dest.append(rows)
            self.to_dest_bytes += len(rows)
            if len(self.sample) < SAMPLE_ROWS:
                first_rows = rows.split(b"\n", SAMPLE_ROWS)[:SAMPLE_ROWS - len(self.sample)]
                self.sample += [row.decode() for row in first_rows if row]
        self.to_dest_blocks.append(bid)

    def _append_dest(self) -> None:
        """One DEST append for the rows waiting, named by their last block (`dest_reach`);
        their blocks are done: the record that logs them comes after the append."""
        if self.to_dest:
            reach = task_log.block_key(self.to_dest_blocks[-1])[1]
            self.emit(AppendDest(reach, b"".join(self.to_dest)))
        self.newly_acked += self.to_dest_blocks
        self.to_dest, self.to_dest_blocks, self.to_dest_bytes = [], [], 0

    def _count(self, lines: int) -> None:
        """Lines read (`in`): those sent, or done by an attempt before; exact after any
        restart, and never less than reported before."""
        self.read += lines
        self.stats["in"] = max(self.read, self.read_before)

    def _window_takes(self, block: bytes) -> bool:
        """May `block` go out now: within the window, or alone if it is bigger?"""
        return not self.unacked or self.unacked.bytes + len(block) <= self.spec.window_bytes

    def _due(self, first_line: int) -> float:
        """When a partition's line is due under `source_rate`, counted from the stream's
        start (`rate_origin`): a replacement sends what fell due while no attempt ran at
        once, as a real stream's backlog would be, and goes on at the rate from there."""
        if not self.spec.source_rate:
            return float("-inf")
        return self.rate_origin + (first_line - self.spec.partition.first_line) \
            / self.spec.source_rate

    # -- acks, time -------------------------------------------------------------------------

    def on_message(self, now: float, message: dict, payload: bytes) -> None:
        if message["t"] != m.ACK:
            return
        if self.is_stale(message):
            self.dropped_stale += 1
            return
        sender = TaskId.from_wire(message["from"])
        self.newly_acked += self.unacked.acked(now, sender, message["ids"])
        self._release(now)

    def on_tick(self, now: float) -> None:
        self._release(now)
        for to, message, payload in self.unacked.due(now):
            self.send(to, message, payload)
        if now >= self._next_commit:
            self._next_commit = now + self.commit_every
            self._commit()
        if not self.done and self.fed_all and not self.ready and not self.unacked \
                and not self.to_dest_blocks:
            # Every block is safe downstream: the leader hears it before the last done
            # marks are logged, one append less before the job's end. They only spare a
            # replacement work, and a source the leader knows is done is not started again.
            self._count_acked()
            self.done = True
            self.report(source_done=True, blocks=self.block_no)
            self._commit()

    def _commit(self) -> None:
        """Log the blocks acked since the last commit as done, with a chained OP1's counts
        of them: counted in the record that marks them done, so exactly once."""
        resume = self._checkpoint()
        self._count_acked()
        if self.newly_acked or resume:
            record = {"done": task_log.ids_of(self.newly_acked).to_wire()}
            if resume:
                record["resume"] = resume
            self.log(record)
            self.newly_acked = []

    def _count_acked(self) -> None:
        """Add a chained OP1's counts of the blocks acked since the last commit."""
        for bid in self.newly_acked:
            for key, n in self.op_counts.pop(bid, {}).items():
                self.stats[key] = self.stats.get(key, 0) + n

    # -- checkpoints (a follower's) ----------------------------------------------------------

    def _checkpoint(self) -> dict | None:
        """The newest batch boundary before which every block is acked (and logged as done
        by the record this goes in), if newer than the last one logged: a replacement
        starts there instead of reading the whole partition and every batch again."""
        if not self.boundaries:
            return None
        outstanding = [task_log.block_number(bid) for bid in self.unacked] + \
            [task_log.block_number(entry[0]) for entry in self.ready] + \
            [task_log.block_number(bid) for bid in self.to_dest_blocks]
        lowest = min(outstanding, default=self.block_no)
        safe = None
        while self.boundaries and self.boundaries[0][1] <= lowest:
            safe = self.boundaries.popleft()
        if safe is None:
            return None
        return {"batches": safe[0], "block": safe[1], "line": safe[2]}

    def _resume(self, at: dict) -> None:
        """Start where a predecessor's checkpoint says: its partition and first batches
        are read and every block before it acked."""
        self.partition_read = True
        self.batches_read = at["batches"]
        for _ in range(min(at["batches"], len(self.batches))):
            self.batches.popleft()
        self.block_no, self.line = at["block"], at["line"]
        self.read = self.line - self.spec.partition.first_line

    def on_moved(self, now: float, moved: list[TaskId]) -> None:
        for to, message, payload in self.unacked.moved(now, moved):
            self.send(to, message, payload)

    def own_deadline(self, now: float) -> float:
        deadlines = [self._next_commit]
        if self.ready and self._window_takes(self.ready[0][3]):
            deadlines.append(self.ready[0][4])
        if self.unacked:
            deadlines.append(self.unacked.next_due())
        if self.fed_all and not self.done and not self.ready and not self.unacked:
            deadlines.append(now)
        if self.poll_due(float("inf")):
            deadlines.append(self.next_poll)
        return max(min(deadlines), now)

    def report_extras(self) -> dict:
        extras = {"source_done": self.done, "blocks": self.block_no,
                  "in_flight": self.unacked.bytes + self.to_dest_bytes,
                  "window": self.spec.window_bytes, "unacked": len(self.unacked)}
        if self.sample:
            extras["sample"], self.sample = self.sample, []
        return extras


def dest_reach(sealed: IdSet | None, key: str) -> int:
    """How far the DEST appends of earlier attempts of sink `key` reached, as sealed: every
    block whose key (number + 1) is at most the highest seq among them is in DEST (or put
    out nothing). An attempt appends in block order, each append done before the next, so
    only its last could be missing."""
    reach = 0
    for client, seq in (sealed or ()):
        writer = writer_of(client)
        if writer is not None and writer[0] == key:
            reach = max(reach, seq)
    return reach

