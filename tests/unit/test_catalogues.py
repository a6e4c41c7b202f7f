"""Message catalogues: append-only, the only place a message type is spelled, and served.

Each subsystem lists its message types in one module (cluster/messages.py says why). The
lists below pin what nodes already speak: a type may be added at the end, never renamed,
reordered or removed, since another node of the cluster may still send it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cluster.config import Config
from cluster.local_cluster import free_ports
from cluster.messages import CLUSTER, MessageType
from hydfs.messages import HYDFS
from membership.messages import MEMBERSHIP
from stream.messages import STREAM

pytestmark = pytest.mark.timeout(30)

REPO = Path(__file__).resolve().parents[2]
CATALOGUES = {"cluster": CLUSTER, "membership": MEMBERSHIP, "hydfs": HYDFS, "stream": STREAM}
SPOKEN = {
    "cluster": ["ok", "error", "ctl", "ctl_output", "ctl_result"],
    "membership": ["join", "join_ack", "sync_req", "sync", "ping", "ack", "update"],
    "hydfs": ["hydfs.summary", "hydfs.manifest", "hydfs.get", "hydfs.fetch", "hydfs.state",
              "hydfs.create_replica", "hydfs.append_replica", "hydfs.apply_merge",
              "hydfs.create", "hydfs.append", "hydfs.merge", "hydfs.discard",
              "hydfs.client_append", "hydfs.data", "hydfs.not_modified", "hydfs.records",
              "hydfs.record", "hydfs.fence", "hydfs.fence_begin", "hydfs.fence_seal",
              "hydfs.read_view", "hydfs.watch"],
    "stream": ["stream.start_task", "stream.stop_job", "stream.hydfs_append",
               "stream.hydfs_create", "stream.hydfs_read", "stream.report", "stream.task_exit",
               "stream.block", "stream.ack", "stream.schedule", "stream.stop",
               "stream.hydfs_fence", "stream.lease", "stream.hydfs_read_view",
               "stream.hydfs_settled", "stream.hydfs_watch"],
}
# Types a node's TCP server does not serve: replies, parts of a transfer, task inboxes, UDP.
NOT_SERVED_BY_A_NODE = {"ok", "error", "ctl_output", "ctl_result", "hydfs.data",
                        "hydfs.not_modified", "hydfs.records", "hydfs.record", "stream.block",
                        "stream.ack", "stream.schedule", "stream.stop"}
PRODUCTION = [p for layer in ("cluster", "membership", "hydfs", "stream", "node")
              for p in sorted((REPO / layer).rglob("*.py"))]


@pytest.mark.parametrize("subsystem", SPOKEN)
def test_a_catalogue_only_grows_at_its_end(subsystem):
    names = CATALOGUES[subsystem].names()
    assert names[:len(SPOKEN[subsystem])] == SPOKEN[subsystem]


def test_no_type_is_in_two_catalogues():
    names = [n for c in CATALOGUES.values() for n in c.names()]
    assert len(names) == len(set(names))


def _spelled_types(path: Path) -> list[str]:
    """Message types written as string literals: {"t": "..."} and x["t"] == "..."."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "t" and \
                        isinstance(value, ast.Constant):
                    found.append(value.value)
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_is_type_lookup(s) for s in sides):
                found += [s.value for s in sides if isinstance(s, ast.Constant)]
    return found


def _is_type_lookup(node) -> bool:
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "t"
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get" and node.args
            and isinstance(node.args[0], ast.Constant) and node.args[0].value == "t")


@pytest.mark.parametrize("path", PRODUCTION, ids=lambda p: p.relative_to(REPO).as_posix())
def test_message_types_are_named_by_their_catalogue_not_spelled(path):
    assert _spelled_types(path) == []


def test_every_type_a_node_serves_is_catalogued_and_every_request_is_served(tmp_path):
    from node.node import Node
    ports = free_ports(1)
    config = Config(introducer="01", leader="01", data_dir=str(tmp_path / "data"),
                    log_dir=str(tmp_path / "logs"), nodes={"01": f"127.0.0.1:{ports[0]}"})
    node = Node(config, "01")
    try:
        served = set(node.server._routes)
    finally:
        node.server.stop()
        node.membership.stop()
    assert all(isinstance(t, MessageType) for t in served)
    requests = {n for c in (CLUSTER, HYDFS, STREAM) for n in c.names()} - NOT_SERVED_BY_A_NODE
    assert served == requests
