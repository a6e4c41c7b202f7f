"""A TCP connection speaking the wire format: message lines plus bulk payloads.

`Connection` wraps a connected socket. Reads go through one `LineDecoder`, so bytes of a
bulk payload that arrived together with its header are never lost. Bulk payloads are
streamed in bounded chunks (`CHUNK` bytes) to and from files: no payload is ever held whole
in memory. Without a secret, file ranges are sent with `socket.sendfile` (zero-copy) and
received by `splice` (socket to file inside the kernel); with one, the bytes pass through a
running HMAC and its digest follows them.
"""

from __future__ import annotations

import fcntl
import hmac
import os
import select
import socket

from cluster import wire
from cluster.chunks import drain

CHUNK = 1 << 20
# A read for message lines. recv allocates its whole buffer before it blocks, so every idle
# connection's thread (pooled ones wait for their next request) held a 1 MiB allocation
# with CHUNK, and each message cost a 1 MiB malloc. A bulk payload's rest is read by CHUNK.
LINE_READ = 1 << 16
SPLICE_FROM = 1 << 16     # smaller payload rests are copied through user space
# Socket buffers of a node's connections, both ends (Linux caps them at net.core.rmem_max
# and wmem_max). The defaults start small and grow with the traffic, so a new connection's
# first MiB crept through a small window: a get on a new connection took 1 ms more.
SOCKET_BUFFER = 4 << 20


def _caps_allow_wide_buffers() -> bool:
    """A size set by hand is never grown by the kernel: set one only where the caps let it
    be SOCKET_BUFFER (else the kernel's own tuning, which may grow further, is better)."""
    try:
        for cap in ("rmem_max", "wmem_max"):
            with open(f"/proc/sys/net/core/{cap}") as f:
                if int(f.read()) < SOCKET_BUFFER:
                    return False
        return True
    except (OSError, ValueError):
        return False


WIDE_BUFFERS = _caps_allow_wide_buffers()


def wide_buffers(sock: socket.socket) -> None:
    """Give `sock` SOCKET_BUFFER-sized buffers (before it connects or listens: the window
    scale is agreed then), where the system's caps allow it. A refusal is harmless."""
    if not WIDE_BUFFERS:
        return
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        except OSError:
            pass


def connect(address: tuple[str, int], timeout: float | None) -> socket.socket:
    """`socket.create_connection`, with wide buffers set before the connection is made."""
    host, port = address
    error: OSError | None = None
    for family, kind, proto, _, where in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            wide_buffers(sock)
            sock.settimeout(timeout)
            sock.connect(where)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error or OSError(f"getaddrinfo returned nothing for {host}")


class ConnectionClosed(wire.ProtocolError):
    """The peer closed the connection (possibly in the middle of a message)."""


class Connection:
    def __init__(self, sock: socket.socket, key: bytes | None = None,
                 max_line: int = wire.MAX_LINE_BYTES):
        self.sock = sock
        self.key = key
        self._decoder = wire.LineDecoder(max_line)
        self._sent_header = b""       # the last line sent / received: bulk MACs bind to it
        self._received_header = b""

    @classmethod
    def open(cls, address: tuple[str, int], key: bytes | None, timeout: float | None = 10.0):
        sock = connect(address, timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, key)

    def buffered(self) -> int:
        """Bytes received and not yet read (a connection between requests has none)."""
        return self._decoder.buffered()

    def set_max_line(self, max_line: int) -> None:
        self._decoder.max_line = max_line

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- messages ---------------------------------------------------------------------------

    def send(self, message: dict) -> None:
        line = wire.encode(message, self.key)
        self._sent_header = line
        self.sock.sendall(line)

    def recv(self) -> dict:
        """The next message; raises ConnectionClosed at end of stream, ProtocolError on junk."""
        while True:
            line = self._decoder.next_line()
            if line is not None:
                self._received_header = line
                return wire.decode(line, self.key)
            self._fill("a message")

    def request(self, message: dict) -> dict:
        self.send(message)
        return self.recv()

    def _fill(self, what: str) -> None:
        data = self.sock.recv(LINE_READ)
        if not data:
            raise ConnectionClosed(f"connection closed while reading {what}")
        self._decoder.feed(data)

    # -- bulk payloads ----------------------------------------------------------------------

    def send_bulk_file(self, message: dict, path: str, offset: int = 0,
                       length: int | None = None) -> None:
        """Send `message` with `"bulk"` set, then `length` bytes of `path` from `offset`."""
        with open(path, "rb") as f:
            if length is None:
                length = os.fstat(f.fileno()).st_size - offset
            self.send(dict(message, bulk=length))
            if self.key is None:
                if length:
                    self.sock.sendfile(f, offset, length)
                return
            f.seek(offset)
            mac = wire.bulk_mac(self.key, self._sent_header)
            remaining = length
            while remaining:
                chunk = f.read(min(CHUNK, remaining))
                if not chunk:
                    raise OSError(f"{path} shrank while being sent")
                mac.update(chunk)
                self.sock.sendall(chunk)
                remaining -= len(chunk)
            self.sock.sendall(mac.digest())

    def send_bulk_chunks(self, message: dict, length: int, chunks) -> None:
        """Send `message` with `"bulk": length`, then the chunks (exactly `length` bytes).

        If the chunk source fails midway (e.g. a checksum error), the exception propagates
        and the caller must drop the connection: the peer sees a truncated payload.
        """
        writer = self.bulk_writer(message, length)
        for chunk in chunks:
            writer.write(chunk)
        writer.close()

    def bulk_writer(self, message: dict, length: int) -> "BulkWriter":
        """Send `message` with `"bulk": length`; the payload follows through the writer, as
        its pieces become available (e.g. forwarded while they arrive from elsewhere)."""
        self.send(dict(message, bulk=length))
        return BulkWriter(self, length)

    def send_bulk_ranges(self, message: dict, length: int, ranges) -> None:
        """`send_bulk_chunks` for (file, offset, count) ranges of open files. Without a MAC
        the kernel sends them from the page cache (`sendfile`): nothing is copied here."""
        if self.key is not None:
            self.send_bulk_chunks(message, length, _read_ranges(ranges))
            return
        self.send(dict(message, bulk=length))
        sent = 0
        for f, offset, count in ranges:
            if count and self.sock.sendfile(f, offset, count) != count:
                raise OSError(f"{f.name} ended before {offset + count} while being sent")
            sent += count
        if sent != length:
            raise OSError(f"bulk source gave {sent} bytes, {length} declared")

    def send_bulk_bytes(self, message: dict, data: bytes) -> None:
        """Send a small in-memory payload (e.g. one append's bytes) after `message`."""
        self.send(dict(message, bulk=len(data)))
        self.sock.sendall(data)
        if self.key is not None:
            self.sock.sendall(_digest(self.key, self._sent_header, data))

    def recv_bulk_chunks(self, length: int):
        """Yield the `length` payload bytes in chunks; verify the MAC after the last one.

        The caller must not commit what it wrote until the generator is exhausted: a bad
        MAC raises AuthError at the end.
        """
        mac = wire.bulk_mac(self.key, self._received_header) if self.key is not None else None
        remaining = length
        while remaining:
            if self._decoder.buffered():      # bytes that came in with the header
                chunk = self._decoder.take(min(remaining, CHUNK))
            else:                             # the rest straight off the socket: no copies
                chunk = self._recv_exactly(min(remaining, CHUNK))
            remaining -= len(chunk)
            if mac is not None:
                mac.update(chunk)
            yield chunk
        if mac is not None:
            while self._decoder.buffered() < wire.BULK_MAC_LEN:
                self._fill("a bulk MAC")
            if not hmac.compare_digest(self._decoder.take(wire.BULK_MAC_LEN), mac.digest()):
                raise wire.AuthError("bad bulk payload authentication code")

    def discard_bulk(self, length: int) -> None:
        """Read and drop a payload (a refused request's), so the connection stays in step."""
        drain(self.recv_bulk_chunks(length))

    def _recv_exactly(self, n: int) -> bytes:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self.sock.recv_into(view[got:], n - got)
            if not k:
                raise ConnectionClosed("connection closed while reading a bulk payload")
            got += k
        return bytes(buf) if n < 65536 else buf

    def recv_bulk_bytes(self, length: int, limit: int) -> bytes:
        """A payload small enough to hold in memory; refuses more than `limit` bytes."""
        if length > limit:
            raise wire.ProtocolError(f"payload of {length} bytes exceeds {limit}")
        return b"".join(self.recv_bulk_chunks(length))

    def recv_bulk_to_file(self, length: int, f) -> None:
        """Write a payload into an open binary file. Without a MAC to check, the bytes go
        from the socket to the file inside the kernel (splice through a pipe), which is
        what lets a HyDFS get run near the speed of the disk."""
        if self.key is not None or not hasattr(os, "splice"):
            for chunk in self.recv_bulk_chunks(length):
                f.write(chunk)
            return
        early = self._decoder.take(min(length, self._decoder.buffered()))
        f.write(early)
        rest = length - len(early)
        if rest <= SPLICE_FROM:      # a pipe's set-up costs more than copying a few KiB
            if rest:
                f.write(self._recv_exactly(rest))
            return
        f.flush()
        _splice_into(self.sock, f.fileno(), rest)


def _splice_into(sock: socket.socket, fd: int, length: int) -> None:
    """Move `length` bytes from the socket to the file descriptor through a pipe."""
    read_end, write_end = os.pipe()
    _widen_pipe(write_end)
    timeout = sock.gettimeout()
    try:
        while length:
            try:
                moved = os.splice(sock.fileno(), write_end, min(length, CHUNK))
            except BlockingIOError:       # a socket with a timeout is non-blocking inside
                if not select.select([sock], [], [], timeout)[0]:
                    raise socket.timeout("timed out while reading a bulk payload") from None
                continue
            if not moved:
                raise ConnectionClosed("connection closed while reading a bulk payload")
            left = moved
            while left:
                left -= os.splice(read_end, fd, left)
            length -= moved
    finally:
        os.close(read_end)
        os.close(write_end)


class BulkWriter:
    """One bulk payload being sent: `write` its pieces, then `close` (which checks that
    exactly the declared length went out and sends the MAC, if any)."""

    def __init__(self, conn: Connection, length: int):
        self.sock = conn.sock
        self.length = length
        self.sent = 0
        self._mac = wire.bulk_mac(conn.key, conn._sent_header) if conn.key is not None else None

    def write(self, chunk) -> None:
        self.sock.sendall(chunk)
        self.sent += len(chunk)
        if self._mac is not None:
            self._mac.update(chunk)

    def close(self) -> None:
        if self.sent != self.length:
            raise OSError(f"bulk source gave {self.sent} bytes, {self.length} declared")
        if self._mac is not None:
            self.sock.sendall(self._mac.digest())


def _read_ranges(ranges):
    for f, offset, count in ranges:
        at, end = offset, offset + count
        while at < end:
            data = os.pread(f.fileno(), min(CHUNK, end - at), at)
            if not data:
                raise OSError(f"{f.name} ended before {end} while being sent")
            at += len(data)
            yield data


def _widen_pipe(fd: int) -> None:
    """A pipe holds 64 KiB by default: 16 round trips of two splices per MiB. Ask for a
    CHUNK-sized one (Linux caps it at /proc/sys/fs/pipe-max-size; a refusal is harmless)."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, CHUNK)
    except OSError:
        pass


def _digest(key: bytes, header_line: bytes, data: bytes) -> bytes:
    mac = wire.bulk_mac(key, header_line)
    mac.update(data)
    return mac.digest()
