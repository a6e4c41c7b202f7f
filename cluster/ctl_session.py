"""One ctl request's answer on the node: progress lines, notes, keepalives, then the result,
sent in that order on the caller's connection.

The command runs in the thread that serves the connection. Most commands (a get, a
listing) finish in a millisecond and print nothing: their result is sent by that thread,
and nothing else starts. On this kind of machine a thread's start and two hand-offs cost
more than the whole command (a ctl round trip went from 0.59 to 0.27 ms without them).

A command that prints, or runs long, gets a sender thread of its own, started when it is
first needed: on its first line or note, or by the process's one `Ticker` once it has run
for KEEPALIVE / 2 seconds. Output never blocks whoever emits it (a job's thread writing to
the consoles that follow it must not stall on a caller that stopped reading): lines go to
an outbox the sender drains, and it sends a keepalive after every KEEPALIVE seconds of
silence, so that the caller can tell a slow command from a node that stopped answering.
Once the caller has hung up (a send failed), `attached()` is False and output is dropped.
"""

from __future__ import annotations

import collections
import threading
import time

from cluster.connection import Connection
from cluster.messages import CTL_OUTPUT, CTL_RESULT

KEEPALIVE = 2.0


class Session:
    """The node's side of one ctl request on `conn`."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.started = time.monotonic()
        self._gone = threading.Event()      # the caller hung up: stop talking to it
        self._cond = threading.Condition()
        self._outbox: collections.deque = collections.deque()
        self._sender: threading.Thread | None = None
        self._finished = False              # the result is queued or sent
        self._error: OSError | None = None  # what the sender's failed send raised

    def attached(self) -> bool:
        return not self._gone.is_set()

    def emit(self, line: str) -> None:
        self._queue({"t": CTL_OUTPUT, "text": line})

    def note(self, fields: dict) -> None:
        self._queue({"t": CTL_OUTPUT, "note": dict(fields)})

    def _queue(self, reply: dict) -> None:
        with self._cond:
            if self._gone.is_set() or self._finished:
                return
            self._outbox.append(reply)
            self._start_sender()
            self._cond.notify()

    def needs_keepalives(self, now: float) -> bool:
        """Has it run for KEEPALIVE / 2 seconds with no sender? (the Ticker asks)"""
        return self._sender is None and now - self.started >= KEEPALIVE / 2

    def keep_alive(self) -> None:
        """Start the sender, so that keepalives go out while the command runs."""
        with self._cond:
            if not self._finished:
                self._start_sender()

    def finish(self, result: dict) -> None:
        """Send `result` after everything queued before it; OSError if the caller is gone
        (the connection is not used again), or what a failed send raised."""
        with self._cond:
            self._finished = True
            sender = self._sender
            if sender is not None:
                self._outbox.append(result)
                self._cond.notify()
        if sender is None:
            self._send(result)
            return
        sender.join()
        if self._error is not None:
            raise self._error

    def _start_sender(self) -> None:
        """(under the lock)"""
        if self._sender is None:
            self._sender = threading.Thread(target=self._send_queued, daemon=True,
                                            name="ctl-output")
            self._sender.start()

    def _send_queued(self) -> None:
        while True:
            with self._cond:
                if not self._outbox:
                    self._cond.wait(KEEPALIVE)
                reply = self._outbox.popleft() if self._outbox else \
                    {"t": CTL_OUTPUT, "keepalive": True}
            try:
                self._send(reply)
            except Exception as exc:     # gone (OSError), or a reply JSON cannot carry
                self._error = exc
                self._gone.set()
                return
            if reply["t"] == CTL_RESULT:
                return

    def _send(self, reply: dict) -> None:
        try:
            self.conn.send(reply)
        except OSError:
            self._gone.set()
            raise


class Ticker:
    """The one thread per process that starts the sender of a command running long with
    no output (so that its caller gets keepalives). Started on first use."""

    def __init__(self, period: float = KEEPALIVE / 4):
        self.period = period
        self._sessions: set[Session] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._idle = False          # the thread waits for a session to watch

    def watch(self, session: Session) -> None:
        with self._cond:
            self._sessions.add(session)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="ctl-keepalive")
                self._thread.start()
            if self._idle:      # else it looks at the sessions soon anyway: waking it
                self._idle = False      # costs a command a GIL hand-off
                self._cond.notify()

    def unwatch(self, session: Session) -> None:
        with self._cond:
            self._sessions.discard(session)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._sessions:   # asleep while no command runs
                    self._idle = True
                    self._cond.wait()
            time.sleep(self.period)
            now = time.monotonic()
            with self._cond:
                due = [s for s in self._sessions if s.needs_keepalives(now)]
                self._sessions.difference_update(due)
            for session in due:
                session.keep_alive()


TICKER = Ticker()
