"""What HyDFS counts on a node: the operations of its client (the REPL's and those its
RainStorm tasks relay through it), by kind and outcome, with their latency; the bytes they
moved; re-replications; the cache; and what this node stores (read at scrape time).

An operation's outcome is `ok` or its error code (messages.py), a small fixed set; a read
the caller stopped reading is `aborted`. A streamed read (`read`, `read_view`) is timed
until its last chunk. The cache counts what the client made of it: a hit is a get served
from the cache, fresh or revalidated as not modified; a miss, a get that fetched the file.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

from cluster.errors import CodedError
from cluster.metrics import Counter, Gauge, Registry


class HydfsMetrics:
    def __init__(self, registry: Registry):
        c = registry.counter
        self.operations = c("rainstorm_hydfs_operations_total",
                            "HyDFS operations of this node's client, by kind and outcome",
                            ("op", "outcome"))
        self.seconds = registry.histogram("rainstorm_hydfs_operation_seconds",
                                          "how long HyDFS operations took, by kind", ("op",))
        self.read_bytes = c("rainstorm_hydfs_read_bytes_total",
                            "bytes this node's client read from HyDFS (gets and reads)")
        self.written_bytes = c("rainstorm_hydfs_written_bytes_total",
                               "bytes this node's client wrote to HyDFS (creates, appends)")
        self.rereplications = c("rainstorm_hydfs_rereplications_total",
                                "copies this node pulled from another replica")
        self.dropped_copies = c("rainstorm_hydfs_dropped_copies_total",
                                "copies this node dropped, no longer being a replica")
        self._registry = registry
        self._watching = False

        self.cache_hits = c("rainstorm_hydfs_cache_hits_total",
                            "gets served by the cache (fresh, or revalidated unchanged)")
        self.cache_misses = c("rainstorm_hydfs_cache_misses_total",
                              "gets that fetched the file")

    @contextmanager
    def op(self, kind: str, start: float | None = None):
        """Count and time one operation around its body (begun at `start`, if given)."""
        start, outcome = start or time.monotonic(), "ok"
        try:
            yield
        except GeneratorExit:
            outcome = "aborted"
            raise
        except CodedError as exc:
            outcome = exc.code
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            self.operations.inc(op=kind, outcome=outcome)
            self.seconds.observe(time.monotonic() - start, op=kind)

    def streamed(self, kind: str, chunks, start: float | None = None):
        """`chunks`, their bytes counted as they pass, the operation timed to the last."""
        with self.op(kind, start):
            for chunk in chunks:
                self.read_bytes.inc(len(chunk))
                yield chunk

    def watch(self, cache_of, store) -> None:
        """Read the cache (`cache_of()`: the cache and its lock) and `store` at scrape time
        (the first client's: a node has one)."""
        if self._watching:
            return
        self._watching = True
        def collect():
            cache, lock = cache_of()
            with lock:
                evictions, cached = cache.evictions, cache.size_bytes
            evicted = Counter("rainstorm_hydfs_cache_evictions_total",
                              "cached files evicted to make room")
            evicted.set_total(evictions)
            size = Gauge("rainstorm_hydfs_cache_bytes", "bytes of file data in the cache")
            size.set(cached)
            files, stored = 0, 0
            for name in store.names():
                st = store.get_state(name)
                if st is not None:
                    files += 1
                    stored += st.base_size + st.pending_size
            held = Gauge("rainstorm_hydfs_stored_files", "files this node holds a copy of")
            held.set(files)
            held_bytes = Gauge("rainstorm_hydfs_stored_bytes",   # on disk: logs' framing too
                               "bytes of the copies this node holds (base and pending log)")
            held_bytes.set(stored)
            return [evicted, size, held, held_bytes]
        self._registry.collect(collect)
