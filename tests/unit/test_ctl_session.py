"""A ctl request's answer on the node (cluster/ctl_session.py): a short command is answered
by the thread that serves its connection, with no other thread; one that prints or runs
long gets a sender, which keeps its lines in order before the result and sends keepalives
while it is silent; a caller that hung up stops being written to."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from cluster import ctl_session
from cluster.connection import Connection
from cluster.ctl_session import Session, Ticker
from cluster.messages import CTL_OUTPUT, CTL_RESULT

pytestmark = pytest.mark.timeout(30)

RESULT = {"t": CTL_RESULT, "ok": True, "text": "done", "doc": {}}


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    yield Connection(ours), Connection(theirs)
    ours.close()
    theirs.close()


def received_until_result(conn: Connection) -> list[dict]:
    replies = []
    while not replies or replies[-1]["t"] != CTL_RESULT:
        replies.append(conn.recv())
    return replies


def test_a_short_silent_command_starts_no_thread(pair):
    node, caller = pair
    before = threading.active_count()
    session = Session(node)
    session.finish(RESULT)
    assert threading.active_count() == before
    assert received_until_result(caller) == [RESULT]


def test_lines_and_notes_from_any_thread_come_in_order_before_the_result(pair):
    node, caller = pair
    session = Session(node)
    session.emit("one")
    threading.Thread(target=lambda: (session.note({"job": "j1"}), session.emit("two"))).start()
    time.sleep(0.05)
    session.finish(RESULT)
    session.emit("after the result: dropped")
    assert received_until_result(caller) == [
        {"t": CTL_OUTPUT, "text": "one"}, {"t": CTL_OUTPUT, "note": {"job": "j1"}},
        {"t": CTL_OUTPUT, "text": "two"}, RESULT]
    caller.sock.settimeout(0.2)
    with pytest.raises(socket.timeout):
        caller.recv()


def test_a_long_silent_command_gets_keepalives(pair, monkeypatch):
    monkeypatch.setattr(ctl_session, "KEEPALIVE", 0.2)
    node, caller = pair
    ticker = Ticker(period=0.05)
    session = Session(node)
    ticker.watch(session)
    time.sleep(0.7)
    ticker.unwatch(session)
    session.finish(RESULT)
    replies = received_until_result(caller)
    assert replies[-1] == RESULT
    assert 2 <= len(replies) - 1 <= 4
    assert all(r == {"t": CTL_OUTPUT, "keepalive": True} for r in replies[:-1])


def test_a_caller_that_hung_up_is_no_longer_written_to(pair):
    node, caller = pair
    caller.close()
    session = Session(node)
    session.emit("nobody reads this")
    deadline = time.monotonic() + 5
    while session.attached() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not session.attached()
    session.emit("dropped")
    with pytest.raises(OSError):
        session.finish(RESULT)


def test_a_reply_json_cannot_carry_fails_the_request_instead_of_vanishing(pair):
    """Regression (review): a sender thread that died on a note holding a set let finish()
    return as if the result had gone out; the caller heard nothing until its timeout."""
    node, _ = pair
    session = Session(node)
    session.note({"ids": {1, 2}})
    with pytest.raises(TypeError):
        session.finish(RESULT)
    assert not session.attached()
