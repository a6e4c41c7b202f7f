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


def small_get_reference(scratch: Path, n: int = 500, size: int = 4096) -> dict:
    """p50 / mean ms of the least a 4 KB get into a local file can cost in Python here: a
    new loopback connection to a server thread of this process, a one-line request, a
    reply of `size` bytes, written to a new file (temporary file, then rename). Measured in
    the same run as the gets, it says how fast this machine is: the absolute targets were
    set on one about twice as fast as some VMs that run this benchmark."""
    payload = b"x" * size
    with socket.create_server(("127.0.0.1", 0)) as server:
        def serve():
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                with conn:
                    conn.recv(4096)
                    conn.sendall(payload)
        threading.Thread(target=serve, daemon=True).start()
        out, seconds = scratch / "small-ref", []
        for _ in range(n):
            fresh_path(out)
            start = time.perf_counter()
            with socket.create_connection(server.getsockname()) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.sendall(b'{"t": "get", "name": "c0001"}\n')
                got = b""
                while len(got) < size:
                    got += sock.recv(size - len(got))
            tmp = out.with_name(out.name + ".part")
            tmp.write_bytes(got)
            os.replace(tmp, out)
            seconds.append(time.perf_counter() - start)
        out.unlink(missing_ok=True)
    seconds.sort()
    return {"p50_ms": seconds[len(seconds) // 2] * 1000,
            "mean_ms": statistics.mean(seconds) * 1000}


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
