"""The membership service: the I/O shell around `MembershipProtocol`.

It owns the node's UDP socket (bound to the node's own host:port), one thread, and the real
monotonic clock. The thread waits for a datagram or the protocol's next deadline, feeds the
protocol, then sends what it returned and logs its events, in that order. Commands from the
REPL (`leave`, `join`, `enable_sus`, ...) take the same lock, so the protocol only ever sees
one caller at a time.

Fault injection: with `drop_rate` p, each received datagram is dropped with probability p
before the protocol sees it, which is how experiments measure false positives.

Other services (HyDFS, RainStorm) subscribe with `add_listener(callback)`; the callback gets
the list of events after every change, on the membership thread, and must return quickly.
"""

from __future__ import annotations

import logging
import random
import selectors
import socket
import threading
import time

from cluster import wire
from cluster.config import Config
from cluster.logs import BadInputLog
from cluster.metrics import Registry
from membership.member import ALIVE, FINAL, MemberState, make_member_id
from membership.metrics import MembershipMetrics
from membership.protocol import Event, MembershipProtocol, Output, Settings

log = logging.getLogger("membership")

MAX_WAIT = 0.05          # seconds the loop sleeps at most, so shutdown stays prompt
MAX_BATCH = 64           # datagrams handled per loop turn, so a flood cannot starve probing

_EVENT_LOG = {           # event kind -> (level, log line prefix)
    "join": (logging.INFO, "JOIN"), "leave": (logging.INFO, "LEAVE"),
    "fail": (logging.WARNING, "FAIL"), "suspect": (logging.INFO, "SUSPECT"),
    "alive": (logging.INFO, "ALIVE"), "refute": (logging.INFO, "REFUTE"),
    "mode": (logging.INFO, "MODE"), "joined": (logging.INFO, "JOINED"),
    "join_retry": (logging.WARNING, "JOIN-RETRY"),
    "self_failed": (logging.WARNING, "SELF-FAILED"),
}


def new_member_id(vm: str, address: str) -> str:
    return make_member_id(vm, address, int(time.time() * 1000))


class MembershipService:
    def __init__(self, config: Config, vm: str, rng: random.Random | None = None,
                 metrics: Registry | None = None):
        self.config = config
        self.vm = vm
        host, port = config.address(vm)
        self.address = f"{host}:{port}"
        self.key = wire.secret_key(config.secret)
        self.rng = rng or random.Random()
        m = config.membership
        settings = Settings(
            protocol_period=m.protocol_period, ping_timeout=m.ping_timeout,
            suspicion=m.suspicion, suspicion_timeout=m.suspicion_timeout,
            monitors=m.monitors, join_retry=max(m.protocol_period, 0.5),
            tombstone_ttl=max(120.0, 30 * m.protocol_period))
        intro_host, intro_port = config.address(config.introducer)
        me = MemberState(new_member_id(vm, self.address), self.address, ALIVE, 0)
        self.protocol = MembershipProtocol(
            me, settings, f"{intro_host}:{intro_port}", vm == config.introducer,
            sorted(config.nodes.values()), self.rng)
        self.drop_rate = m.drop_rate
        self.bad_input = BadInputLog(log)
        self.dropped = 0
        self._lock = threading.RLock()
        self.metrics = MembershipMetrics(metrics or Registry(),
                                         lambda: (self.protocol, self._lock))
        self._listeners = []
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, port))
        self._sock.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="membership", daemon=True)
        self._join_retries = 0
        self._resolved: dict[str, tuple[str, int]] = {}

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            self._execute(self.protocol.start(time.monotonic()))
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self._sock.close()

    def add_listener(self, callback) -> None:
        self._listeners.append(callback)

    # -- queries ----------------------------------------------------------------------------

    def members(self) -> list[MemberState]:
        with self._lock:
            return self.protocol.live_members()

    def departed(self) -> list[MemberState]:
        """The failed and departed members this node still remembers (their tombstones)."""
        with self._lock:
            return [m for m in self.protocol.members.values() if m.status in FINAL]

    def me(self) -> MemberState:
        with self._lock:
            return self.protocol.me

    def is_joined(self) -> bool:
        with self._lock:
            return self.protocol.joined

    def suspicion_on(self) -> bool:
        with self._lock:
            return self.protocol.mode.suspicion

    # -- commands ---------------------------------------------------------------------------

    def leave(self) -> bool:
        """Leave the group; False if we were not in it."""
        with self._lock:
            was_in = self.protocol.joined
            self._execute(self.protocol.leave(time.monotonic()))
            return was_in

    def join(self) -> bool:
        """Join again (as a new member) after `leave`; False if already in the group."""
        with self._lock:
            if self.protocol.joined or self.protocol.active:
                return False
            self._execute(self.protocol.rejoin(time.monotonic(), new_member_id(self.vm, self.address)))
            return True

    def set_suspicion(self, on: bool) -> bool:
        """Switch the cluster's mode; False if we are not in the group to tell it."""
        with self._lock:
            if not self.protocol.joined:
                return False
            self._execute(self.protocol.set_suspicion(time.monotonic(), on))
            return True

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._sock, selectors.EVENT_READ)
        while not self._stop.is_set():
            try:
                self._turn(selector)
            except Exception:    # one bad turn must never stop failure detection
                log.exception("membership loop error (continuing)")
        selector.close()

    def _turn(self, selector) -> None:
        with self._lock:
            deadline = self.protocol.next_deadline()
        wait = MAX_WAIT if deadline is None else min(MAX_WAIT, deadline - time.monotonic())
        if selector.select(max(wait, 0)):
            self._receive_batch()
        with self._lock:
            self._execute(self.protocol.tick(time.monotonic()))

    def _receive_batch(self) -> None:
        for _ in range(MAX_BATCH):
            try:
                data, source = self._sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:      # e.g. ICMP port unreachable surfaced on Linux
                log.debug("recvfrom: %s", exc)
                return
            if self.drop_rate and self.rng.random() < self.drop_rate:
                self.dropped += 1
                self.metrics.received(None, len(data), "dropped")
                continue
            self._handle_datagram(data, source)

    def _handle_datagram(self, data: bytes, source) -> None:
        try:
            message = wire.decode_datagram(data, self.key)
        except wire.ProtocolError as exc:
            self.metrics.received(None, len(data), "rejected")
            self.bad_input.reject("udp", f"{source[0]}:{source[1]}", str(exc))
            return
        with self._lock:
            try:
                output = self.protocol.step(time.monotonic(), message)
            except Exception as exc:    # malformed content of an authentic message
                self.metrics.received(None, len(data), "rejected")
                self.bad_input.reject("udp", f"{source[0]}:{source[1]}",
                                      f"bad {message.get('t')!r} message: {exc}")
                return
            self.metrics.received(message, len(data), "handled")
            self._execute(output)

    def _execute(self, output: Output) -> None:
        """Send, then log and publish: the order the protocol's contract states."""
        for send in output.sends:
            try:
                data = wire.encode(send.message, self.key)
                self._sock.sendto(data, self._resolve(send.address))
                self.metrics.sent(send.message, len(data))
            except (OSError, ValueError, OverflowError) as exc:
                log.debug("sendto %s: %s", send.address, exc)
        for event in output.events:
            self._log_event(event)
        if output.events:
            self.metrics.events(output.events)
            for listener in self._listeners:
                listener(output.events)
        if any(e.kind == "self_failed" for e in output.events):
            self._execute(self.protocol.rejoin(time.monotonic(),
                                               new_member_id(self.vm, self.address)))

    def _resolve(self, address: str) -> tuple[str, int]:
        """host:port to a socket address, looked up once (no DNS query per datagram)."""
        resolved = self._resolved.get(address)
        if resolved is None:
            host, port = address.rsplit(":", 1)
            info = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_DGRAM)
            resolved = self._resolved[address] = info[0][4]
        return resolved

    def _log_event(self, event: Event) -> None:
        level, word = _EVENT_LOG.get(event.kind, (logging.INFO, event.kind.upper()))
        if event.kind == "join_retry":
            self._join_retries += 1
            if self._join_retries not in (1, 10) and self._join_retries % 60:
                return    # say so at once, then now and then, not every second
            log.log(level, "%s introducer %s unreachable, still trying to join (attempt %d)",
                    word, self.protocol.introducer_address, self._join_retries + 1)
            return
        if event.kind == "joined":
            self._join_retries = 0
        who = f"{event.member.id} inc={event.member.incarnation}" if event.member else ""
        log.log(level, "%s %s %s", word, who, event.detail)
