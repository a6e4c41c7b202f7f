"""The network side of a task process: an inbox server and one sender per peer task.

Tasks talk to each other directly over TCP with the wire format (messages.py lists the
types: stream.block and stream.ack between tasks, stream.schedule and stream.stop from the
leader).

`Inbox` accepts connections and turns every message into an item on one queue, so the task's
main loop is single-threaded. A block that is in the queue already (a resend, from the same
attempt) is not queued again: a task busy with a long batch gets its upstream's resends,
and without this they would pile up, one window's worth each `resend_after`. A `Sender` owns one connection to one peer task, sends in the
order given, and when the peer is unreachable keeps its queue and retries, reconnecting to
the peer's new address once the schedule moves the task elsewhere.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time

from cluster import wire
from cluster.connection import Connection
from stream.messages import BLOCK

log = logging.getLogger("task")

MAX_BLOCK_BYTES = 256 << 20
RETRY_PAUSE = 0.2


class InboxQueue(queue.Queue):
    """A queue of (message, payload) that holds at most one copy of each block."""

    def _init(self, maxsize) -> None:
        super()._init(maxsize)
        self._blocks: set = set()
        self.duplicates = 0

    def _put(self, item) -> None:
        key = _block_key(item)
        if key is not None:
            if key in self._blocks:
                self.duplicates += 1
                return
            self._blocks.add(key)
        super()._put(item)

    def _get(self):
        item = super()._get()
        key = _block_key(item)
        if key is not None:
            self._blocks.discard(key)
        return item


def _block_key(item):
    message = item[0]
    if not isinstance(message, dict) or message.get("t") != BLOCK:
        return None
    return (str(message.get("from")), message.get("epoch"), message.get("id"))


class Inbox:
    def __init__(self, host: str, key: bytes | None):
        self.key = key
        self.items: queue.Queue = InboxQueue()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self._sock.listen(64)
        self.address = f"{host}:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True, name="inbox").start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(sock,), daemon=True).start()

    def _read(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(sock, self.key)
        try:
            while True:
                msg = conn.recv()
                payload = b""
                if msg.get("bulk"):
                    payload = conn.recv_bulk_bytes(wire.bulk_length(msg), MAX_BLOCK_BYTES)
                self.items.put((msg, payload))
        except (OSError, wire.ProtocolError):
            pass
        finally:
            conn.close()


class Sender(threading.Thread):
    """Delivers messages to one peer task, in order, across its moves and restarts."""

    def __init__(self, peer: str, key: bytes | None):
        super().__init__(daemon=True, name=f"send-{peer}")
        self.peer = peer
        self.key = key
        self.address: str | None = None
        self._queue: queue.Queue = queue.Queue()
        self._conn: Connection | None = None
        self._moved = threading.Event()
        self._queued: set[str] = set()         # ids of blocks queued, not yet delivered
        self._lock = threading.Lock()
        self.start()

    def set_address(self, address: str) -> None:
        if address != self.address:
            self.address = address
            self._moved.set()

    def send(self, message: dict, payload: bytes = b"") -> None:
        """Queue `message`. A block that is queued already and not yet delivered is not
        queued again: resends to a task that cannot be reached would pile up behind it."""
        block = message.get("id") if message.get("t") == BLOCK else None
        with self._lock:
            if block is not None:
                if block in self._queued:
                    return
                self._queued.add(block)
        self._queue.put((message, payload))

    def run(self) -> None:
        while True:
            message, payload = self._queue.get()
            while not self._deliver(message, payload):
                self._moved.wait(RETRY_PAUSE)
            if message.get("t") == BLOCK:
                with self._lock:
                    self._queued.discard(message.get("id"))

    def _deliver(self, message: dict, payload: bytes) -> bool:
        if self._moved.is_set() or self._conn is None:
            self._moved.clear()
            self._close()
            if self.address is None:
                return False
            host, port = self.address.rsplit(":", 1)
            try:
                self._conn = Connection.open((host, int(port)), self.key, timeout=5)
            except OSError:
                return False
        try:
            if payload:
                self._conn.send_bulk_bytes(message, payload)
            else:
                self._conn.send(message)
            return True
        except OSError:
            self._close()
            return False

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def wait_for(items: queue.Queue, timeout: float):
    """The next inbox item, or None after `timeout` seconds."""
    try:
        return items.get(timeout=max(timeout, 0.0))
    except queue.Empty:
        return None


def drain(items: queue.Queue, deadline):
    """Inbox items until `deadline()` (monotonic), asked again after each item: an item
    may make something due sooner (the last ack a source waited for: it is done now, not
    at its next commit). No busy-waiting, and a flood of items does not hold the caller
    past the deadline."""
    left = deadline() - time.monotonic()
    while True:
        item = wait_for(items, left)
        if item is None:
            return
        yield item
        left = deadline() - time.monotonic()
        if left <= 0:
            return
