"""A simulated network and clock for the pure membership protocol.

Many `MembershipProtocol` instances exchange messages through an in-memory network with a
fake clock: every message is encoded and decoded with the real wire format, delivered after a
random latency (so messages reorder), and may be lost (`loss`), cut between two nodes
(`cut`/`heal`), or kept from a node entirely (`isolate`). Nodes can crash (kill -9: gone),
pause (SIGSTOP: messages wait, no ticks) and resume. Everything is driven by one seeded
`random.Random`, so a failing scenario replays exactly.
"""

from __future__ import annotations

import heapq
import random

from cluster import wire
from membership.member import ALIVE, MemberState, make_member_id
from membership.protocol import MembershipProtocol, Settings

FAST = Settings(protocol_period=1.0, ping_timeout=0.3, suspicion=True, suspicion_timeout=3.0,
                monitors=4, join_retry=0.5, tombstone_ttl=60.0)


def address(vm: str) -> str:
    return f"10.0.0.{int(vm)}:7000"


class SimNet:
    def __init__(self, seed: int = 1, settings: Settings = FAST, latency=(0.001, 0.02)):
        self.rng = random.Random(seed)
        self.settings = settings
        self.latency = latency
        self.now = 100.0
        self.nodes: dict[str, MembershipProtocol] = {}     # address -> protocol
        self.crashed: set[str] = set()
        self.paused: set[str] = set()
        self.isolated: set[str] = set()
        self.cuts: set[frozenset] = set()
        self.loss = 0.0
        self.events: list[tuple[float, str, object]] = []  # (time, address, Event)
        self._queue: list = []
        self._seq = 0
        self._held: dict[str, list] = {}                    # paused node -> messages

    # -- nodes ------------------------------------------------------------------------------

    def add_node(self, vm: str, introducer: str = "01", start: bool = True,
                 settings: Settings | None = None) -> MembershipProtocol:
        addr = address(vm)
        me = MemberState(make_member_id(vm, addr, int(self.now * 1000)), addr, ALIVE, 0)
        node = MembershipProtocol(me, settings or self.settings, address(introducer),
                                  vm == introducer, [address(f"{i:02d}") for i in range(1, 11)],
                                  random.Random(self.rng.random()))
        self.nodes[addr] = node
        self.crashed.discard(addr)
        if start:
            self._deliver_output(addr, node.start(self.now))
        return node

    def node(self, vm: str) -> MembershipProtocol:
        return self.nodes[address(vm)]

    def crash(self, vm: str) -> None:
        self.crashed.add(address(vm))

    def pause(self, vm: str) -> None:
        self.paused.add(address(vm))

    def resume(self, vm: str) -> None:
        addr = address(vm)
        self.paused.discard(addr)
        for message in self._held.pop(addr, []):
            self._receive(addr, message)

    def restart(self, vm: str, introducer: str = "01") -> MembershipProtocol:
        self.now += 0.001     # a new process gets a new start time, hence a new id
        return self.add_node(vm, introducer)

    def run_command(self, vm: str, command: str, *args) -> None:
        addr = address(vm)
        self._deliver_output(addr, getattr(self.nodes[addr], command)(self.now, *args))

    # -- faults -----------------------------------------------------------------------------

    def cut(self, a: str, b: str) -> None:
        self.cuts.add(frozenset((address(a), address(b))))

    def isolate(self, vm: str) -> None:
        self.isolated.add(address(vm))

    def heal(self) -> None:
        self.cuts.clear()
        self.isolated.clear()

    # -- time -------------------------------------------------------------------------------

    def run_for(self, seconds: float, step: float = 0.01) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = round(self.now + step, 6)
            self._deliver_due()
            for addr, node in list(self.nodes.items()):
                if addr not in self.crashed and addr not in self.paused:
                    self._deliver_output(addr, node.tick(self.now))

    def run_until(self, condition, timeout: float, step: float = 0.01) -> float:
        """Advance until condition() holds; return the simulated seconds it took."""
        start = self.now
        while not condition():
            if self.now - start > timeout:
                raise AssertionError(f"condition not met within {timeout} simulated s")
            self.run_for(step, step)
        return self.now - start

    # -- views ------------------------------------------------------------------------------

    def view(self, vm: str) -> dict[str, str]:
        """vm -> status as node `vm` lists its members."""
        return {m.vm: m.status for m in self.node(vm).live_members()}

    def views_of_running(self) -> dict[str, dict]:
        return {n.me.vm: self.view(n.me.vm) for a, n in self.nodes.items()
                if a not in self.crashed and a not in self.paused}

    def events_of(self, kind: str, about_vm: str | None = None) -> list:
        return [(t, a, e) for t, a, e in self.events if e.kind == kind
                and (about_vm is None or (e.member is not None and e.member.vm == about_vm))]

    # -- delivery ---------------------------------------------------------------------------

    def _deliver_output(self, source: str, output) -> None:
        for event in output.events:
            self.events.append((self.now, source, event))
            if event.kind == "self_failed":   # the shell rejoins under a new id
                node = self.nodes[source]
                self.now += 0.001
                new_id = make_member_id(node.me.vm, source, int(self.now * 1000))
                self._deliver_output(source, node.rejoin(self.now, new_id))
        for send in output.sends:
            self._send(source, send.address, wire.encode(send.message))

    def _send(self, source: str, dest: str, data: bytes) -> None:
        if self.loss and self.rng.random() < self.loss:
            return
        if source in self.isolated or dest in self.isolated:
            return
        if frozenset((source, dest)) in self.cuts:
            return
        delay = self.rng.uniform(*self.latency)
        self._seq += 1
        heapq.heappush(self._queue, (self.now + delay, self._seq, dest, data))

    def _deliver_due(self) -> None:
        while self._queue and self._queue[0][0] <= self.now:
            _, _, dest, data = heapq.heappop(self._queue)
            if dest not in self.nodes or dest in self.crashed:
                continue
            if dest in self.paused:
                self._held.setdefault(dest, []).append(data)
                continue
            self._receive(dest, data)

    def _receive(self, dest: str, data: bytes) -> None:
        self._deliver_output(dest, self.nodes[dest].step(self.now, wire.decode(data)))


def start_cluster(n: int = 10, seed: int = 1, settings: Settings = FAST, **kwargs) -> SimNet:
    net = SimNet(seed, settings, **kwargs)
    net.add_node("01")
    for i in range(2, n + 1):
        net.add_node(f"{i:02d}")
    net.run_until(lambda: all(len(v) == n for v in net.views_of_running().values()), 30)
    return net
