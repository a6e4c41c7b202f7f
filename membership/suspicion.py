"""Suspicion: deadlines by which a suspected member must refute, and the detection bound.

In Ping-Ack+S (seed, "Distributed Group Membership") a missed ack does not fail a member: it
is suspected, every node that hears so starts its own timer of `suspicion_timeout`, and when
the timer runs out before an alive report with a higher incarnation arrives, the member is
failed. Timers are absolute deadlines in the caller's monotonic seconds.
"""

from __future__ import annotations


class SuspicionTimers:
    """Deadlines of the suspicions this node is waiting on, by member id."""

    def __init__(self) -> None:
        self._deadlines: dict[str, float] = {}

    def start(self, member_id: str, now: float, timeout: float) -> None:
        """Start the member's timer unless one is already running (it does not restart)."""
        self._deadlines.setdefault(member_id, now + timeout)

    def cancel(self, member_id: str) -> None:
        self._deadlines.pop(member_id, None)

    def expired(self, now: float) -> list[str]:
        """The members whose timers ran out by `now`, in deadline order; they are removed."""
        due = sorted((d, m) for m, d in self._deadlines.items() if d <= now)
        for _, member_id in due:
            del self._deadlines[member_id]
        return [m for _, m in due]

    def next_deadline(self) -> float | None:
        return min(self._deadlines.values(), default=None)

    def __contains__(self, member_id: str) -> bool:
        return member_id in self._deadlines


def detection_bound(protocol_period: float, ping_timeout: float, suspicion: bool,
                    suspicion_timeout: float) -> float:
    """Longest time from a crash until the crash is declared by some monitor.

    A crash just after a probe is noticed by the next round (one period later) plus the ack
    timeout; with suspicion the suspect then waits out its timer. Dissemination is
    immediate, so every member learns it one network delay later.
    """
    bound = protocol_period + ping_timeout
    return bound + suspicion_timeout if suspicion else bound
