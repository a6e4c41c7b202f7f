"""The node's TCP server: one listening socket, one thread per connection.

The thread that accepts a connection serves it; spare threads wait in accept() for the
next ones (the kernel wakes one per connection). When fewer than MIN_WAITING are left, a
new one is started once the new connection's first request is answered (at once if none
is left), and a thread whose connection closed waits for another unless MAX_WAITING
already do. So a connection costs no thread start and no hand-off from an accepting thread
on its way to its first answer: on a small VM, those cost more than a short request itself
(0.3 of 0.7 ms; a thread's start alone takes 0.1 to 0.3 ms).

Like CPython's socketserver, the server owns accepting and concurrency; handlers only handle.
A connection carries a sequence of requests; each request is a message whose type selects a
handler from the dispatch table that the node's services hand over (`add_routes`, a dict
from `MessageType` to handler; each subsystem's catalogue lists its types). The server
checks that a request carries every field its type requires; then the handler gets the
`Connection` and the message and writes its own reply (which may be followed by a bulk
payload, streamed). A handler that refuses a request raises `HandlerError(code, reason)`,
which becomes an ``error`` reply with that code (errors.py).

Anything malformed, oversized or unauthenticated is logged (rate-limited) and the connection
is closed; an exception inside a handler is logged and reported to the client as an
``internal`` error. Neither ever stops the node.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback

from cluster import wire
from cluster.connection import Connection, ConnectionClosed, wide_buffers
from cluster.errors import BAD_REQUEST, INTERNAL, PROTOCOL_ERROR, UNKNOWN_MESSAGE, HandlerError
from cluster.logs import BadInputLog, Occasional
from cluster.messages import MessageType, error_reply

log = logging.getLogger("server")

IDLE_TIMEOUT = 600.0       # seconds a connection may sit idle between requests
FIRST_MESSAGE_TIMEOUT = 10.0   # a new connection must send a whole first message by then
FIRST_LINE_LIMIT = 1 << 20     # and it may be at most this long: junk is cut off early
# What a handler raises on a field of the wrong type or shape: the request was bad, not the
# handler; answered bad_request and logged as bad input (rate-limited).
MALFORMED = (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError,
             RecursionError)
MAX_CONNECTIONS = 512      # beyond this, new connections are refused (closed at once)
SPARE_ACCEPTORS = 2        # threads waiting in accept() at the start
MIN_WAITING = 2            # fewer waiting, a new one is started
MAX_WAITING = 8            # this many waiting, a thread whose connection closed ends


class MessageServer:
    def __init__(self, host: str, port: int, key: bytes | None):
        self.key = key
        self._routes = {}
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        wide_buffers(self._sock)       # accepted connections inherit them
        self._sock.bind((host, port))
        self.port = self._sock.getsockname()[1]
        self._sock.listen(128)
        self._stop = threading.Event()
        self._active = 0           # connections being served
        self._waiting = 0          # threads in (or on their way to) accept()
        self._active_lock = threading.Lock()
        self.bad_input = BadInputLog(log)
        self._internal_errors = Occasional(first=5)

    def add_routes(self, routes: dict[MessageType, object]) -> None:
        """Serve each message type with its handler(conn, message); a type served twice is
        a wiring bug."""
        for message_type, handler in routes.items():
            if not isinstance(message_type, MessageType):
                raise TypeError(f"{message_type!r} is not from a message catalogue")
            if message_type in self._routes:
                raise ValueError(f"message type {message_type} is routed twice")
            self._routes[message_type] = (message_type, handler)

    def start(self) -> None:
        for _ in range(SPARE_ACCEPTORS):
            self._start_acceptor()

    def _start_acceptor(self) -> None:
        with self._active_lock:
            self._waiting += 1
        try:
            threading.Thread(target=self._accept_and_serve, name=f"tcp-{self.port}-accept",
                             daemon=True).start()
        except RuntimeError as exc:     # out of threads: the ones there go on serving
            with self._active_lock:
                self._waiting -= 1
            n = self._internal_errors.due()
            if n is not None:
                log.error("cannot start a thread for new connections: %s (%d so far)", exc, n)

    def stop(self) -> None:
        self._stop.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    def _accept_and_serve(self) -> None:
        """Accept a connection and serve it, until the server stops or enough other
        threads wait for connections."""
        while not self._stop.is_set():
            try:
                sock, peer = self._sock.accept()
            except OSError:
                if self._stop.is_set():
                    return
                continue
            with self._active_lock:
                if self._active >= MAX_CONNECTIONS:
                    sock.close()
                    self.bad_input.reject("tcp", peer, "too many connections")
                    continue
                self._active += 1
                self._waiting -= 1
                left = self._waiting
            if not left:     # someone must take the next connection while this one is served
                self._start_acceptor()
            me = threading.current_thread()
            me.name = f"tcp-{self.port}-{peer[0]}:{peer[1]}"
            self._serve(sock, peer, self._top_up if 0 < left < MIN_WAITING else None)
            me.name = f"tcp-{self.port}-accept"
            with self._active_lock:
                if self._waiting >= MAX_WAITING:
                    return
                self._waiting += 1

    def _top_up(self) -> None:
        with self._active_lock:
            short = self._waiting < MIN_WAITING
        if short:
            self._start_acceptor()

    def _serve(self, sock: socket.socket, peer, after_first=None) -> None:
        """Serve the connection's requests until it closes; `after_first()` once the first
        one is answered."""
        sock.settimeout(FIRST_MESSAGE_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(sock, self.key, max_line=FIRST_LINE_LIMIT)
        source = f"{peer[0]}:{peer[1]}"
        try:
            first = True
            while not self._stop.is_set():
                message = conn.recv()
                if first:    # a well-formed (and authentic) message: a real peer
                    first = False
                    sock.settimeout(IDLE_TIMEOUT)
                    conn.set_max_line(wire.MAX_LINE_BYTES)
                if not self._dispatch(conn, message, source):
                    return
                if after_first is not None:
                    after_first()
                    after_first = None
        except ConnectionClosed:
            pass
        except wire.ProtocolError as exc:
            self.bad_input.reject("tcp", source, str(exc))
            _try_send(conn, error_reply(PROTOCOL_ERROR, f"protocol error: {exc}"))
        except (socket.timeout, OSError):
            pass
        finally:
            conn.close()
            with self._active_lock:
                self._active -= 1

    def _dispatch(self, conn: Connection, message: dict, source: str) -> bool:
        """Run the handler; False when the connection must be closed."""
        route = self._routes.get(message["t"])
        if route is None:
            reason = f"unknown message type {message['t']!r}"
            self.bad_input.reject("tcp", source, reason)
            _try_send(conn, error_reply(UNKNOWN_MESSAGE, reason))
            return False
        message_type, handler = route
        missing = message_type.missing_field(message)
        if missing is not None:     # its bulk payload, if any, was never read: close after
            reason = f"{message_type} without its {missing!r} field"
            self.bad_input.reject("tcp", source, reason)
            _try_send(conn, error_reply(BAD_REQUEST, reason))
            return False
        try:
            handler(conn, message)
        except HandlerError as exc:
            conn.send(error_reply(exc.code, str(exc)))
            # A bulk payload the handler may not have read would be taken for the next
            # request: after a refusal, such a connection is not used again.
            return not message.get("bulk")
        except (wire.ProtocolError, OSError):
            raise
        except MALFORMED as exc:  # a field of the wrong type or shape (tests/fuzz.py)
            where = traceback.extract_tb(exc.__traceback__)[-1]
            reason = (f"malformed {message['t']!r} message: {type(exc).__name__}: {exc} "
                      f"(at {os.path.basename(where.filename)}:{where.lineno}, in case "
                      f"it is a bug)")
            self.bad_input.reject("tcp", source, reason[:400])
            _try_send(conn, error_reply(BAD_REQUEST, reason[:300]))
            return False
        except Exception as exc:  # a bug in one handler must not take the node down
            n = self._internal_errors.due()
            if n is not None:
                log.exception("handler for %r failed (%d internal errors so far)",
                              message["t"], n)
            _try_send(conn, error_reply(INTERNAL, f"internal error: {exc}"))
            return False
        return True


def _try_send(conn: Connection, message: dict) -> None:
    try:
        conn.send(message)
    except OSError:
        pass
