"""A task process's line to its own node: HyDFS reads and appends, and reports to the leader.

Task processes do not join the group; they ask the node that started them, over its TCP
port and with the cluster secret, to read or append HyDFS files on their behalf (the node's
HyDFS client knows the ring), and they send progress to the leader node directly. A refusal
is a `RemoteError` carrying the node's error code (HyDFS's codes pass through unchanged).
"""

from __future__ import annotations

from cluster import wire
from cluster.rpc import Peers, RemoteError, Unreachable
from hydfs.messages import NO_SUCH_FILE
from stream import messages as m

TIMEOUT = 120.0


class NodeLink:
    def __init__(self, node: tuple[str, int], leader: tuple[str, int], secret: str):
        self.node = node
        self.leader = leader
        self.peers = Peers.by_address(secret)

    def append(self, name: str, data: bytes, append_id: tuple[str, int] | None = None) -> dict:
        with self.peers.open(self.node, TIMEOUT) as conn:
            try:
                conn.send_bulk_bytes({"t": m.HYDFS_APPEND, "name": name,
                                      "id": list(append_id) if append_id else None}, data)
            except OSError as exc:
                raise Unreachable(f"node {self.node[0]}:{self.node[1]}: {exc}") from None
            return self.peers.reply_to(self.node, conn)

    def create(self, name: str, data: bytes = b"") -> None:
        with self.peers.open(self.node, TIMEOUT) as conn:
            try:
                conn.send_bulk_bytes({"t": m.HYDFS_CREATE, "name": name}, data)
            except OSError as exc:
                raise Unreachable(f"node {self.node[0]}:{self.node[1]}: {exc}") from None
            self.peers.reply_to(self.node, conn)

    def read_range(self, name: str, offset: int, length: int):
        """Yield the bytes of a range of a HyDFS file, in chunks."""
        with self.peers.open(self.node, TIMEOUT) as conn:
            reply = self.peers.exchange(self.node, conn, {
                "t": m.HYDFS_READ, "name": name, "offset": offset, "length": length})
            yield from conn.recv_bulk_chunks(wire.bulk_length(reply))

    def read_all(self, name: str) -> bytes | None:
        """A whole (small) HyDFS file, or None if it does not exist."""
        try:
            return b"".join(self.read_range(name, 0, 1 << 62))
        except RemoteError as exc:
            if exc.code == NO_SUCH_FILE:
                return None
            raise

    def report(self, message: dict) -> None:
        self.peers.call(self.leader, message, timeout=TIMEOUT)
