"""The raw loopback socket copy that HyDFS's create and get throughput are compared with,
and the rules every timed bulk transfer follows, the reference's and HyDFS's alike.

The reference copies the same bytes over a fresh loopback TCP connection in this process
(sender `sendall`, receiver `recv_into` a 1 MB buffer), optionally into a local file, and
with a final fsync. The rules: a timed transfer starts with no dirty pages pending
(`timed_settled`), so one run's writeback does not slow the next, and it writes a new file
(`fresh_path`), since replacing a file costs ext4 far more than writing a new one.
"""

from __future__ import annotations

import os
import socket
import statistics
import threading
import time
from contextlib import nullcontext
from pathlib import Path

from bench.harness import timed
from bench.hydfs_settings import MB

RAW_CHUNK = MB
SOCK_BUF = 4 * MB
RAW_REPS = 9


def settle() -> None:
    """Write back dirty pages, so that one measurement's writes do not slow the next."""
    os.sync()


def timed_settled(fn, *args, **kwargs):
    """`timed`, started with no dirty pages pending (for bulk transfers)."""
    settle()
    return timed(fn, *args, **kwargs)


def fresh_path(path: Path) -> Path:
    """`path`, with no file there. Replacing an existing file costs far more than writing a new
    one on ext4 (a rename over a file, or a truncation, makes it allocate and start writing
    back the new data at once: auto_da_alloc), and that is the file system, not the protocol,
    so the timed copies and gets all write new files; the old ones go before `settle`."""
    path.unlink(missing_ok=True)
    return path


def raw_socket_copy(data: bytes, sink: Path | None = None, fsync: bool = False) -> float:
    """Seconds to copy `data` over a fresh loopback TCP connection (optionally into `sink`)."""
    finished = {}
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCK_BUF)

        def receive():
            conn, _ = server.accept()
            with conn, (open(sink, "wb") if sink else nullcontext()) as f:
                buf = memoryview(bytearray(RAW_CHUNK))
                left = len(data)
                while left:
                    n = conn.recv_into(buf, min(RAW_CHUNK, left))
                    if not n:
                        raise ConnectionError("sender closed early")
                    if f is not None:
                        f.write(buf[:n])
                    left -= n
                if f is not None and fsync:
                    f.flush()
                    os.fsync(f.fileno())
            finished["at"] = time.perf_counter()
        receiver = threading.Thread(target=receive, daemon=True)
        receiver.start()
        start = time.perf_counter()
        with socket.create_connection(server.getsockname()) as sender:
            sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCK_BUF)
            sender.sendall(data)
        receiver.join()
    return finished["at"] - start


def raw_references(path: Path, scratch: Path) -> dict:
    """MB/s of the raw copy, the copy into a file, and the copy into a file plus fsync.
    Each copy into a file writes a new one, as a get does (see `fresh_path`)."""
    data = path.read_bytes()
    mb = len(data) / MB
    out = {}
    for label, kwargs in (("raw", {}), ("raw_file", {}), ("raw_file_fsync", {"fsync": True})):
        runs = []
        for rep in range(RAW_REPS):
            sink = fresh_path(scratch / f"raw-sink-{rep}") if label != "raw" else None
            runs.append(timed_settled(raw_socket_copy, data, sink=sink, **kwargs)[0])
            if sink is not None:
                sink.unlink()
        out[label] = mb / statistics.median(runs)
    return out
