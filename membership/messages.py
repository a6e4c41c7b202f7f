"""Membership message catalogue: every UDP datagram type of the failure detector.

Append-only (cluster/messages.py says why). One message per datagram (wire.py). A member
record is ``{"id", "addr", "st", "inc"}`` (member.py); ``g`` is gossip: member records and
the cluster's mode, piggybacked (protocol.py).

    join {m}                                joining node -> introducer
    join_ack {from, for, members, mode}     introducer -> the joining node: everyone
    sync_req {from, m}                      (re)started introducer or healer -> a node
    sync {from, members, mode}              -> the asker: everyone this node knows
    ping {seq, from, to, m, g}              prober -> probed
    ack {seq, from, g}                      probed -> prober
    update {from, g}                        a new report, to every member at once
"""

from __future__ import annotations

from cluster.messages import Catalogue

MEMBERSHIP = Catalogue("membership")

JOIN = MEMBERSHIP.add("join", ("m",), "admit me")
JOIN_ACK = MEMBERSHIP.add("join_ack", ("from", "for"), "you are in: the full list")
SYNC_REQ = MEMBERSHIP.add("sync_req", ("from", "m"), "send me your list")
SYNC = MEMBERSHIP.add("sync", ("from",), "my list")
PING = MEMBERSHIP.add("ping", ("seq", "from", "m"), "are you alive?")
ACK = MEMBERSHIP.add("ack", ("seq", "from"), "alive")
UPDATE = MEMBERSHIP.add("update", ("from", "g"), "reports, disseminated at once")
