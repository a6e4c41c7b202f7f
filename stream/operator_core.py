"""An operator task's core: OP1 or OP2 on blocks, output forwarded or appended, acks when safe
(pure).

Blocks arriving are kept (delivery.py says which) and processed together every
`batch_interval` (`state_flush_interval` for an aggregate), or sooner once the inbox is
empty (`idle`), but then at most IDLE_FLUSHES_PER_INTERVAL times per interval: a job
that trickles waits a fifth of an interval per stage, not a whole one, and a busy one
batches as before, its inbox seldom empty, and every commit's I/O gathering the next
batch (group commit). What one batch does depends on the task:

- a *stateless* task (transform, filter) not in the last stage forwards each block's output
  to the next stage (whole, or split by key when that stage aggregates) and logs nothing
  but which blocks finished: replaying its input gives the same output;
- a *stateful* (aggregate) or *last-stage* task logs the batch first (write-ahead): its
  blocks, the state they changed and the output, one commit numbered `seq`. Its output
  depends on state that later input changes, so a replacement resends the logged output
  instead of recomputing it. The last stage then appends the commit's rows to HYDFS_DEST
  under append id (this attempt, seq).

Counters are exact after any failure: a write-ahead task counts a batch in its commit, any
other task counts a block when it finishes (its "done" record carries the counts, and only
then is the block acked, so a block redone after a crash is counted once).

A replacement (`start`) redoes the commits its log holds but did not finish: it forwards
their logged output again, or, in the last stage, appends their rows to DEST unless the
DEST fence's sealed set (`dest_sealed`, the DEST appends of earlier attempts that stand)
shows that some attempt already did.

Outputs awaiting acks are resent when their task moves, and when no ack came for
`resend_after` seconds.
"""

from __future__ import annotations

from hydfs.fences import writer_of
from hydfs.idset import IdSet
from stream import delivery
from stream import messages as m
from stream import task_log, tuple_codec
from stream.effects import AppendDest
from stream.forwarding import apply_to_lines, block_messages, csv_rows, route_output
from stream.in_flight import InFlight
from stream.scheduler import TaskId
from stream.task_core import SAMPLE_ROWS, TaskCore
from stream.task_log import Recovered
from stream.task_spec import TaskSpec

COUNTERS = ("in", "out", "dropped", "errors")
IDLE_FLUSHES_PER_INTERVAL = 5    # an idle task flushes at most this often per interval


class OperatorCore(TaskCore):
    def __init__(self, spec: TaskSpec, recovered: Recovered, now: float, operator,
                 dest_sealed: IdSet | None = None):
        super().__init__(spec, recovered, now)
        self.op = operator
        self.final = spec.final
        self.write_ahead = self.final or operator.stateful
        self.state = dict(recovered.state)
        self.completed = recovered.completed
        self.pending: dict[str, tuple[dict, bytes]] = {}   # arrived, not processed yet
        self.inflight = InFlight(spec.resend_after, now)   # outputs sent, not all acked
        self.counts: dict[str, dict] = {}      # stateless: block -> its counters, till done
        self.newly_done: list[str] = []
        self.sample: list[str] = []
        self.interval = spec.state_flush_interval if operator.stateful else spec.batch_interval
        self._next_batch = now + self.interval
        self._last_flush = now
        self._dest_done = _sealed_seqs(dest_sealed, spec.writer_key)

    # -- a replacement's redo ---------------------------------------------------------------

    def start(self, now: float) -> list:
        rec = self.recovered
        for seq in rec.unfinished_commits():
            bids = [b for b in rec.commits[seq] if task_log.block_key(b) not in self.completed]
            if self.final:
                if seq not in self._dest_done:
                    self._append_dest(seq, rec.commits[seq], rec.outputs)
                for bid in bids:
                    self._finish(bid)
            else:
                for bid in bids:
                    self._forward(now, bid, rec.outputs.get(bid, {}))
        return self._take()

    # -- input ------------------------------------------------------------------------------

    def on_message(self, now: float, message: dict, payload: bytes) -> None:
        if message["t"] == m.ACK:
            self._on_ack(now, message)
        elif message["t"] == m.BLOCK:
            bid = message["id"]
            verdict = delivery.on_block(
                int(message.get("epoch", 0)),
                self.epochs.get(TaskId.from_wire(message["from"])),
                task_log.block_key(bid) in self.completed,
                bid in self.pending or bid in self.inflight)
            if verdict == delivery.DROP:
                self.dropped_stale += 1
            elif verdict == delivery.ACK_AGAIN:
                self.ack(bid)
            elif verdict == delivery.PROCESS:
                self.pending[bid] = (message, payload)

    def _on_ack(self, now: float, message: dict) -> None:
        if self.is_stale(message):
            self.dropped_stale += 1
            return
        for bid in self.inflight.acked(now, TaskId.from_wire(message["from"]), message["ids"]):
            self._finish(bid)

    # -- time -------------------------------------------------------------------------------

    def on_tick(self, now: float) -> None:
        if now >= self._next_batch:
            self._flush(now)
        self._send_all(self.inflight.due(now))

    def on_idle(self, now: float) -> None:
        if self._idle_flush_at() <= now:
            self._flush(now)

    def _idle_flush_at(self) -> float:
        """When an idle inbox may flush early: at most every interval /
        IDLE_FLUSHES_PER_INTERVAL, so that a task with many small inputs (acks one by one,
        from many downstream tasks) still logs a bounded number of records per second."""
        if self.pending or self._acks or (self.newly_done and not self.final):
            return self._last_flush + self.interval / IDLE_FLUSHES_PER_INTERVAL
        return float("inf")

    def _flush(self, now: float) -> None:
        """The batch: process what arrived, log what finished, ack it. The last stage
        logs no done marks of its own: a commit's blocks are finished once its rows are in
        DEST, which DEST's fence tells a replacement (`start`), and they ride along in
        the next commit's record."""
        self._next_batch, self._last_flush = now + self.interval, now
        if self.pending:
            self._process_batch(now)
        if self.newly_done and not self.final:
            self.log({"done": task_log.ids_of(self.newly_done).to_wire()})
            self.newly_done = []
        self.flush_acks()

    def own_deadline(self, now: float) -> float:
        deadline = min(self._next_batch, self._idle_flush_at())
        if self.inflight:
            deadline = min(deadline, self.inflight.next_due())
        return max(deadline, now)

    def report_extras(self) -> dict:
        sample, self.sample = self.sample, []
        extras = {"unacked": len(self.inflight), "pending": len(self.pending)}
        if sample:
            extras["sample"] = sample
        return extras

    # -- processing -------------------------------------------------------------------------

    def _process_batch(self, now: float) -> None:
        batch, self.pending = self.pending, {}
        outputs, counts = {}, {}
        state_before = dict(self.state) if self.op.stateful else None
        state = self.state if self.op.stateful else None
        for bid, (message, payload) in batch.items():
            if message["enc"] == "lines":
                result = apply_to_lines(self.op, payload, message["first_line"],
                                        self.spec.src, state)
                n_in = message["lines"]
            else:
                keys, values = tuple_codec.decode(message, payload)
                result, n_in = self.op.apply(keys, values, state), len(keys)
            self.note_error(result)
            outputs[bid] = route_output(self.spec, bid, result.keys, result.values, self.final)
            counts[bid] = {"in": n_in, "out": len(result.keys), "dropped": result.dropped,
                           "errors": result.errors}
        if not self.write_ahead:
            self.counts.update(counts)
            for bid, outs in outputs.items():
                self._forward(now, bid, outs)
            return
        for c in counts.values():       # counted in the commit: a replacement inherits them
            for key in COUNTERS:
                self.stats[key] += c[key]
        changed = {k: v for k, v in self.state.items() if state_before.get(k) != v} \
            if self.op.stateful else {}
        seq = self.log({"blocks": list(batch), "state": changed, "out": outputs,
                        "done": task_log.ids_of(self.newly_done).to_wire()})
        self.newly_done = []
        if self.final:
            keys, values = self._append_dest(seq, list(batch), outputs)
            if keys and len(self.sample) < SAMPLE_ROWS:
                self.sample += csv_rows(keys[:SAMPLE_ROWS],
                                        values[:SAMPLE_ROWS]).decode().splitlines()
            for bid in batch:
                self._finish(bid)
        else:
            for bid, outs in outputs.items():
                self._forward(now, bid, outs)

    def _forward(self, now: float, bid: str, outs: dict) -> None:
        if not outs:
            self._finish(bid)
            return
        self._send_all(self.inflight.add(now, bid, block_messages(self.spec, bid, outs), 0))

    def _send_all(self, sends: list) -> None:
        for to, message, payload in sends:
            self.send(to, dict(message), payload)

    def _finish(self, bid: str) -> None:
        self.completed.add(*task_log.block_key(bid))
        for key, n in self.counts.pop(bid, {}).items():
            self.stats[key] += n
        self.newly_done.append(bid)
        self.ack(bid)

    def on_moved(self, now: float, moved: list[TaskId]) -> None:
        self._send_all(self.inflight.moved(now, moved))

    # -- the last stage: rows into HYDFS_DEST -----------------------------------------------

    def _append_dest(self, seq: int, bids: list, outputs: dict) -> tuple[list, list]:
        """Append commit `seq`'s rows (the outputs of `bids`, in order) to DEST; the rows."""
        keys, values = [], []
        for bid in bids:
            k, v = outputs.get(bid, {}).get("dest", ([], []))
            keys += k
            values += v
        if keys:
            self.emit(AppendDest(seq, csv_rows(keys, values)))
        return keys, values


def _sealed_seqs(sealed: IdSet | None, key: str) -> set[int]:
    """The commit numbers whose rows some attempt of writer `key` has in DEST."""
    seqs = set()
    for client, seq in (sealed or ()):
        writer = writer_of(client)
        if writer is not None and writer[0] == key:
            seqs.add(seq)
    return seqs
