"""Requests to other nodes: connect, send, get the reply; failures as typed errors.

Every subsystem talks to other nodes through `Peers`: HyDFS replicas and coordinators, the
stream leader and workers, task processes reaching their node. A target is a node's name
(``"03"``, looked up in the config) or an address (``"host:port"``, e.g. a task's inbox).

- `call(target, message)`: one request on a new connection, its reply (a dict).
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

import socket

from cluster import wire
from cluster.config import Config
from cluster.connection import Connection
from cluster.errors import INTERNAL, SLOW, UNREACHABLE, CodedError
from cluster.messages import ERROR

CONNECT_TIMEOUT = 2.0      # a live node accepts at once (even a paused one: the kernel
                           # does); longer means the host is gone or cut off
REPLY_TIMEOUT = 30.0       # a request's default patience for its reply
TELL_TIMEOUT = 5.0


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
        with self.open(target, timeout) as conn:
            return self.exchange(target, conn, message)

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


def _label(target) -> str:
    if isinstance(target, tuple):
        return f"{target[0]}:{target[1]}"
    return target
