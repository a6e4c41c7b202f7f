"""Views, settled appends and watches on real node processes, read by a HyDFS client in the
test process that is no replica of anything (so every read goes over the network)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from cluster.config import load_config
from cluster.errors import CodedError
from cluster.local_cluster import wait_until
from cluster.metrics import Registry
from cluster.rpc import Peers
from hydfs.client import HydfsClient
from hydfs.idset import IdSet
from hydfs.metrics import HydfsMetrics
from hydfs.ring import Ring
from hydfs.store import ReplicaStore

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


class Outside:
    """What a HydfsClient needs of its node's HydfsService, for a client outside the
    cluster: the ring of the cluster's nodes (or only `owners`, to pin a replica), an
    empty store of its own."""

    def __init__(self, cluster, owners: list[str] | None = None):
        self.peers = Peers(load_config(str(cluster.config_path)))
        self.membership = SimpleNamespace(me=lambda: SimpleNamespace(id="outside-1"))
        self.store = ReplicaStore(str(cluster.root / "outside"))
        self.metrics = HydfsMetrics(Registry())
        self.vm, self.bits, self.replicas = "none", 11, 3
        self._ring = Ring(cluster.vms, self.bits)
        self._owners = owners

    def owners(self, name: str) -> list[str]:
        return self._owners or self._ring.replicas(name, self.replicas)

    @staticmethod
    def parallel(fn, items) -> list:
        def call(item):
            try:
                return fn(item)
            except CodedError as exc:     # reported per item, as HydfsService.parallel does
                return exc
        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(call, items))


def write(cluster, name: str, data: bytes) -> str:
    path = cluster.root / name
    path.write_bytes(data)
    return str(path)


def view_from(cluster, vm: str, name: str, ids: IdSet) -> bytes:
    size, chunks = HydfsClient(Outside(cluster, [vm]), 0, 5).read_view(name, ids, True, 0,
                                                                       1 << 20)
    data = b"".join(chunks)
    assert len(data) == size
    return data


def test_settled_appends_read_the_same_from_every_replica_and_a_watch_sees_new_ones(
        local_cluster):
    cluster = local_cluster(4)
    name = "followed"
    owners = Ring(cluster.vms, 11).replicas(name, 3)
    cluster.query("02", "create", write(cluster, "head", b"head|"), name)
    cluster.query("02", "append", write(cluster, "a", b"from02|"), name)
    cluster.query("03", "append", write(cluster, "b", b"from03|"), name)
    client = HydfsClient(Outside(cluster), 0, 5)
    settled = client.settled(name)
    assert len(settled) == 2                     # both acknowledged appends
    expected = b"head|from02|from03|"
    assert {vm: view_from(cluster, vm, name, settled) for vm in owners} == \
        {vm: expected for vm in owners}
    cluster.query("04", "merge", name)
    assert {view_from(cluster, vm, name, settled) for vm in owners} == {expected}

    assert client.watch(name, settled, 0.5) is None
    appender = threading.Thread(target=lambda: (time.sleep(0.5), cluster.query(
        "04", "append", write(cluster, "c", b"from04|"), name)), daemon=True)
    appender.start()
    started = time.monotonic()
    news = client.watch(name, settled, 20)
    assert news is not None and not settled.covers(news)
    assert time.monotonic() - started < 10
    appender.join()

    cluster.kill(owners[0])                      # acknowledged: still settled on the others
    grown = client.settled(name)
    assert grown.covers(settled) and len(grown) == 3
    size, chunks = client.read_view(name, grown, False, 0, 1 << 20)
    assert (size, b"".join(chunks)) == (21, b"from02|from03|from04|")


def test_reads_of_one_replica_reuse_one_connection_and_one_cut_short_does_not(
        local_cluster):
    """A get, a byte range and a view read whole leave their connection kept for the next
    read (a read costs a round trip, not a connection and a server thread); one stopped
    early is closed, and a kept one whose node restarted is replaced, once."""
    cluster = local_cluster(4)
    name, vm = "pooled", "03"
    data = bytes(range(256)) * 8192                   # 2 MiB: more than one chunk
    cluster.query("02", "create", write(cluster, "big", data), name)
    client = HydfsClient(Outside(cluster, [vm]), 0, 5)
    opened = []
    real_open = client.peers.open
    client.peers.open = lambda target, timeout=None: opened.append(target) or \
        real_open(target, timeout)

    out = cluster.root / "got"
    assert client.get(name, str(out))["size"] == len(data) and out.read_bytes() == data
    assert b"".join(client.read_range(name, 10, 1000)) == data[10:1010]
    ids = client.settled(name)                        # a summary call: pooled already
    size, chunks = client.read_view(name, ids, True, 0, 100)
    assert (size, b"".join(chunks)) == (len(data), data[:100])
    assert opened == [vm]

    chunks = client.read_range(name, 0, len(data))
    assert len(next(chunks)) < len(data)
    chunks.close()                                    # the rest of its payload is unread
    assert b"".join(client.read_range(name, 0, 5)) == data[:5]
    assert opened == [vm, vm]

    cluster.kill(vm)
    cluster.restart(vm)            # its copy answers once a round has checked it
    fresh = HydfsClient(Outside(cluster, [vm]), 0, 5)
    wait_until(lambda: _reads(fresh, name), 20, interval=0.2, what="vm03 to answer reads")
    assert b"".join(client.read_range(name, 0, 5)) == data[:5]
    assert opened == [vm, vm, vm]


def _reads(client, name) -> bool:
    try:
        return bool(b"".join(client.read_range(name, 0, 1)))
    except CodedError:
        return False
