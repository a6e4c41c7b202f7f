"""The membership protocol as a pure state machine (sans-I/O).

Theory of operation (seed, "Distributed Group Membership"; SWIM, Das et al. 2002)
--------------------------------------------------------------------------------
- Joining: a node sends ``join`` to the introducer until it gets ``join_ack`` with the full
  list. The introducer adds the node and tells every member at once. A restarted introducer
  asks every configured address for its list (``sync_req``/``sync``), so the group survives it.
- Probing: every `protocol_period` a node pings its `monitors` fixed successors plus one random
  member (`probe.py`). No ack within `ping_timeout` means: failed (Ping-Ack), or suspected
  (Ping-Ack+S) until `suspicion_timeout` runs out (`suspicion.py`). A node that hears it is
  suspected raises its incarnation and announces itself alive, which overrides the suspicion
  everywhere (`member.supersedes`).
- Dissemination: a node that originates a report (join, suspect, refute, fail, leave, mode)
  sends it to every member at once; every report is also piggybacked on the next pings and
  acks (a bounded number of times), so reports survive message loss.
- Identity: a member id carries the start time, so a restarted node is a new member; a new id
  at the address of an older live one marks the older one failed ("restarted").
- Mode: `enable_sus`/`disable_sus` is a cluster-wide setting with a version; the highest
  (version, origin) wins and travels like any other report.
- Healing: every few rounds a node syncs with one configured node it does not list (the
  introducer first), so a partition or a lost join heals. A message from an id we hold as
  failed is not believed: we answer with its tombstone so that it rejoins under a new id.
  Only the introducer's side can make us rejoin when we hold it failed too, so after a
  partition the introducer's side wins instead of each side evicting the other.

Interface: `start(now)`, `tick(now)`, `step(now, message)`, `leave(now)`, `rejoin(now, id)` and
`set_suspicion(now, on)` each return an `Output`: the datagrams to send and the events that
happened, for the I/O shell to send and log, in that order. Nothing here reads a clock,
touches a socket or uses global randomness; `now` is monotonic seconds.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from membership.member import (ALIVE, FAILED, FINAL, LEFT, SUSPECT, MemberState, supersedes)
from membership.messages import (ACK, JOIN, JOIN_ACK, MEMBERSHIP, PING, SYNC, SYNC_REQ,
                                 UPDATE)
from membership.probe import probe_targets
from membership.suspicion import SuspicionTimers

MAX_GOSSIP_PER_MESSAGE = 24
SYNC_ROUNDS = 3        # rounds a (re)started introducer asks everyone for their list
ANTI_ENTROPY_EVERY = 5  # rounds between syncs with a configured node we do not list


@dataclass(frozen=True)
class Settings:
    protocol_period: float = 5.0
    ping_timeout: float = 1.5
    suspicion: bool = True
    suspicion_timeout: float = 8.0
    monitors: int = 4
    join_retry: float = 1.0         # seconds between join attempts while not admitted
    tombstone_ttl: float = 120.0    # how long failed/left ids are remembered


@dataclass(frozen=True)
class Send:
    address: str      # "host:port"
    message: dict


@dataclass(frozen=True)
class Event:
    """Something a user greps the log for. kinds: join, leave, fail, suspect, alive, refute,
    mode, joined, join_retry, self_failed."""
    kind: str
    member: MemberState | None = None
    detail: str = ""


@dataclass
class Output:
    sends: list[Send] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def extend(self, other: "Output") -> "Output":
        self.sends += other.sends
        self.events += other.events
        return self


@dataclass(frozen=True)
class Mode:
    suspicion: bool
    version: int = 0
    origin: str = ""

    def key(self) -> tuple:
        return (self.version, self.origin)

    def to_wire(self) -> dict:
        return {"mode": self.suspicion, "ver": self.version, "by": self.origin}


class MembershipProtocol:
    def __init__(self, me: MemberState, settings: Settings, introducer_address: str,
                 is_introducer: bool, peer_addresses: list[str], rng: random.Random):
        self.settings = settings
        self.introducer_address = introducer_address   # where joins go
        self.is_introducer = is_introducer
        self.peer_addresses = [a for a in peer_addresses if a != me.address]
        self.rng = rng
        self.me = me                                    # our own record (incarnation grows)
        self.members: dict[str, MemberState] = {}       # every other id we know, incl. final
        self.final_since: dict[str, float] = {}         # final id -> when it became final
        self.mode = Mode(settings.suspicion)
        self.joined = False
        self.active = False                             # False after leave or before start
        self._timers = SuspicionTimers()
        self._pending: dict[int, tuple[str, float]] = {}  # ping seq -> (target id, deadline)
        self._seq = 0
        self._gossip: dict[str, list] = {}              # key -> [item, sends left]
        self._next_round = 0.0
        self._next_join = 0.0
        self._sync_rounds_left = 0
        self._rounds = 0

    # -- queries ----------------------------------------------------------------------------

    def live_members(self) -> list[MemberState]:
        """The membership list: ourselves (when in the group) and every alive or suspect
        member, sorted by id (hence by node name)."""
        others = [m for m in self.members.values() if m.is_live]
        mine = [self.me] if self.joined else []
        return sorted(mine + others, key=lambda m: m.id)

    def next_deadline(self) -> float | None:
        if not self.active:
            return None
        deadlines = [self._next_round if self.joined else self._next_join]
        deadlines += [d for _, d in self._pending.values()]
        timer = self._timers.next_deadline()
        return min(deadlines + ([timer] if timer is not None else []))

    # -- commands ---------------------------------------------------------------------------

    def start(self, now: float) -> Output:
        """Begin: the introducer founds (or re-syncs) the group; others ask to join."""
        self.active = True
        out = Output()
        if self.is_introducer:
            self.joined = True
            self._next_round = now + self.settings.protocol_period
            self._sync_rounds_left = SYNC_ROUNDS
            out.events.append(Event("joined", self.me, "introducer"))
            out.sends += self._sync_requests()
        else:
            out.extend(self._try_join(now, first=True))
        return out

    def rejoin(self, now: float, new_id: str) -> Output:
        """Join again as a new member (after `leave`, or after being declared failed)."""
        self.me = MemberState(new_id, self.me.address, ALIVE, 0)
        self.joined = False
        self._forget_everyone()
        return self.start(now)

    def _forget_everyone(self) -> None:
        """Drop all we knew: the introducer's list is the truth for a new member."""
        self.members.clear()
        self.final_since.clear()
        self._gossip.clear()
        self._pending.clear()
        self._timers = SuspicionTimers()

    def leave(self, now: float) -> Output:
        """Leave voluntarily: tell everyone, then go quiet."""
        out = Output()
        if self.joined:
            gone = self.me.with_status(LEFT)
            out.sends += self._broadcast([gone.to_wire()])
            out.events.append(Event("leave", gone, "self"))
        self.joined = False
        self.active = False
        self._forget_everyone()
        return out

    def set_suspicion(self, now: float, on: bool) -> Output:
        """Switch the whole cluster between Ping-Ack (off) and Ping-Ack+S (on)."""
        self.mode = Mode(on, self.mode.version + 1, self.me.id)
        item = self.mode.to_wire()
        self._queue_gossip(item)
        out = Output(events=[Event("mode", None, "suspicion on" if on else "suspicion off")])
        out.sends += self._broadcast([item])
        return out

    # -- timers -----------------------------------------------------------------------------

    def tick(self, now: float) -> Output:
        out = Output()
        if not self.active:
            return out
        if not self.joined:
            if now >= self._next_join:
                out.extend(self._try_join(now, first=False))
            return out
        out.extend(self._expire_probes(now))
        out.extend(self._expire_suspicions(now))
        if now >= self._next_round:
            out.extend(self._probe_round(now))
        self._forget_old_tombstones(now)
        return out

    def _probe_round(self, now: float) -> Output:
        period = self.settings.protocol_period
        # Keep the schedule, but never let a stalled process fire a burst of rounds.
        self._next_round = max(self._next_round + period, now + period / 2)
        out = Output()
        self._rounds += 1
        if self._sync_rounds_left > 0:
            self._sync_rounds_left -= 1
            out.sends += self._sync_requests()
        elif self._rounds % ANTI_ENTROPY_EVERY == 0:
            out.sends += self._anti_entropy()
        live_ids = [m.id for m in self.members.values() if m.is_live]
        for target_id in probe_targets(self.me.id, live_ids, self.settings.monitors, self.rng):
            self._seq += 1
            self._pending[self._seq] = (target_id, now + self.settings.ping_timeout)
            target = self.members[target_id]
            out.sends.append(Send(target.address, {
                "t": PING, "seq": self._seq, "from": self.me.id, "m": self.me.to_wire(),
                "to": target_id,
                "g": self._take_gossip()}))
        return out

    def _expire_probes(self, now: float) -> Output:
        out = Output()
        for seq, (target_id, deadline) in list(self._pending.items()):
            if deadline <= now:
                del self._pending[seq]
                out.extend(self._probe_missed(now, target_id))
        return out

    def _probe_missed(self, now: float, target_id: str) -> Output:
        member = self.members.get(target_id)
        if member is None or member.status != ALIVE:
            return Output()   # already suspected (its timer runs) or already gone
        status = SUSPECT if self.mode.suspicion else FAILED
        return self._originate(now, member.with_status(status), "no ack")

    def _expire_suspicions(self, now: float) -> Output:
        out = Output()
        for member_id in self._timers.expired(now):
            member = self.members.get(member_id)
            if member is not None and member.status == SUSPECT:
                out.extend(self._originate(now, member.with_status(FAILED), "suspicion timed out"))
        return out

    def _forget_old_tombstones(self, now: float) -> None:
        for member_id, since in list(self.final_since.items()):
            if now - since > self.settings.tombstone_ttl:
                del self.final_since[member_id]
                self.members.pop(member_id, None)

    # -- messages ---------------------------------------------------------------------------

    def step(self, now: float, message: dict) -> Output:
        """Handle one received message; raises ValueError if it is malformed."""
        if not self.active:
            return Output()
        handler = _HANDLERS.get(message.get("t"))
        if handler is None:
            raise ValueError(f"unknown membership message type {message.get('t')!r}")
        missing = MEMBERSHIP[message["t"]].missing_field(message)
        if missing is not None:
            raise ValueError(f"{message['t']} message without its {missing!r} field")
        if not self.joined and message["t"] != JOIN_ACK:
            return Output()   # outside the group we hear nothing but our admission
        sender = self.members.get(message.get("from"))
        if sender is not None and sender.status in FINAL and message["t"] != JOIN:
            return self._from_the_dead(now, sender, message)
        return handler(self, now, message)

    def _from_the_dead(self, now: float, sender: MemberState, message: dict) -> Output:
        """A message from an id we hold as failed or left: tell it, believe nothing of it,
        except the introducer telling us that we are the ones who are failed."""
        out = Output()
        if message["t"] in (PING, SYNC_REQ):     # answer requests only: no reply loops
            out.sends.append(Send(sender.address, {"t": UPDATE, "from": self.me.id,
                                                   "g": [sender.to_wire()]}))
        if sender.address == self.introducer_address:
            for item in _gossip_of(message):
                if isinstance(item, dict) and item.get("id") == self.me.id \
                        and item.get("st") == FAILED:
                    out.extend(self._about_me(MemberState.from_wire(item)))
        return out

    def handle_join(self, now: float, message: dict) -> Output:
        if not self.is_introducer or not self.joined:
            return Output()
        newcomer = MemberState.from_wire(message.get("m")).with_status(ALIVE)
        out = Output()
        if newcomer.id not in self.members:
            out.extend(self._originate(now, newcomer, "joined through introducer"))
        everyone = [self.me.to_wire()] + [m.to_wire() for m in self.members.values()]
        out.sends.append(Send(newcomer.address, {
            "t": JOIN_ACK, "from": self.me.id, "for": newcomer.id, "members": everyone,
            "mode": self.mode.to_wire()}))
        return out

    def handle_join_ack(self, now: float, message: dict) -> Output:
        if self.joined or message.get("for") != self.me.id:
            return Output()          # a duplicate, or an answer to an earlier incarnation
        for record in message.get("members", []):
            if not (isinstance(record, dict) and "mode" in record):
                MemberState.from_wire(record)      # all valid, or none of it is applied
        self.joined = True
        self._next_round = now + self.settings.protocol_period * self.rng.random()
        out = Output(events=[Event("joined", self.me, "admitted by introducer")])
        return out.extend(self._merge(now, message))

    def handle_sync_req(self, now: float, message: dict) -> Output:
        if not self.joined:
            return Output()
        out = self._apply_items(now, [message.get("m")])
        introducer = MemberState.from_wire(message.get("m"))
        everyone = [self.me.to_wire()] + [m.to_wire() for m in self.members.values()]
        out.sends.append(Send(introducer.address, {
            "t": SYNC, "from": self.me.id, "members": everyone, "mode": self.mode.to_wire()}))
        return out

    def handle_sync(self, now: float, message: dict) -> Output:
        return self._merge(now, message) if self.joined else Output()

    def handle_ping(self, now: float, message: dict) -> Output:
        if not self.joined:
            return Output()   # not in the group (yet): no ack, so we are not counted alive
        gossip = message.get("g", [])
        if not isinstance(gossip, list):
            raise ValueError("gossip is not a list")
        out = self._apply_items(now, gossip + [message.get("m")])
        sender = self.members.get(MemberState.from_wire(message.get("m")).id)
        if sender is None:
            return out
        if message.get("to") != self.me.id:
            return out   # meant for an earlier incarnation of this node: no ack for it
        out.sends.append(Send(sender.address, {
            "t": ACK, "seq": message.get("seq"), "from": self.me.id,
            "g": self._take_gossip()}))
        return out

    def handle_ack(self, now: float, message: dict) -> Output:
        pending = self._pending.get(message.get("seq"))
        if pending is not None and pending[0] == message.get("from"):
            del self._pending[message["seq"]]
        return self._apply_items(now, message.get("g", []))

    def handle_update(self, now: float, message: dict) -> Output:
        return self._apply_items(now, message.get("g", []))

    # -- applying reports -------------------------------------------------------------------

    def _merge(self, now: float, message: dict) -> Output:
        items = list(message.get("members", []))
        if message.get("mode") is not None:
            items.append(message["mode"])
        return self._apply_items(now, items)

    def _apply_items(self, now: float, items) -> Output:
        if not isinstance(items, list):
            raise ValueError("gossip is not a list")
        out = Output()
        for item in items:
            if isinstance(item, dict) and "mode" in item:
                out.extend(self._apply_mode(item))
            else:
                out.extend(self._apply(now, MemberState.from_wire(item)))
        return out

    def _apply_mode(self, item: dict) -> Output:
        version = item.get("ver", 0)
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise ValueError(f"bad mode version {version!r}")
        mode = Mode(bool(item.get("mode")), version, str(item.get("by", "")))
        if mode.key() <= self.mode.key():
            return Output()
        changed = mode.suspicion != self.mode.suspicion
        self.mode = mode
        self._queue_gossip(mode.to_wire())
        detail = "suspicion on" if mode.suspicion else "suspicion off"
        return Output(events=[Event("mode", None, detail)] if changed else [])

    def _originate(self, now: float, state: MemberState, why: str) -> Output:
        """Apply a report this node makes itself and tell every member at once."""
        out = self._apply(now, state, why)
        out.sends += self._broadcast([state.to_wire()], also=state)
        return out

    def _apply(self, now: float, state: MemberState, why: str = "") -> Output:
        if state.id == self.me.id:
            return self._about_me(state)
        old = self.members.get(state.id)
        if not supersedes(state, old):
            return Output()
        if old is None and state.status not in FINAL and self._superseded(state):
            return Output()      # an older process at an address a newer one holds: a replay
        self.members[state.id] = state
        self._queue_gossip(state.to_wire())
        out = Output()
        if old is None and state.status in FINAL:
            self.final_since[state.id] = now     # news of one we never knew: remember quietly
        elif state.status in FINAL:
            self._timers.cancel(state.id)
            self.final_since[state.id] = now
            kind = "fail" if state.status == FAILED else "leave"
            out.events.append(Event(kind, state, why or "reported"))
            self._drop_pending(state.id)
        elif state.status == SUSPECT:
            self._timers.cancel(state.id)    # a suspicion at a higher incarnation starts anew
            self._timers.start(state.id, now, self.settings.suspicion_timeout)
            out.events.append(Event("suspect", state, why or "reported"))
        elif old is not None and old.status == SUSPECT:
            self._timers.cancel(state.id)
            out.events.append(Event("alive", state, "refuted suspicion"))
        elif old is None:
            out.events.append(Event("join", state, why or "reported"))
            out.extend(self._supersede_older(now, state))
        return out

    def _superseded(self, state: MemberState) -> bool:
        """Is `state` about an id older than one known at its address? Its process was
        replaced; once its tombstone is forgotten, only this tells a replay of its old
        messages (authentic, but stale: tests/fuzz.py) from a newcomer."""
        start = _start_ms(state.id)
        return any(m.address == state.address and _start_ms(m.id) > start
                   for m in (self.me, *self.members.values()))

    def _supersede_older(self, now: float, newcomer: MemberState) -> Output:
        """A new id at the address of a live older one: that older process is gone."""
        out = Output()
        start = _start_ms(newcomer.id)
        for old in list(self.members.values()):
            if old.address == newcomer.address and old.is_live and _start_ms(old.id) < start:
                out.extend(self._originate(now, old.with_status(FAILED), "restarted"))
        return out

    def _about_me(self, state: MemberState) -> Output:
        if not self.joined:
            return Output()
        if state.status == SUSPECT and state.incarnation >= self.me.incarnation:
            self.me = self.me.with_status(ALIVE, state.incarnation + 1)
            out = Output(events=[Event("refute", self.me, f"incarnation {self.me.incarnation}")])
            self._queue_gossip(self.me.to_wire())
            out.sends += self._broadcast([self.me.to_wire()])
            return out
        if state.status == FAILED:
            self.joined = False
            self.active = False   # the shell rejoins under a new id (`rejoin`)
            self._pending.clear()
            return Output(events=[Event("self_failed", state, "the group declared us failed")])
        return Output()

    def _drop_pending(self, member_id: str) -> None:
        for seq, (target, _) in list(self._pending.items()):
            if target == member_id:
                del self._pending[seq]

    # -- sending ----------------------------------------------------------------------------

    def _broadcast(self, items: list, also: MemberState | None = None) -> list[Send]:
        """One update message to every live member (and to `also`, the subject, if live)."""
        addresses = {m.address for m in self.members.values() if m.is_live}
        if also is not None and also.status == SUSPECT:
            addresses.add(also.address)   # so that it can refute at once
        addresses.discard(self.me.address)
        return [Send(a, {"t": UPDATE, "from": self.me.id, "g": items})
                for a in sorted(addresses)]

    def _sync_requests(self, addresses: list[str] | None = None) -> list[Send]:
        return [Send(a, {"t": SYNC_REQ, "from": self.me.id, "m": self.me.to_wire()})
                for a in (self.peer_addresses if addresses is None else addresses)]

    def _anti_entropy(self) -> list[Send]:
        """Sync with one configured node we do not list: the introducer if we lost it."""
        listed = {m.address for m in self.members.values() if m.is_live}
        unlisted = [a for a in self.peer_addresses if a not in listed]
        if not unlisted:
            return []
        if self.introducer_address in unlisted and not self.is_introducer:
            return self._sync_requests([self.introducer_address])
        return self._sync_requests([self.rng.choice(unlisted)])

    def _try_join(self, now: float, first: bool) -> Output:
        self._next_join = now + self.settings.join_retry
        out = Output(sends=[Send(self.introducer_address, {"t": JOIN, "m": self.me.to_wire()})])
        if not first:
            out.events.append(Event("join_retry", self.me, "no answer from the introducer"))
        return out

    def _queue_gossip(self, item: dict) -> None:
        key = item.get("id", "__mode__")
        live = sum(1 for m in self.members.values() if m.is_live) + 1
        self._gossip[key] = [item, 3 * math.ceil(math.log2(live + 1))]

    def _take_gossip(self) -> list:
        items = []
        for key, entry in list(self._gossip.items())[:MAX_GOSSIP_PER_MESSAGE]:
            items.append(entry[0])
            entry[1] -= 1
            if entry[1] <= 0:
                del self._gossip[key]
        return items


def _gossip_of(message: dict) -> list:
    items = message.get("g") or message.get("members") or []
    return items if isinstance(items, list) else []


def _start_ms(member_id: str) -> int:
    try:
        return int(member_id.rsplit("@", 1)[1])
    except (IndexError, ValueError):
        return 0


_HANDLERS = {
    JOIN: MembershipProtocol.handle_join,
    JOIN_ACK: MembershipProtocol.handle_join_ack,
    SYNC_REQ: MembershipProtocol.handle_sync_req,
    SYNC: MembershipProtocol.handle_sync,
    PING: MembershipProtocol.handle_ping,
    ACK: MembershipProtocol.handle_ack,
    UPDATE: MembershipProtocol.handle_update,
}
