"""A task process's line to its own node: HyDFS reads and appends, and reports to the leader.

Task processes do not join the group; they ask the node that started them, over its TCP
port and with the cluster secret, to read or append HyDFS files on their behalf (the node's
HyDFS client knows the ring), and they send progress to the leader node directly.
"""

from __future__ import annotations

from cluster import wire
from cluster.connection import Connection

TIMEOUT = 120.0


class LinkError(Exception):
    """The node refused or failed a request; the message is its reason."""


class NodeLink:
    def __init__(self, node: tuple[str, int], leader: tuple[str, int], key: bytes | None):
        self.node = node
        self.leader = leader
        self.key = key

    def _open(self, address) -> Connection:
        conn = Connection.open(address, self.key, timeout=10)
        conn.sock.settimeout(TIMEOUT)
        return conn

    def _reply(self, conn: Connection) -> dict:
        reply = conn.recv()
        if reply.get("t") == "error":
            raise LinkError(reply.get("error", "error"))
        return reply

    def append(self, name: str, data: bytes, append_id: tuple[str, int] | None = None) -> dict:
        with self._open(self.node) as conn:
            conn.send_bulk_bytes({"t": "stream.hydfs_append", "name": name,
                                  "id": list(append_id) if append_id else None}, data)
            return self._reply(conn)

    def create(self, name: str, data: bytes = b"") -> None:
        with self._open(self.node) as conn:
            conn.send_bulk_bytes({"t": "stream.hydfs_create", "name": name}, data)
            self._reply(conn)

    def read_range(self, name: str, offset: int, length: int):
        """Yield the bytes of a range of a HyDFS file, in chunks."""
        with self._open(self.node) as conn:
            conn.send({"t": "stream.hydfs_read", "name": name, "offset": offset,
                       "length": length})
            reply = self._reply(conn)
            yield from conn.recv_bulk_chunks(wire.bulk_length(reply))

    def read_all(self, name: str) -> bytes | None:
        """A whole (small) HyDFS file, or None if it does not exist."""
        try:
            return b"".join(self.read_range(name, 0, 1 << 62))
        except LinkError as exc:
            if "no such file" in str(exc):
                return None
            raise

    def report(self, message: dict) -> None:
        with self._open(self.leader) as conn:
            conn.send(message)
            self._reply(conn)
