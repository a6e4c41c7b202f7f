"""Giving freed memory back to the system, for processes that run for days.

A node moves large transient buffers all the time (bulk chunks, appends of hundreds of
KiB, views read in windows) on many threads. glibc's malloc keeps what such buffers free
inside its arenas; the small long-lived objects allocated between them keep the arenas from
shrinking at their top, so the freed pages stay resident. Measured on a following job at
10,000 lines/s, the nodes' RSS grew by several MB a minute while the Python objects they
held grew by under one; `malloc_trim(0)` gave much of the difference back. (Fixing glibc's
mmap threshold instead, so large buffers are mapped apart, did not.)

`start_trimming` runs `malloc_trim(0)` every `TRIM_EVERY` seconds on a daemon thread (a
trim of a node's heap takes well under a millisecond), and first caps the arenas at
ARENAS, so that fewer of them each keep free memory of their own (glibc makes up to 8 per
core for a process with many threads; this cap was not measured apart from the trim).
Where the C library is not glibc it does nothing.

It also keeps buffers up to MMAP_BELOW in the heap, and freed memory at the heap's top up
to KEEP_FREE between trims. By default glibc maps a buffer of 1 MiB apart (or, once its
threshold adapts, gives the freed top of the heap back at once), so every new one costs a
page fault per 4 KiB: cutting 8 MiB of a source's partition into 1 MiB blocks took 5-6 ms
instead of 0.7 ms on the VM of issue 14, and a task or node allocates such buffers for every
piece it reads, sends or appends. The periodic trim still gives the kept memory back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time

TRIM_EVERY = 20.0     # seconds
ARENAS = 2            # malloc arenas for all threads (glibc's default: 8 per core)
MMAP_BELOW = 16 << 20 # buffers below this come from the heap, not a mapping of their own
KEEP_FREE = 64 << 20  # free memory at the heap's top kept for reuse until the next trim
M_ARENA_MAX, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD = -8, -3, -1   # mallopt's (malloc.h)


def _libc(function: str):
    """`function` of the C library, or None. glibc's soname first: `find_library` runs
    `ldconfig -p` in a subprocess (two of them per task process cost 20-50 ms of CPU at
    each start, 0.7 CPU s for the 36 processes of a 9-task job and its spares)."""
    for name in ("libc.so.6", None):
        try:
            return getattr(ctypes.CDLL(name or ctypes.util.find_library("c")), function)
        except (OSError, AttributeError, TypeError):
            continue
    return None


def start_trimming(every: float = TRIM_EVERY) -> bool:
    """Share ARENAS malloc arenas among this process's threads (call it before starting
    any), and trim the heap every `every` seconds from now on; False if it cannot."""
    mallopt, trim = _libc("mallopt"), _libc("malloc_trim")
    if mallopt is None or trim is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    mallopt(M_ARENA_MAX, ARENAS)
    mallopt(M_MMAP_THRESHOLD, MMAP_BELOW)
    mallopt(M_TRIM_THRESHOLD, KEEP_FREE)

    def loop():
        while True:
            time.sleep(every)
            trim(0)
    threading.Thread(target=loop, name="heap-trim", daemon=True).start()
    return True
