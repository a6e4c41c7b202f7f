"""A task process's line to its own node: HyDFS reads and appends, and reports to the leader.

Task processes do not join the group; they ask the node that started them, over its TCP
port and with the cluster secret, to read or append HyDFS files on their behalf (the node's
HyDFS client knows the ring), and they send progress to the leader node directly. A refusal
is a `RemoteError` carrying the node's error code (HyDFS's codes pass through unchanged).
"""

from __future__ import annotations

from cluster import wire
from cluster.rpc import Peers, Unreachable
from hydfs.idset import IdSet
from stream import messages as m

TIMEOUT = 120.0
CONNECT_TIMEOUT = 10.0     # its own node: a busy machine may be slow to accept
REPORT_TIMEOUT = 5.0       # a report is worth less than the task loop it holds up


class NodeLink:
    def __init__(self, node: tuple[str, int], leader: tuple[str, int], secret: str):
        self.node = node
        self.leader = leader
        self.peers = Peers.by_address(secret, CONNECT_TIMEOUT)

    def append(self, name: str, data: bytes, append_id: tuple[str, int] | None = None) -> dict:
        return self.peers.call_bulk(self.node, {"t": m.HYDFS_APPEND, "name": name,
                                                "id": list(append_id) if append_id else None},
                                    data, TIMEOUT)

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

    def read_view(self, name: str, ids: IdSet, create: bool, offset: int,
                  length: int) -> tuple[int, bytes]:
        """The view's size and bytes [offset, offset + length) of it: the create's content
        if `create`, then the appends `ids` in merge order (the same from every replica)."""
        with self.peers.open(self.node, TIMEOUT) as conn:
            reply = self.peers.exchange(self.node, conn, {
                "t": m.HYDFS_READ_VIEW, "name": name, "ids": ids.to_wire(), "create": create,
                "offset": offset, "length": length})
            data = b"".join(conn.recv_bulk_chunks(wire.bulk_length(reply)))
        return int(reply["size"]), data

    def local_view(self, name: str, ids: IdSet, create: bool) -> dict | None:
        """Where the node's own copy holds the view wholly in its base file, for reading it
        directly (local_view.py); None if it does not."""
        return self.peers.call(self.node, {"t": m.HYDFS_LOCAL_VIEW, "name": name,
                                           "ids": ids.to_wire(), "create": create},
                               timeout=TIMEOUT).get("local")

    def settled(self, name: str) -> IdSet:
        """The appends of `name` on enough replicas to be read even after a failure."""
        reply = self.peers.call(self.node, {"t": m.HYDFS_SETTLED, "name": name},
                                timeout=TIMEOUT)
        return IdSet(reply["ids"])

    def watch(self, name: str, known: IdSet, timeout: float) -> IdSet | None:
        """Wait (at most `timeout` s) until a replica of `name` holds an append not in
        `known`; what it holds then, or None."""
        reply = self.peers.call(self.node, {"t": m.HYDFS_WATCH, "name": name,
                                            "known": known.to_wire(), "timeout": timeout},
                                timeout=timeout + TIMEOUT)
        return IdSet(reply["held"]) if reply.get("held") is not None else None

    def fence(self, name: str, key: str, epoch: int) -> IdSet:
        """Fence `name` against writer `key`'s epochs below `epoch`; the sealed set."""
        reply = self.peers.call(self.node, {"t": m.HYDFS_FENCE, "name": name, "key": key,
                                            "epoch": epoch}, timeout=TIMEOUT)
        return IdSet(reply["sealed"])

    def lease(self, job: str, task: list, epoch: int) -> dict:
        """Ask the node whether this attempt should go on (and renew its lease)."""
        return self.peers.call(self.node, {"t": m.LEASE, "job": job, "task": task,
                                           "epoch": epoch}, timeout=5)

    def read_all(self, name: str) -> bytes:
        """A whole (small) HyDFS file; RemoteError if it cannot be read (`no_such_file` only
        if no replica holds it)."""
        return b"".join(self.read_range(name, 0, 1 << 62))

    def report(self, message: dict) -> dict:
        """Counters to the leader; its answer (`stop`: why this attempt should stop)."""
        return self.peers.call(self.leader, message, timeout=REPORT_TIMEOUT)
