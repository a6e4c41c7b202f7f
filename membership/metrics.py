"""What the failure detector counts, and its recent history for the web page.

The membership shell (service.py) calls `sent`, `received` and `events` where datagrams and
protocol events pass; members by state are read from the protocol at scrape time. The
`timeline` keeps the last TIMELINE events (joins, suspicions, refutations, failures,
leaves) with their wall-clock time, for the web page to draw.
"""

from __future__ import annotations

import collections
import threading
import time

from cluster.metrics import Gauge, Registry
from membership.member import STATUSES, vm_of
from membership.messages import ACK, PING

TIMELINE = 200
_COUNTED = {"suspect": "suspicions", "refute": "refutations", "fail": "failures",
            "leave": "leaves", "join": "joins"}


class MembershipMetrics:
    def __init__(self, registry: Registry, protocol_of):
        """`protocol_of()`: the protocol and its lock, read at scrape time."""
        c = registry.counter
        self.probes = c("rainstorm_membership_probes_total", "pings this node sent")
        self.acks = c("rainstorm_membership_acks_total", "acks this node received")
        self.sent_bytes = c("rainstorm_membership_sent_bytes_total",
                            "UDP bytes this node sent")
        self.received_bytes = c("rainstorm_membership_received_bytes_total",
                                "UDP bytes this node received")
        self.datagrams = c("rainstorm_membership_datagrams_total",
                           "datagrams received, by what became of them", ("outcome",))
        self.counts = {kind: c(f"rainstorm_membership_{name}_total",
                               f"{kind} events this node saw") for kind, name in _COUNTED.items()}
        self._protocol_of = protocol_of
        self._timeline = collections.deque(maxlen=TIMELINE)
        self._lock = threading.Lock()
        registry.collect(self._members_by_state)

    def sent(self, message: dict, size: int) -> None:
        self.sent_bytes.inc(size)
        if message.get("t") == PING:
            self.probes.inc()

    def received(self, message: dict | None, size: int, outcome: str) -> None:
        self.received_bytes.inc(size)
        self.datagrams.inc(outcome=outcome)
        if message is not None and message.get("t") == ACK:
            self.acks.inc()

    def events(self, events) -> None:
        now = time.time()
        for event in events:
            counter = self.counts.get(event.kind)
            if counter is not None:
                counter.inc()
            if event.kind in _COUNTED or event.kind == "alive":
                member = event.member
                with self._lock:
                    self._timeline.append({
                        "time": round(now, 3), "kind": event.kind,
                        "vm": vm_of(member.id) if member else "",
                        "member": member.id if member else "",
                        "incarnation": member.incarnation if member else 0,
                        "detail": event.detail})

    def timeline(self) -> list[dict]:
        with self._lock:
            return list(self._timeline)

    def _members_by_state(self) -> list:
        protocol, lock = self._protocol_of()
        with lock:
            states = [m.status for m in protocol.members.values()]
            if protocol.joined:
                states.append(protocol.me.status)
        gauge = Gauge("rainstorm_members", "members this node knows of, by state", ("state",))
        for status in STATUSES:
            gauge.set(states.count(status), state=status)
        return [gauge]
