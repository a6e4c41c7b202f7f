"""Peers keep connections for the next call (cluster/rpc.py): a request costs a round trip,
not a TCP handshake and a server thread; a connection is never reused once the server
closed it, nor after a failed or refused call."""

from __future__ import annotations

import socket
import threading

import pytest

from cluster.config import Config
from cluster.connection import Connection
from cluster.errors import HandlerError
from cluster.local_cluster import free_ports
from cluster.messages import Catalogue, OK
from cluster.rpc import Peers, RemoteError
from cluster.server import MessageServer

pytestmark = pytest.mark.timeout(30)

TEST = Catalogue("pooltest")
WHO = TEST.add("pooltest.who", (), "which server thread serves this connection")
REFUSE = TEST.add("pooltest.refuse", (), "answer an error")


@pytest.fixture
def server():
    port = free_ports(1)[0]
    srv = MessageServer("127.0.0.1", port, None)

    def who(conn, msg):
        conn.send({"t": OK, "thread": threading.current_thread().name})

    def refuse(conn, msg):
        raise HandlerError("nope", "refused")
    srv.add_routes({WHO: who, REFUSE: refuse})
    srv.start()
    yield ("127.0.0.1", port)
    srv.stop()


def peers() -> Peers:
    return Peers(Config(secret="", nodes={}))


def test_calls_to_one_server_reuse_one_connection(server):
    p = peers()
    first = {p.call(server, {"t": WHO})["thread"] for _ in range(5)}
    assert len(first) == 1


def test_concurrent_calls_each_get_a_connection_and_keep_it(server):
    p = peers()
    barrier = threading.Barrier(3)
    seen = []

    def caller():
        barrier.wait()
        seen.append(p.call(server, {"t": WHO})["thread"])
    threads = [threading.Thread(target=caller) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    again = {p.call(server, {"t": WHO})["thread"] for _ in range(3)}
    assert again <= set(seen)


def test_a_refused_call_does_not_keep_its_connection(server):
    p = peers()
    before = p.call(server, {"t": WHO})["thread"]
    with pytest.raises(RemoteError):
        p.call(server, {"t": REFUSE})
    assert p.call(server, {"t": WHO})["thread"] != before


def test_a_connection_the_server_closed_is_not_used_again():
    """A server that closes after each reply (an older node, or its idle timeout): the
    kept connection polls readable, so the next call opens a new one and succeeds."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    served = []

    def serve():
        for _ in range(2):
            sock, _ = listener.accept()
            conn = Connection(sock, None)
            message = conn.recv()
            conn.send({"t": OK, "n": len(served)})
            served.append(message)
            conn.close()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    p = peers()
    address = listener.getsockname()
    assert p.call(address, {"t": "x"})["n"] == 0
    assert p.call(address, {"t": "x"})["n"] == 1
    thread.join(5)
    listener.close()
    assert len(served) == 2
