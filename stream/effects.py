"""What a task's core asks its shell to do: effects as data (task_core.py, task.py).

A core never touches a socket, a file or a clock; each `start`, `step` and `tick` returns a
list of these, and the shell executes them in that order, each finished before the next
begins. The order is the protocol's: a core puts a log append before the sends and the DEST
append that depend on it, so whatever is sent or appended is durable in the log first. If
an effect fails (HyDFS refuses it, e.g. because a newer attempt fenced the file), the shell
stops the task at once and executes nothing after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stream.scheduler import TaskId


@dataclass(frozen=True)
class AppendLog:
    """Append one record to the task's log (task_log.py), under its own sequence number."""
    record: dict


@dataclass(frozen=True)
class AppendDest:
    """Append CSV rows to HYDFS_DEST under append id (this attempt, seq): one commit's of
    the last stage (seq: the commit's), or a sink's blocks (seq: the last block's key)."""
    seq: int
    rows: bytes


@dataclass(frozen=True)
class Route:
    """Task `to` now runs at `address` (a new schedule): send to it there."""
    to: TaskId
    address: str


@dataclass(frozen=True)
class Send:
    """One message (and its payload) to task `to`'s inbox, in order with earlier ones."""
    to: TaskId
    message: dict
    payload: bytes = b""


@dataclass(frozen=True)
class Report:
    """Counters and extras to the leader (stream.report)."""
    fields: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Stop:
    """Stop this task: the job is over, or this attempt was replaced or lost its lease
    (`lost`: its node should tell the leader, which may not know)."""
    reason: str
    lost: bool = False


@dataclass(frozen=True)
class Lead:
    """A newer leader gives orders: report to it from now on."""
    address: tuple
    epoch: int
