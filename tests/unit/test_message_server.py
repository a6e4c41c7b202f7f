"""The node's TCP server (cluster/server.py): the thread that accepts a connection serves
it, and spare threads wait for the next ones, so one connection after another starts no
threads; a burst of connections is served at once, and most of its threads end after it."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from cluster.connection import Connection
from cluster.local_cluster import free_ports
from cluster.messages import OK, Catalogue
from cluster.server import MAX_WAITING, SPARE_ACCEPTORS, MessageServer

pytestmark = pytest.mark.timeout(30)

TEST = Catalogue("servertest")
WHO = TEST.add("servertest.who", (), "which thread serves this connection")


@pytest.fixture
def server():
    port = free_ports(1)[0]
    srv = MessageServer("127.0.0.1", port, None)
    srv.add_routes({WHO: lambda conn, msg: conn.send({"t": OK,
                                                      "thread": threading.get_ident()})})
    srv.start()
    yield ("127.0.0.1", port)
    srv.stop()
    assert wait_for(lambda: not server_threads(port))


def ask(conn: Connection) -> int:
    conn.send({"t": WHO})
    return conn.recv()["thread"]


def server_threads(port: int) -> set[int]:
    """The threads of the server on `port` (they are named after it)."""
    return {t.ident for t in threading.enumerate() if t.name.startswith(f"tcp-{port}-")}


def wait_for(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_connections_one_after_another_start_no_thread_each():
    """The old server started a thread per connection; now 50 connections one after another
    start at most a few (one may start when a connection comes before the last one's
    thread is back in accept())."""
    port = free_ports(1)[0]
    srv = MessageServer("127.0.0.1", port, None)
    srv.add_routes({WHO: lambda conn, msg: conn.send({"t": OK, "thread": 0})})
    started = []
    real = srv._start_acceptor
    srv._start_acceptor = lambda: (started.append(1), real())
    srv.start()
    try:
        for _ in range(50):
            with Connection.open(("127.0.0.1", port), None) as conn:
                ask(conn)
        assert SPARE_ACCEPTORS <= len(started) <= MAX_WAITING
        assert len(server_threads(port)) <= MAX_WAITING + 1
    finally:
        srv.stop()


def test_a_burst_of_connections_is_served_at_once_and_its_threads_end(server):
    conns = [Connection.open(server, None) for _ in range(12)]
    try:
        assert len({ask(conn) for conn in conns}) == 12   # each held open, each served
    finally:
        for conn in conns:
            conn.close()
    assert wait_for(lambda: len(server_threads(server[1])) <= MAX_WAITING + 1)
    with Connection.open(server, None) as conn:           # and it still answers
        ask(conn)


def test_stop_ends_the_waiting_threads():
    port = free_ports(1)[0]
    srv = MessageServer("127.0.0.1", port, None)
    srv.start()
    assert len(server_threads(port)) == SPARE_ACCEPTORS
    srv.stop()
    assert wait_for(lambda: not server_threads(port))
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
