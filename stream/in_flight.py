"""A task's blocks in flight: sent downstream, not yet acked by every task they went to;
when, and to whom, each goes out again (pure). A source's (source_core.py) and an
operator's that forwards its output (operator_core.py).

An entry is one block id: its message to each destination task (one for a block routed
whole, several for output split by key), the destinations whose ack is still awaited, when
it last went out and its size (a source's window counts it). The block is finished when
no ack is awaited. A destination that stays silent gets the block again after
`resend_after` (delivery.resend_due); one that acks other blocks is alive and busy, and
the block's timer restarts from its last ack. A destination that moves gets what it awaits
at once. The entries are few (the sources' windows bound what is in flight anywhere), and
every scan looks at them all: a timer restarted from an older ack is in no order with the
others.
"""

from __future__ import annotations

from stream import delivery
from stream.scheduler import TaskId


class _Entry:
    __slots__ = ("sends", "waiting", "sent_at", "size")

    def __init__(self, sends: dict, now: float, size: int):
        self.sends = sends                 # TaskId -> (message, payload)
        self.waiting = set(sends)          # destinations whose ack is awaited
        self.sent_at = now
        self.size = size


class InFlight:
    def __init__(self, resend_after: float, started: float):
        self.resend_after = resend_after
        self.started = started
        self.entries: dict[str, _Entry] = {}
        self.heard: dict[TaskId, float] = {}     # destination -> when it last acked
        self.bytes = 0                           # the sizes of the entries, summed

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries)

    def __contains__(self, bid: str) -> bool:
        return bid in self.entries

    def add(self, now: float, bid: str, sends: dict, size: int) -> list:
        """Block `bid` goes out to every destination of `sends` ({TaskId: (message,
        payload)}); the sends, as (to, message, payload)."""
        self.entries[bid] = _Entry(sends, now, size)
        self.bytes += size
        return [(to, message, payload) for to, (message, payload) in sends.items()]

    def acked(self, now: float, sender: TaskId, bids) -> list[str]:
        """`sender` acks `bids`; the blocks this finishes."""
        self.heard[sender] = now
        finished = []
        for bid in bids:
            entry = self.entries.get(bid)
            if entry is None or sender not in entry.waiting:
                continue
            entry.waiting.discard(sender)
            if not entry.waiting:
                del self.entries[bid]
                self.bytes -= entry.size
                finished.append(bid)
        return finished

    def due(self, now: float) -> list:
        """The resends due now, as (to, message, payload)."""
        out = []
        for entry in self.entries.values():
            if now - entry.sent_at < self.resend_after:
                continue
            silent = [to for to in entry.waiting if delivery.resend_due(
                entry.sent_at, self.heard.get(to, self.started), now, self.resend_after)]
            if silent:
                entry.sent_at = now
                out += [(to, *entry.sends[to]) for to in silent]
            else:               # they ack others: alive and busy; a period from then
                entry.sent_at = min(self.heard.get(to, self.started) for to in entry.waiting)
        return out

    def moved(self, now: float, moved: list[TaskId]) -> list:
        """The destinations `moved` get again what they have not acked."""
        out = []
        for entry in self.entries.values():
            tos = [to for to in entry.waiting if to in moved]
            if tos:
                entry.sent_at = now
                out += [(to, *entry.sends[to]) for to in tos]
        return out

    def next_due(self) -> float | None:
        """When the first timer runs out, if any block is in flight."""
        if not self.entries:
            return None
        return min(e.sent_at for e in self.entries.values()) + self.resend_after
