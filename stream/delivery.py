"""The stream task's delivery rules: what a task does with each block, ack and schedule (pure).

Exactly once is per block. A block id (``"<partition>:<number>"``, source_plan.py) names the
same tuples after any failure, so every task deduplicates by it. A block is *finished* at a
task once everything it produced is safe downstream: acknowledged by every next-stage task
it went to, or, at the last stage, appended to HYDFS_DEST; or it produced nothing. Only a
finished block is acked upstream, so until then the upstream task keeps it and resends it.

Every message between tasks carries its sender attempt's epoch; the schedule says which
epoch of each task is current. A message from an older epoch than scheduled comes from an
attempt that was replaced (a zombie: it was only paused, or cut off) and is dropped. One
from a newer epoch than the schedule knows is believed: its schedule is on the way.

A block arrives:

| its sender is                   | the block here is                        | the task   |
|---------------------------------|------------------------------------------|------------|
| older than scheduled            | anything                                 | DROP       |
| current (or newer)              | finished (logged done, or in a commit)   | ACK_AGAIN  |
| current (or newer)              | pending or in flight                     | IGNORE     |
| current (or newer)              | unknown                                  | PROCESS    |

An ack arrives:

| its sender is                   | the block here                           | the task   |
|---------------------------------|------------------------------------------|------------|
| older than scheduled            | anything                                 | DROP       |
| current (or newer)              | waits for that sender                    | TAKE       |
| current (or newer)              | waits for someone else, or for no one    | IGNORE     |

A schedule arrives: every entry with an epoch at least the one known moves its task there,
and what the task awaits acks for from it is sent there again. The task's own entry with a
higher epoch than its own means that it was replaced: it stops.

A block unacked for `resend_after` seconds, by a destination silent as long, is sent again
(`resend_due`).
"""

from __future__ import annotations

DROP, ACK_AGAIN, IGNORE, PROCESS, TAKE = "drop", "ack_again", "ignore", "process", "take"


def is_stale(sender_epoch: int, scheduled_epoch: int | None) -> bool:
    """Is a message from `sender_epoch` from a replaced attempt?"""
    return scheduled_epoch is not None and sender_epoch < scheduled_epoch


def on_block(sender_epoch: int, scheduled_epoch: int | None, finished: bool,
             in_progress: bool) -> str:
    if is_stale(sender_epoch, scheduled_epoch):
        return DROP
    if finished:
        return ACK_AGAIN
    return IGNORE if in_progress else PROCESS


def on_ack(sender_epoch: int, scheduled_epoch: int | None, waits_for_sender: bool) -> str:
    if is_stale(sender_epoch, scheduled_epoch):
        return DROP
    return TAKE if waits_for_sender else IGNORE


def moves(known_epoch: int | None, entry_epoch: int) -> bool:
    """Does a schedule entry of `entry_epoch` replace what is known of that task?"""
    return known_epoch is None or entry_epoch >= known_epoch


def replaced(own_epoch: int, entry_epoch: int) -> bool:
    """Does the schedule's entry for this very task say a newer attempt runs it?"""
    return entry_epoch > own_epoch


def resend_due(sent_at: float, heard_at: float, now: float, resend_after: float) -> bool:
    """Is a block unacked since `sent_at` due to be sent again, its destination last heard
    from (any ack) at `heard_at`? Only if both are `resend_after` old: a destination that
    goes on acking is alive and busy, and its queue is only long (TCP loses nothing on a
    live connection); a silent one may have lost the block, or sent its ack elsewhere."""
    return now - sent_at >= resend_after and now - heard_at >= resend_after
