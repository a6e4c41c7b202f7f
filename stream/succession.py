"""Who leads RainStorm, and the numbers that fence a leader (pure).

Theory of operation. One node at a time is the leader: it runs every job's control
(leader.py). Leadership is a claim written in HyDFS (``rainstorm/leader``, one JSON line
per claim, leadership.py); the claim with the highest leader epoch is the leader. Every
node evaluates one rule on what it knows (its live members, the highest claim it has read
or been told of) and the one node the rule names claims leadership when the holder of the
highest claim is not live:

1. While the holder of the highest claim is live, it leads (no flapping back: a configured
   leader that restarts rejoins as an ordinary member).
2. When it is not, the successor is the first live node after it in the succession order:
   the configured leader ``[cluster] leader``, then the other nodes of ``[nodes]`` in
   order, wrapping around.
3. With no claim at all (a new cluster), the first live node in that order claims.

Membership alone does not make a leader: two nodes with different member lists may both
claim. The claim's epoch fences the loser. A claim takes the next *term* and the
claimer's place in the order, ``epoch = term * MAX_NODES + place``, so two claims are
never equal; the claimer fences the claim file and each job record at that epoch in HyDFS
(hydfs/fences.py) before it acts, and after that nothing a lower epoch writes there
lands. Workers and tasks remember the highest leader epoch they heard from and refuse
orders from lower ones (worker.py, task_core.py).

Task attempts are numbered from the leader epoch up (`attempt_floor`): an attempt a leader
starts always has a higher epoch than any that an earlier leader could start, so the task
fences of HyDFS order the attempts of two leaders as they order one leader's.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_NODES = 256              # places in the order an epoch can encode
ATTEMPT_BITS = 20            # attempts one leader can start of one task: about a million


@dataclass(frozen=True, order=True)
class Claim:
    """A leadership claim: `vm` leads at `epoch` (0: nobody has claimed yet)."""
    epoch: int
    vm: str

    def to_wire(self) -> dict:
        return {"epoch": self.epoch, "vm": self.vm}

    @classmethod
    def from_wire(cls, doc) -> "Claim | None":
        try:
            epoch, vm = doc["epoch"], doc["vm"]
        except (KeyError, TypeError):
            return None
        if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 < epoch < 1 << 62 \
                or not isinstance(vm, str) or not vm.isdigit() or len(vm) > 8:
            return None          # a node name is digits ("07"); an epoch a positive int
        return cls(epoch, vm)


def succession(nodes: list[str], first: str) -> list[str]:
    """The order in which nodes take over: `first` (the configured leader), then the
    others in `nodes` order after it, wrapping around."""
    ordered = list(nodes)
    if first not in ordered:
        return ordered
    at = ordered.index(first)
    return ordered[at:] + ordered[:at]


def leader_now(order: list[str], live: set[str], claim: Claim | None) -> str | None:
    """Who should lead, by rules 1-3 above; None if no node in `order` is live."""
    if claim is not None and claim.vm in live:
        return claim.vm
    start = order.index(claim.vm) + 1 if claim is not None and claim.vm in order else 0
    for vm in order[start:] + order[:start]:
        if vm in live:
            return vm
    return None


def should_claim(vm: str, order: list[str], live: set[str], claim: Claim | None,
                 leading: bool) -> bool:
    """Must `vm` claim leadership now? Only the node the rule names, and only if it does
    not lead already (the highest claim may be its own from before it restarted)."""
    return leader_now(order, live, claim) == vm and not leading


def next_epoch(highest: int, order: list[str], vm: str) -> int:
    """The epoch of `vm`'s claim after the highest one seen: the next term, its place."""
    place = order.index(vm) if vm in order else MAX_NODES - 1
    return (highest // MAX_NODES + 1) * MAX_NODES + min(place, MAX_NODES - 1)


def attempt_floor(leader_epoch: int) -> int:
    """Task attempts a leader at `leader_epoch` starts are numbered above this."""
    return leader_epoch << ATTEMPT_BITS


def highest(claims) -> Claim | None:
    """The claim that stands: the one with the highest epoch."""
    return max((c for c in claims if c is not None), default=None)
