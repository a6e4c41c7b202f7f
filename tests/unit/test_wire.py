"""The wire format: JSON lines, HMAC, the incremental decoder and its limits."""

from __future__ import annotations

import socket
import threading

import pytest

from cluster import wire
from cluster.connection import Connection

pytestmark = pytest.mark.timeout(30)
KEY = b"k"


def test_round_trip_without_and_with_a_secret():
    msg = {"t": "ping", "seq": 3, "text": "caf\u00e9"}
    assert wire.decode(wire.encode(msg)) == msg
    assert wire.decode(wire.encode(msg, KEY), KEY) == msg
    assert wire.encode(msg).endswith(b"\n") and wire.encode(msg).count(b"\n") == 1


@pytest.mark.parametrize("line, key, error", [
    (b"", None, wire.ProtocolError),
    (b"garbage", None, wire.ProtocolError),
    (b"{bad json}", None, wire.ProtocolError),
    (b"[1, 2]", None, wire.ProtocolError),
    (b'{"no_type": 1}', None, wire.ProtocolError),
    (b'{"t": 5}', None, wire.ProtocolError),
    (b'{"t": "ping"}', KEY, wire.AuthError),                         # unauthenticated
    (wire.encode({"t": "ping"}, b"other"), KEY, wire.AuthError),     # wrong secret
    (b"0" * 64 + b' {"t": "ping"}', KEY, wire.AuthError),
    (b"\xff\xfe" * 10, None, wire.ProtocolError),
])
def test_bad_lines_raise_protocol_errors(line, key, error):
    with pytest.raises(error):
        wire.decode(line, key)


def test_tampered_body_fails_authentication():
    line = wire.encode({"t": "ping", "seq": 1}, KEY).replace(b"1", b"2")
    with pytest.raises(wire.AuthError):
        wire.decode(line, KEY)


def test_decoder_splits_lines_across_arbitrary_chunks():
    data = wire.encode({"t": "a"}) + wire.encode({"t": "b", "x": "y" * 100})
    decoder = wire.LineDecoder()
    got = []
    for i in range(len(data)):
        decoder.feed(data[i:i + 1])
        line = decoder.next_line()
        if line is not None:
            got.append(wire.decode(line)["t"])
    assert got == ["a", "b"]


def test_decoder_refuses_an_endless_line_before_its_end():
    decoder = wire.LineDecoder(max_line=100)
    decoder.feed(b"x" * 101)
    with pytest.raises(wire.ProtocolError, match="longer than"):
        decoder.next_line()


@pytest.mark.parametrize("n", [-1, "5", 1.5, True, wire.MAX_BULK_BYTES + 1])
def test_bad_bulk_lengths(n):
    with pytest.raises(wire.ProtocolError):
        wire.bulk_length({"t": "x", "bulk": n})


def test_oversized_datagram_is_refused():
    with pytest.raises(wire.ProtocolError):
        wire.decode_datagram(b"{" + b" " * wire.MAX_DATAGRAM_BYTES + b"}")


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "hmac"])
def test_bulk_file_streams_over_a_real_socket(tmp_path, key):
    payload = bytes(range(256)) * 9000           # about 2.3 MB, several chunks
    src = tmp_path / "src"
    src.write_bytes(payload)
    a, b = socket.socketpair()
    sender, receiver = Connection(a, key), Connection(b, key)
    thread = threading.Thread(target=sender.send_bulk_file, args=({"t": "put"}, str(src)))
    thread.start()
    header = receiver.recv()
    out = tmp_path / "dst"
    with open(out, "wb") as f:
        receiver.recv_bulk_to_file(wire.bulk_length(header), f)
    thread.join()
    assert header["t"] == "put" and out.read_bytes() == payload


def test_tampered_bulk_payload_is_detected():
    a, b = socket.socketpair()
    sender, receiver = Connection(a, KEY), Connection(b, KEY)
    sender.send(dict(t="put", bulk=3))
    a.sendall(b"abc" + b"\0" * 32)
    header = receiver.recv()
    with pytest.raises(wire.AuthError):
        receiver.recv_bulk_bytes(header["bulk"], 100)


def test_a_payload_moved_under_another_header_fails_authentication():
    a, b = socket.socketpair()
    sender = Connection(a, KEY)
    sender.send_bulk_bytes({"t": "append", "name": "x"}, b"abc")
    captured = b.recv(65536)
    payload_and_mac = captured[captured.index(b"\n") + 1:]
    other_header = wire.encode({"t": "append", "name": "y", "bulk": 3}, KEY)
    c, d = socket.socketpair()
    c.sendall(other_header + payload_and_mac)
    receiver = Connection(d, KEY)
    header = receiver.recv()
    with pytest.raises(wire.AuthError):
        receiver.recv_bulk_bytes(header["bulk"], 100)


@pytest.mark.parametrize("key", [None, KEY], ids=["splice", "hmac"])
def test_bulk_payload_into_a_file_including_bytes_that_came_with_the_header(tmp_path, key):
    payload = bytes(range(256)) * 20000                  # ~5 MB: several splice rounds
    a, b = socket.socketpair()
    sender, receiver = Connection(a, key), Connection(b, key)
    thread = threading.Thread(target=sender.send_bulk_bytes, args=({"t": "put"}, payload))
    thread.start()
    header = receiver.recv()                             # may buffer the payload's start
    with open(tmp_path / "out", "wb") as f:
        receiver.recv_bulk_to_file(wire.bulk_length(header), f)
    thread.join()
    assert (tmp_path / "out").read_bytes() == payload


@pytest.mark.parametrize("key", [None, KEY], ids=["sendfile", "hmac"])
def test_file_ranges_go_out_as_one_payload(tmp_path, key):
    src = tmp_path / "src"
    src.write_bytes(bytes(range(256)) * 20000)
    data = src.read_bytes()
    pieces = [(7, 3 << 20), (5 << 19, 1), (100, 0), (0, 10)]    # any ranges, any order
    a, b = socket.socketpair()
    a.settimeout(10)              # as on a node: sendfile must cope with a timeout socket
    sender, receiver = Connection(a, key), Connection(b, key)
    with open(src, "rb") as f:
        ranges = [(f, off, n) for off, n in pieces]
        thread = threading.Thread(target=sender.send_bulk_ranges,
                                  args=({"t": "put"}, sum(n for _, n in pieces), ranges))
        thread.start()
        header = receiver.recv()
        got = receiver.recv_bulk_bytes(wire.bulk_length(header), 1 << 30)
        thread.join()
    assert got == b"".join(data[off:off + n] for off, n in pieces)


def test_ranges_that_do_not_add_up_to_the_declared_length_are_an_error(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"x" * 100)
    a, b = socket.socketpair()
    with open(src, "rb") as f, pytest.raises(OSError, match="declared"):
        Connection(a).send_bulk_ranges({"t": "put"}, 50, [(f, 0, 10)])


@pytest.mark.parametrize("key", [None, KEY], ids=["sendfile", "hmac"])
def test_a_range_past_the_end_of_its_file_is_an_error_not_a_short_payload(tmp_path, key):
    src = tmp_path / "src"
    src.write_bytes(b"x" * 100)
    a, b = socket.socketpair()
    a.settimeout(5)
    with open(src, "rb") as f, pytest.raises(OSError, match="ended before"):
        Connection(a, key).send_bulk_ranges({"t": "put"}, 150, [(f, 0, 150)])


def test_deeply_nested_json_is_a_protocol_error_not_a_crash():
    """tests/fuzz.py found it: a few KB of '[[[[' raised RecursionError out of decode, which
    the membership loop logged as an error with its traceback, per datagram."""
    import pytest as _pytest
    from cluster import wire as _wire
    with _pytest.raises(_wire.ProtocolError, match="nested too deeply"):
        _wire.decode(b'{"t":"ping","g":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
