"""A task's append-only log in HyDFS, and what a replacement task rebuilds from it.

Every task owns one HyDFS file, ``rainstorm/<job>/<task>.log`` (readable with `get`), and
appends one JSON line per commit (at most one per `batch_interval`). Block ids are source
block ids, ``"<partition>:<block>"`` (see source_plan.py): every stage deduplicates by them.

    {"seq": 7,                       record number (a commit's is the seq of its DEST append)
     "epoch": 2,                     the attempt that wrote it
     "done": {"0": [[1, 12]]},       blocks finished here (IdSet ranges: partition -> blocks+1)
     "blocks": ["0:13", "2:4"],      blocks processed in this commit (stateful/final tasks)
     "state": {"Warning": 17},       changed per-key state (aggregates)
     "out": {"0:13": {"1": [[keys], [values]]}, ...},   outputs by block and destination
                                                         ("dest" for the final stage)
     "stats": {"in": 0, "out": 0, "dropped": 0, "errors": 0},   running totals (a source
                                     that runs a chained OP1 also has "op1_in", the lines
                                     OP1 took, and OP1's out, dropped and errors; one that
                                     runs OP2 too, a sink, "op2_out", "op2_dropped" and
                                     "op2_errors")
     "tail": {"client": [[1, 40]]},  a following source's next batch of SRC's appends (IdSet)
     "end": 57,                      a stopped source's number of blocks: it cuts no more
     "resume": {"batches": 9, "block": 40, "line": 812}}   a follower's checkpoint: every
                                     block before 40 is acked and the first 9 batches are
                                     read, with no partial line left; a replacement starts there

A following source (source_core.py) logs each batch of appends it takes from SRC before
it sends any of their lines: the batches, in log order, fix the order and numbering of the
lines it reads after its partition, for every later attempt.

A *stateless* task logs only "done" (and stats): replaying its input regenerates the same
output. So does a source, OP1 chained into it or not: its blocks are the same lines after
any restart. A source that runs OP2 too and appends to DEST itself (a sink) logs no output
either: which blocks' rows are in DEST its DEST appends' ids say (source_core.py). A *stateful* or *final* task logs "blocks", "state" and "out" before it sends
anything (write-ahead), because its output depends on state that later input changes; a
replacement resends the logged output instead of recomputing it, and the final stage
appends a commit's rows to DEST again unless DEST's fence shows an earlier attempt did.
The final stage writes no "done" record of its own: a commit's blocks are finished once its
rows are in DEST (the replacement finishes every logged commit), and their done marks go in
the next commit's record.

Each attempt appends under its own client id, and fences the log before it reads it
(hydfs/fences.py), so nothing an earlier attempt still tries to append lands after that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from hydfs.fences import writer_client
from hydfs.idset import IdSet

STAT_KEYS = ("in", "out", "dropped", "errors")


def block_id(partition: int, block: int) -> str:
    return f"{partition}:{block}"


def block_key(bid: str) -> tuple[str, int]:
    """A block id as an IdSet member (partition, block + 1)."""
    partition, block = bid.split(":")
    return partition, int(block) + 1


def block_number(bid: str) -> int:
    """The block number n of block id "p:n"."""
    return int(bid.rsplit(":", 1)[1])


def ids_of(bids) -> IdSet:
    return IdSet.of(block_key(b) for b in bids)


def log_name(job: str, task: str) -> str:
    return f"rainstorm/{job}/{task}.log"


def encode(record: dict) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode("utf-8") + b"\n"


@dataclass
class Recovered:
    """A task's state as its log leaves it."""
    completed: IdSet = field(default_factory=IdSet)
    state: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)      # block id -> {dest: [keys, values]}
    commits: dict = field(default_factory=dict)      # seq -> blocks of that commit
    stats: dict = field(default_factory=lambda: dict.fromkeys(STAT_KEYS, 0))
    next_seq: int = 1
    tail: list = field(default_factory=list)         # a source's batches of SRC appends
    end: int | None = None                           # a stopped source's block count
    resume: dict | None = None                       # a follower's last checkpoint

    def unfinished_commits(self) -> list[int]:
        """Commits with a block not yet finished: their output may not have gone out."""
        return sorted(seq for seq, blocks in self.commits.items()
                      if any(block_key(b) not in self.completed for b in blocks))


def record_ids(data: bytes, writer_key: str) -> IdSet:
    """The append ids of a log's records (each attempt appends record `seq` as
    `writer_key#epoch`): what the log's fence must have sealed."""
    ids = IdSet()
    for record in _records(data):
        ids.add(writer_client(writer_key, int(record.get("epoch", 1))), int(record["seq"]))
    return ids


def _records(data: bytes) -> list[dict]:
    records = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def recover(data: bytes) -> Recovered:
    """Replay a log, in the order of its records' sequence numbers (replicas may hold the
    appends of two attempts in different orders; numbers never repeat, since an attempt
    starts after the last number its fenced log holds). A torn last line (the task died
    mid-append) is ignored."""
    rec = Recovered()
    for record in sorted(_records(data), key=lambda r: int(r.get("seq", 0))):
        _apply(rec, record)
    return rec


def _apply(rec: Recovered, record: dict) -> None:
    rec.next_seq = max(rec.next_seq, int(record.get("seq", 0)) + 1)
    if "done" in record:
        rec.completed = rec.completed.union(IdSet(record["done"]))
    rec.state.update(record.get("state", {}))
    for bid, outs in record.get("out", {}).items():
        rec.outputs[bid] = outs
    if record.get("blocks"):
        rec.commits[int(record["seq"])] = list(record["blocks"])
    if "stats" in record:
        rec.stats = dict(record["stats"])
    if "tail" in record:
        rec.tail.append(IdSet(record["tail"]))
    if "end" in record:
        rec.end = int(record["end"])
    if "resume" in record:
        rec.resume = {k: int(v) for k, v in record["resume"].items()}
