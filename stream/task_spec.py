"""What the leader tells a task attempt when it starts it: `TaskSpec`.

A spec names the job and the task (stage, index), the attempt's `epoch` (every start or
restart of a task gets a higher one: the fence of its log and DEST, fences.py), the files,
the timings, the operator for stages 1 and 2 (and for a source that runs OP1 itself,
`chained`, and OP2 as well, `sink`: it appends to DEST), and a source's partition of the job's
snapshot of SRC (`view`: the appends it holds, see hydfs `read_view`), whether the job
follows SRC's later appends (`follow`, a `--follow` job: its last source reads them) and
whether the job is being stopped (`stopping`: a replacement started after `stop` reads
nothing new).
"""

from __future__ import annotations

from dataclasses import dataclass

from hydfs.fences import writer_client
from hydfs.idset import IdSet
from stream.scheduler import TaskId
from stream.source_plan import Partition

DEFAULT_LEASE = 30.0
DEFAULT_WINDOW = 64 << 20     # unacked bytes a source keeps in flight


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
    next_reads_values: bool = True   # does the next stage's operator look at values?
    partition: Partition | None = None
    block_bytes: int = 1 << 20
    source_rate: float = 0.0     # lines per second per source task; 0: as fast as possible
    epoch: int = 1               # this attempt's; higher for every restart of the task
    lease: float = DEFAULT_LEASE  # stop after this long without word from node or leader
    resend_after: float = 2.0    # resend a block unacked this long (its ack may be lost)
    view: dict | None = None     # IdSet (wire) of SRC's appends in the job's snapshot
    follow: bool = False         # the job reads SRC's appends after the snapshot, till stopped
    stopping: bool = False       # the job is stopping: read nothing new
    window_bytes: int = DEFAULT_WINDOW
    leader_epoch: int = 0        # of the leader that started this attempt (succession.py)
    first: bool = False          # the task's first attempt: its log is empty, no attempt
                                 # before it can write, so it fences and reads nothing
    rate_origin: float = 0.0     # unix time the stream began (`source_rate`): the job's start
    chained: bool = False        # the job's sources run its stateless OP1 (`operator`) and
                                 # send to stage 2: there are no OP1 tasks
    sink: bool = False           # ... and its stateless OP2 (`last_operator`) too, appending
                                 # to DEST themselves: there are no OP1 or OP2 tasks
    last_operator: str = ""      # OP2's spec, for a source that runs it (`sink`)
    last_arg: str = ""

    @property
    def name(self) -> str:
        return str(self.task)

    @property
    def view_ids(self) -> IdSet:
        """The appends of SRC in the job's snapshot (`view`), as an IdSet."""
        return IdSet(self.view or {})

    @property
    def writer_key(self) -> str:
        """The fence key of this task's writes, the same for every attempt (fences.py)."""
        return f"{self.job}/{self.task}"

    @property
    def writer(self) -> str:
        """The client id of this attempt's appends to its log and to DEST."""
        return writer_client(self.writer_key, self.epoch)

    @property
    def final(self) -> bool:
        return self.task.stage == 2

    @property
    def writes_dest(self) -> bool:
        """Does this task append to DEST (the last stage, or a source that runs it)?"""
        return self.final or (self.sink and self.task.stage == 0)

    def to_wire(self) -> dict:
        return {"job": self.job, "task": self.task.to_wire(), "num_tasks": self.num_tasks,
                "src": self.src, "dest": self.dest, "batch_interval": self.batch_interval,
                "state_flush_interval": self.state_flush_interval,
                "operator": self.operator, "arg": self.arg, "cwd": self.cwd,
                "next_stateful": self.next_stateful, "next_reads_values": self.next_reads_values,
                "partition": self.partition.to_wire() if self.partition else None,
                "block_bytes": self.block_bytes, "source_rate": self.source_rate,
                "epoch": self.epoch, "lease": self.lease, "resend_after": self.resend_after,
                "view": self.view, "follow": self.follow, "stopping": self.stopping,
                "window_bytes": self.window_bytes, "leader_epoch": self.leader_epoch,
                "first": self.first, "chained": self.chained, "sink": self.sink,
                "last_operator": self.last_operator, "last_arg": self.last_arg,
                "rate_origin": self.rate_origin}

    @classmethod
    def from_wire(cls, d: dict) -> "TaskSpec":
        spec = cls(d["job"], TaskId.from_wire(d["task"]), int(d["num_tasks"]), d["src"],
                   d["dest"], float(d["batch_interval"]), float(d["state_flush_interval"]),
                   d.get("operator", ""), d.get("arg", ""), d.get("cwd", "."),
                   bool(d.get("next_stateful")))
        if d.get("partition"):
            spec.partition = Partition.from_wire(d["partition"])
        spec.next_reads_values = bool(d.get("next_reads_values", True))
        spec.block_bytes = int(d.get("block_bytes", spec.block_bytes))
        spec.source_rate = float(d.get("source_rate", 0.0))
        spec.epoch = int(d.get("epoch", 1))
        spec.lease = float(d.get("lease", DEFAULT_LEASE))
        spec.resend_after = float(d.get("resend_after", spec.resend_after))
        spec.view = d.get("view")
        spec.follow = bool(d.get("follow"))
        spec.stopping = bool(d.get("stopping"))
        spec.window_bytes = int(d.get("window_bytes", DEFAULT_WINDOW))
        spec.leader_epoch = int(d.get("leader_epoch", 0))
        spec.first = bool(d.get("first"))
        spec.chained = bool(d.get("chained"))
        spec.sink = bool(d.get("sink"))
        spec.last_operator = str(d.get("last_operator", ""))
        spec.last_arg = str(d.get("last_arg", ""))
        spec.rate_origin = float(d.get("rate_origin", 0.0))
        return spec
