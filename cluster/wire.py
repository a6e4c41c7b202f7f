"""The wire format shared by every RainStorm message, on UDP and TCP.

Theory of operation
-------------------
A message is one JSON object on one line. Its field ``"t"`` names the message type; the rest
is the message's own. With a cluster secret, the line carries an HMAC-SHA256 of the JSON
bytes in front of it, as 64 hex digits and a space::

    {"t": "ping", "seq": 7}\\n                       (no secret)
    3f1c...9a {"t": "ping", "seq": 7}\\n             (secret set)

Bulk bytes (file contents) never go inside JSON: a header message declares ``"bulk": N`` and
exactly N raw bytes follow it; with a secret they are followed by the 32-byte HMAC-SHA256
of the header's MAC and those N bytes, so a receiver can check a stream it never holds
whole in memory, and a payload cannot be moved under another header.

A UDP datagram holds exactly one message line (the trailing newline is optional).

Everything here is pure: `encode` turns a dict into bytes, `LineDecoder` turns received bytes
into dicts and raises `ProtocolError` on anything malformed, oversized or unauthenticated.
The socket side lives in `connection.py`.
"""

from __future__ import annotations

import hashlib
import hmac
import json

MAX_LINE_BYTES = 16 * 1024 * 1024     # a control line longer than this is an attack or a bug
MAX_DATAGRAM_BYTES = 60 * 1024        # below the 64 KiB UDP limit, with room for headers
MAX_BULK_BYTES = 1 << 40              # a declared bulk length above 1 TiB is refused
MAC_HEX_LEN = 64
BULK_MAC_LEN = 32


class ProtocolError(Exception):
    """Input that does not follow the wire format; the message says what was wrong."""


class AuthError(ProtocolError):
    """A message without a valid HMAC where the cluster has a secret."""


def secret_key(secret: str) -> bytes | None:
    """The HMAC key for a `[cluster] secret` value; None when authentication is off."""
    return secret.encode("utf-8") if secret else None


def encode(message: dict, key: bytes | None = None) -> bytes:
    """One message as a line of bytes, authenticated when `key` is given."""
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if key is None:
        return body + b"\n"
    mac = hmac.new(key, body, hashlib.sha256).hexdigest().encode("ascii")
    return mac + b" " + body + b"\n"


def decode(line: bytes, key: bytes | None = None) -> dict:
    """Parse one line (without or with its newline) into a message dict.

    Raises ProtocolError for bad JSON, a non-object, a missing "t", and AuthError for a
    missing or wrong MAC when `key` is set. Without a key, a MAC prefix is tolerated and
    ignored, so a node without a secret can still read an authenticated peer's lines.
    """
    line = line.rstrip(b"\r\n")
    body = line
    if line[:1] != b"{":
        mac, sep, body = line.partition(b" ")
        if not sep or len(mac) != MAC_HEX_LEN:
            raise ProtocolError("line is neither JSON nor MAC-prefixed JSON")
        if key is not None:
            expected = hmac.new(key, body, hashlib.sha256).hexdigest().encode("ascii")
            if not hmac.compare_digest(mac, expected):
                raise AuthError("bad message authentication code (wrong secret?)")
    elif key is not None:
        raise AuthError("unauthenticated message but the cluster has a secret")
    try:
        message = json.loads(body, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"bad JSON: {exc}") from None
    except RecursionError:       # a few kilobytes of "[[[[..." (found by tests/fuzz.py)
        raise ProtocolError("bad JSON: nested too deeply") from None
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise ProtocolError('message is not a JSON object with a string "t"')
    return message


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not allowed")


def decode_datagram(data: bytes, key: bytes | None = None) -> dict:
    if len(data) > MAX_DATAGRAM_BYTES:
        raise ProtocolError(f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM_BYTES}")
    return decode(data, key)


def bulk_length(message: dict) -> int:
    """The declared bulk length of a header message (0 when it carries none)."""
    n = message.get("bulk", 0)
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_BULK_BYTES:
        raise ProtocolError(f"bad bulk length {n!r}")
    return n


def bulk_mac(key: bytes, header_line: bytes = b""):
    """A running HMAC for the bytes of one bulk payload, bound to its header: it starts
    with the header line's own MAC, so a payload cannot be replayed under another header."""
    return hmac.new(key, header_line[:MAC_HEX_LEN], digestmod=hashlib.sha256)


class LineDecoder:
    """Incremental splitter of a byte stream into lines, with a size limit.

    `feed(data)` buffers bytes; `next_line()` returns the next complete line (without its
    newline) or None. A line longer than `max_line` raises ProtocolError as soon as that
    is known, without waiting for its end. `take(n)` hands out up to n buffered raw bytes:
    the start of a bulk payload that arrived together with its header.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES):
        self.max_line = max_line
        self._buf = bytearray()
        self._scan_from = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_line(self) -> bytes | None:
        end = self._buf.find(b"\n", self._scan_from)
        if end < 0:
            self._scan_from = len(self._buf)
            if len(self._buf) > self.max_line:
                raise ProtocolError(f"line longer than {self.max_line} bytes")
            return None
        if end > self.max_line:
            raise ProtocolError(f"line longer than {self.max_line} bytes")
        line = bytes(self._buf[:end])
        del self._buf[:end + 1]
        self._scan_from = 0
        return line

    def take(self, n: int) -> bytes:
        data = bytes(self._buf[:n])
        del self._buf[:n]
        self._scan_from = 0
        return data

    def buffered(self) -> int:
        return len(self._buf)
