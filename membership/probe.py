"""Which members a node probes each round: `monitors` fixed peers plus one random peer.

The fixed peers are the node's successors in the list of live members sorted by node name
(wrapping around), so with n members every member is probed by its `monitors` predecessors
every round: each one is watched by at least that many others (seed: "each machine is
pinged by at least 4 others every 5 seconds"), even if some of them fail too. One extra peer
chosen at random (an injected `random.Random`) gives every pair a chance to meet, as in SWIM.
"""

from __future__ import annotations

import random


def fixed_monitored(self_id: str, member_ids: list[str], monitors: int) -> list[str]:
    """The `monitors` members following `self_id` in sorted order (excluding itself)."""
    ring = sorted(set(member_ids) | {self_id})
    start = ring.index(self_id)
    others = ring[start + 1:] + ring[:start]
    return others[:monitors]


def probe_targets(self_id: str, member_ids: list[str], monitors: int,
                  rng: random.Random) -> list[str]:
    """This round's targets: the fixed monitored peers, then one random other member."""
    fixed = fixed_monitored(self_id, member_ids, monitors)
    rest = sorted(set(member_ids) - set(fixed) - {self_id})
    return fixed + ([rng.choice(rest)] if rest else [])
