"""Requests to other nodes: connect, send, get the reply; failures as typed errors.

Every subsystem talks to other nodes through `Peers`: HyDFS replicas and coordinators, the
stream leader and workers, task processes reaching their node. A target is a node's name
(``"03"``, looked up in the config) or an address (``"host:port"``, e.g. a task's inbox).

- `call(target, message)`: one request, its reply (a dict). Connections are kept for the
  next call to the same address (at most POOLED per address, reused within REUSE_WITHIN
  seconds, far below the server's idle timeout): a request costs a round trip, not a TCP
  handshake and a server thread's start. A kept connection the server closed is seen
  before it is used (it polls readable), so a request is never sent on a dead one; one
  whose call failed, timed out or was refused is never kept.
- `call_bulk(target, message, data)`: the same with a small payload after the message
  (an append's bytes).
- `open(target)`: a `Connection` for a longer exchange (bulk payloads streamed, several
  messages); `exchange(target, conn, message)` is one request/reply on it.
- `tell(target, message)`: a one-way message (task inboxes answer nothing).

What can go wrong is one of three things, each a `CodedError` (errors.py):

- `Unreachable`: no connection, a timeout, a reset, a malformed reply. The node is down,
  cut off or paused; a caller may try another node or retry later.
- `Slow` (an `Unreachable`): the node took the request but did not start answering within
  the caller's patience (paused, overloaded): reads use it to move on to another replica.
- `RemoteError`: the node answered with an error; its `code` says which (a catalogue's).
"""

from __future__ import annotations

import select
import socket
import threading
import time
from contextlib import contextmanager

from cluster import wire
from cluster.config import Config
from cluster.connection import Connection, ConnectionClosed
from cluster.errors import INTERNAL, SLOW, UNREACHABLE, CodedError
from cluster.messages import ERROR

CONNECT_TIMEOUT = 2.0      # a live node accepts at once (even a paused one: the kernel
                           # does); longer means the host is gone or cut off
REPLY_TIMEOUT = 30.0       # a request's default patience for its reply
TELL_TIMEOUT = 5.0
CLOSED_UNDER_US = (ConnectionResetError, BrokenPipeError, ConnectionClosed)
POOLED = 4                 # idle connections kept per address
REUSE_WITHIN = 30.0        # seconds an idle connection is kept (servers: 600)


class Unreachable(CodedError):
    """A node did not answer (refused, timed out, reset, or its reply was not readable)."""

    def __init__(self, reason: str, code: str = UNREACHABLE):
        super().__init__(code, reason)


class Slow(Unreachable):
    """A node took the request but did not start answering in time (paused, overloaded)."""

    def __init__(self, reason: str):
        super().__init__(reason, SLOW)


class RemoteError(CodedError):
    """The node answered with an error: `code` says what failed, the text why."""


def check_reply(reply: dict) -> dict:
    """`reply` itself, or RemoteError if it is an error reply."""
    if reply.get("t") == ERROR:
        raise RemoteError(str(reply.get("code") or INTERNAL), str(reply.get("error", "error")))
    return reply


class Peers:
    """Requests from this node (or task process) to nodes and task inboxes."""

    def __init__(self, config: Config, connect_timeout: float = CONNECT_TIMEOUT):
        self.config = config
        self.key = wire.secret_key(config.secret)
        self.connect_timeout = connect_timeout
        self._idle: dict[tuple[str, int], list[tuple[Connection, float]]] = {}
        self._idle_lock = threading.Lock()

    @classmethod
    def by_address(cls, secret: str, connect_timeout: float = CONNECT_TIMEOUT) -> "Peers":
        """Peers reached by address only (a task process knows no node names)."""
        return cls(Config(secret=secret, nodes={}), connect_timeout)

    def address_of(self, target) -> tuple[str, int]:
        """A node name's configured address; "host:port" and (host, port) as they are."""
        if isinstance(target, tuple):
            return target
        if ":" in target:
            host, port = target.rsplit(":", 1)
            return host, int(port)
        return self.config.address(target)

    def open(self, target, timeout: float | None = REPLY_TIMEOUT) -> Connection:
        try:
            conn = Connection.open(self.address_of(target), self.key, self.connect_timeout)
        except OSError as exc:
            raise Unreachable(f"node {_label(target)} unreachable: {exc.strerror or exc}") from None
        conn.sock.settimeout(timeout)
        return conn

    def call(self, target, message: dict, timeout: float | None = REPLY_TIMEOUT) -> dict:
        return self._pooled(target, timeout, lambda conn: self.exchange(target, conn, message))

    def call_bulk(self, target, message: dict, data: bytes,
                  timeout: float | None = REPLY_TIMEOUT) -> dict:
        """`call` with `data` sent as the message's bulk payload."""
        def request(conn):
            try:
                conn.send_bulk_bytes(message, data)
            except OSError as exc:
                raise Unreachable(f"node {_label(target)}: {exc}") from None
            return self.reply_to(target, conn)
        return self._pooled(target, timeout, request)

    def _pooled(self, target, timeout: float | None, request) -> dict:
        """`request(conn)` on a kept connection, or a new one; the connection is kept
        again if it answered OK with nothing after (a bulk reply is not a call's), else
        closed. A kept connection that the server closed just before (its FIN not here
        yet when it was checked) fails at once, reset or at its end, before the server
        read the request: then it is sent once more on a new connection."""
        conn, reused = self._take(target, timeout)
        try:
            reply = request(conn)
        except Unreachable as exc:
            conn.close()
            if not (reused and isinstance(exc.__context__, CLOSED_UNDER_US)):
                raise
            conn, reused = self.open(target, timeout), False
            try:
                reply = request(conn)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            conn.close()
            raise
        if reply.get("bulk"):
            conn.close()
        else:
            self.give_back(target, conn)
        return reply

    @contextmanager
    def pooled(self, target, timeout: float | None = REPLY_TIMEOUT):
        """A kept or new connection for one request whose reply the block reads whole
        (e.g. a payload, then its reply): kept again if the block ends normally, closed
        if it raises."""
        conn = self.take(target, timeout)
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        self.give_back(target, conn)

    def take(self, target, timeout: float | None = REPLY_TIMEOUT) -> Connection:
        """A kept connection to `target`, or a new one; `give_back` it after a request
        whose reply was read whole, or close it."""
        return self._take(target, timeout)[0]

    def take_kept(self, target, timeout: float | None = REPLY_TIMEOUT) -> tuple[Connection, bool]:
        """`take`, and whether the connection is a kept one: a request that fails on a kept
        one at once (CLOSED_UNDER_US) may be sent again on a new one, as `call`s are."""
        return self._take(target, timeout)

    def give_back(self, target, conn: Connection) -> None:
        """Keep `conn` for the next request to `target`, unless unread bytes wait on it."""
        if conn.buffered():
            conn.close()
        else:
            self._give_back(self.address_of(target), conn)

    def _take(self, target, timeout: float | None) -> tuple[Connection, bool]:
        """(a connection to `target`, whether it is a kept one)."""
        address = self.address_of(target)
        now = time.monotonic()
        while True:
            with self._idle_lock:
                idle = self._idle.get(address)
                conn, since = idle.pop() if idle else (None, 0.0)
            if conn is None:
                return self.open(target, timeout), False
            if now - since < REUSE_WITHIN and not _closed_by_peer(conn):
                conn.sock.settimeout(timeout)
                return conn, True
            conn.close()

    def _give_back(self, address: tuple[str, int], conn: Connection) -> None:
        with self._idle_lock:
            idle = self._idle.setdefault(address, [])
            if len(idle) < POOLED:
                idle.append((conn, time.monotonic()))
                return
        conn.close()

    def close(self) -> None:
        """Close the kept connections."""
        with self._idle_lock:
            kept, self._idle = self._idle, {}
        for idle in kept.values():
            for conn, _ in idle:
                conn.close()

    @staticmethod
    def exchange(target, conn: Connection, message: dict) -> dict:
        """Send `message` on `conn` and return the checked reply."""
        try:
            conn.send(message)
            return check_reply(conn.recv())
        except (OSError, socket.timeout, wire.ProtocolError) as exc:
            raise Unreachable(f"node {_label(target)}: {exc or 'timed out'}") from None

    @staticmethod
    def reply_to(target, conn: Connection) -> dict:
        """The checked reply to what was just sent on `conn` (e.g. after a bulk payload)."""
        try:
            return check_reply(conn.recv())
        except (OSError, socket.timeout, wire.ProtocolError) as exc:
            raise Unreachable(f"node {_label(target)}: {exc or 'timed out'}") from None

    def tell(self, target, message: dict, timeout: float = TELL_TIMEOUT) -> bool:
        """Send a one-way message; False if the target could not be reached."""
        try:
            with self.open(target, timeout) as conn:
                conn.send(message)
            return True
        except (Unreachable, OSError):
            return False


def _closed_by_peer(conn: Connection) -> bool:
    """Has the server closed (or written to) an idle connection? Either way it is not
    reused: an idle connection has nothing to read unless its end is gone."""
    try:
        return bool(select.select([conn.sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _label(target) -> str:
    if isinstance(target, tuple):
        return f"{target[0]}:{target[1]}"
    return target
