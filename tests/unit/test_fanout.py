"""The coordinator's fan-out (fanout.py): every replica gets the bytes as they pass, and a
replica that fails drops out with its reason while the others carry on."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from cluster import wire
from cluster.connection import Connection
from hydfs.fanout import Fanout
from cluster.rpc import Unreachable

pytestmark = pytest.mark.timeout(30)

CHUNKS = [bytes([i]) * 300_000 for i in range(8)]          # 2.4 MB: more than socket buffers
PAYLOAD = b"".join(CHUNKS)


class FakePeers:
    """`open(vm)` gives a connection to a replica thread that behaves as `behaviour[vm]`
    says: "ok" stores and acknowledges, "refuse" answers an error after reading, "hang up"
    closes after the header, "down" cannot be reached."""

    def __init__(self, behaviour: dict[str, str], key=None):
        self.behaviour, self.key = behaviour, key
        self.received: dict[str, bytes] = {}
        self.threads = []
        self.release = threading.Event()

    def open(self, vm: str) -> Connection:
        if self.behaviour[vm] == "down":
            raise Unreachable(f"node {vm} unreachable: connection refused")
        ours, theirs = socket.socketpair()
        thread = threading.Thread(target=self._replica, args=(vm, Connection(theirs, self.key)))
        thread.start()
        self.threads.append(thread)
        return Connection(ours, self.key)

    def take(self, vm: str) -> Connection:
        return self.open(vm)

    def give_back(self, vm: str, conn: Connection) -> None:
        self.given_back = getattr(self, "given_back", []) + [vm]
        conn.close()

    def _replica(self, vm: str, conn: Connection) -> None:
        with conn:
            header = conn.recv()
            if self.behaviour[vm] == "hang up":
                return
            try:
                data = conn.recv_bulk_bytes(wire.bulk_length(header), 1 << 30)
            except wire.ProtocolError:
                return                                  # cut off: store nothing
            if self.behaviour[vm] == "refuse":
                conn.send({"t": "error", "error": "file x already exists"})
                return
            self.received[vm] = data
            if self.behaviour[vm] == "paused":          # took it all in, never answers
                self.release.wait(20)
                return
            conn.send({"t": "ok"})

    def join(self) -> None:
        for thread in self.threads:
            thread.join()


@pytest.mark.parametrize("key", [None, b"k" * 32], ids=["plain", "hmac"])
def test_every_replica_gets_the_bytes_as_they_pass(key):
    peers = FakePeers({"02": "ok", "03": "ok"}, key)
    with Fanout(peers, ["02", "03"], {"t": "hydfs.create_replica"}, len(PAYLOAD)) as fanout:
        passed = list(fanout.tee(iter(CHUNKS)))
        failed = fanout.finish()
    peers.join()
    assert passed == CHUNKS and failed == {}
    assert peers.received == {"02": PAYLOAD, "03": PAYLOAD}


def test_failing_replicas_drop_out_and_the_rest_carry_on():
    peers = FakePeers({"02": "ok", "03": "hang up", "04": "refuse", "05": "down"})
    vms = ["02", "03", "04", "05"]
    with Fanout(peers, vms, {"t": "hydfs.create_replica"}, len(PAYLOAD)) as fanout:
        assert list(fanout.tee(iter(CHUNKS))) == CHUNKS
        failed = fanout.finish()
    peers.join()
    assert peers.received == {"02": PAYLOAD}
    assert set(failed) == {"03", "04", "05"}
    assert "already exists" in failed["04"] and "refused" in failed["05"]


def test_a_source_that_stops_early_leaves_replicas_with_nothing():
    peers = FakePeers({"02": "ok"})
    with pytest.raises(ConnectionError):
        with Fanout(peers, ["02"], {"t": "hydfs.create_replica"}, len(PAYLOAD)) as fanout:
            for i, _ in enumerate(fanout.tee(iter(CHUNKS))):
                if i == 3:
                    raise ConnectionError("the client went away")
    peers.join()
    assert peers.received == {}


# -- the create that uses it (coordinator.py) -------------------------------------------------

class FailingStore:
    """A store whose disk fails once the whole create has gone by (e.g. ENOSPC at fsync)."""

    def create(self, name, file_id, chunks, size):
        for _ in chunks:
            pass
        raise OSError(28, "No space left on device")

    def lock(self, name):
        return threading.Lock()

    def get_state(self, name):
        return None                        # the failed create left nothing here


def test_a_create_whose_local_store_fails_is_undone_on_the_replicas():
    from hydfs.coordinator import Coordinator

    peers = FakePeers({"02": "ok", "03": "ok"})
    discarded = []
    peers.call = lambda vm, msg, timeout=None: discarded.append((vm, msg["t"], msg["file_id"]))
    class Replica:                         # the HydfsService a coordinator is built on
        vm, store = "01", FailingStore()

        def __init__(self):
            self.peers = peers

        @staticmethod
        def parallel(fn, items):
            return [fn(item) for item in items]

        @staticmethod
        def is_live(vm):
            return True
    coordinator = Coordinator(Replica())

    class Client:                          # the client's side of the connection
        def recv_bulk_chunks(self, size):
            return iter(CHUNKS)
    with pytest.raises(OSError, match="No space"):
        coordinator._store_and_forward(Client(), "f", "1-me", len(PAYLOAD), ["02", "03"])
    peers.join()
    assert peers.received == {"02": PAYLOAD, "03": PAYLOAD}         # they had stored it...
    assert sorted(discarded) == [("02", "hydfs.discard", "1-me"),   # ...and are told to drop it
                                 ("03", "hydfs.discard", "1-me")]


def test_a_paused_replica_is_waited_for_only_until_it_is_declared_failed():
    """Regression: a SIGSTOPped replica takes the payload into its kernel buffers and never
    answers; the coordinator waited the whole reply timeout (30 s) and every write to the
    file stalled that long, although the group declared the replica failed in seconds."""
    peers = FakePeers({"02": "ok", "03": "paused"})
    declared_at = time.monotonic() + 0.5
    with Fanout(peers, ["02", "03"], {"t": "hydfs.append_replica"}, len(PAYLOAD),
                alive=lambda vm: vm != "03" or time.monotonic() < declared_at) as fanout:
        list(fanout.tee(iter(CHUNKS)))
        started = time.monotonic()
        failed = fanout.finish()
    assert list(failed) == ["03"] and "declared failed" in failed["03"]
    assert time.monotonic() - started < 3
    peers.release.set()
    peers.join()
