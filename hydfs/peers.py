"""Talking to other nodes' HyDFS services: one request per connection, errors made plain.

`Peers.call(vm, message)` opens a connection to node `vm`, sends one request and returns the
reply; `Peers.open(vm)` hands the connection to the caller for streamed transfers. Network
failures raise `Unreachable` (the node is down or partitioned), error replies `RemoteError`
with the peer's reason, so callers can fail over or report exactly what went wrong.
"""

from __future__ import annotations

import socket

from cluster import wire
from cluster.config import Config
from cluster.connection import Connection
from hydfs.transfer import RemoteError

CONNECT_TIMEOUT = 2.0
REPLY_TIMEOUT = 30.0


class Unreachable(Exception):
    """A node did not answer (refused, timed out, reset)."""


class Slow(Unreachable):
    """A node took the request but did not start answering in time (paused, overloaded)."""


class Peers:
    def __init__(self, config: Config):
        self.config = config
        self.key = wire.secret_key(config.secret)

    def open(self, vm: str, timeout: float = REPLY_TIMEOUT) -> Connection:
        host, port = self.config.address(vm)
        try:
            conn = Connection.open((host, port), self.key, CONNECT_TIMEOUT)
        except OSError as exc:
            raise Unreachable(f"node {vm} unreachable: {exc.strerror or exc}") from None
        conn.sock.settimeout(timeout)
        return conn

    def call(self, vm: str, message: dict, timeout: float = REPLY_TIMEOUT) -> dict:
        with self.open(vm, timeout) as conn:
            return self.exchange(vm, conn, message)

    @staticmethod
    def exchange(vm: str, conn: Connection, message: dict) -> dict:
        try:
            conn.send(message)
            return check_reply(conn.recv())
        except (OSError, socket.timeout, wire.ProtocolError) as exc:
            raise Unreachable(f"node {vm}: {exc}") from None


def check_reply(reply: dict) -> dict:
    if reply.get("t") == "error":
        raise RemoteError(reply.get("error", "error"))
    return reply
