"""Taking a stream of bytes in completely before acting on it, in bounded memory.

`spool(chunks, size, folder)` consumes `chunks` (e.g. an append arriving over the network)
and gives back the same bytes as an iterable that no longer waits on anyone: held in memory
up to IN_MEMORY bytes, beyond that in a temporary file under `folder` (removed on exit) read
back in CHUNK-sized pieces. The store uses it so that it never holds a file's lock while a
peer is still sending (store.py says why).
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager

IN_MEMORY = 4 << 20
CHUNK = 1 << 20


@contextmanager
def spool(chunks, size: int, folder: str):
    if size <= IN_MEMORY:
        yield [b"".join(chunks)]
        return
    fd, path = tempfile.mkstemp(prefix=".spool-", dir=folder)
    try:
        with os.fdopen(fd, "w+b") as f:
            for chunk in chunks:
                f.write(chunk)
            f.seek(0)
            yield iter(lambda: f.read(CHUNK), b"")
    finally:
        os.unlink(path)
