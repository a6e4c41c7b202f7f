"""Checking the next windows of a file in a helper thread while the current one is sent.

Serving a get has two costs per window: reading and checking its CRC (a copy from the page
cache, then CPU) and the send (`sendfile`, in the kernel). All of them release the GIL, so a
helper thread that checks up to `depth` windows ahead lets them overlap instead of taking
turns.

`CheckedRanges(spans)` turns verified spans (checked_read.py) into (file, offset, count)
ranges. The ordering guarantee of checked_read carries over: a range is handed out only after
its check passed; a `CorruptReplica` reaches the consumer in order, after the good ranges
before it. Use it as a context manager: leaving it stops and joins the helper, so the files
can be closed safely even when the consumer stops early (a dropped connection). Short reads
(at most `inline_below` bytes) run inline: a thread is not worth it there.
"""

from __future__ import annotations

import queue
import threading

from hydfs.checked_read import BLOCK

DEPTH = 4                  # windows checked ahead of the sender
INLINE_BELOW = 2 * BLOCK   # reads this short are checked inline
_DONE = object()


class CheckedRanges:
    """The (file, offset, count) ranges of checked spans, checked ahead by a helper thread."""

    def __init__(self, spans, length: int, depth: int = DEPTH, inline_below: int = INLINE_BELOW):
        self._spans = spans
        self._inline = length <= inline_below
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = None if self._inline else threading.Thread(
            target=self._produce, name="hydfs-check-ahead", daemon=True)

    def __enter__(self) -> "CheckedRanges":
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join()
        else:
            self._spans.close()

    def __iter__(self):
        if self._inline:
            for f, offset, data in self._spans:
                yield f, offset, len(data)
            return
        # Started here, not on entry: the new thread takes the GIL for a while, and the
        # sender's header line should be out before that.
        self._thread.start()
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _produce(self) -> None:
        try:
            for f, offset, data in self._spans:
                if not self._put((f, offset, len(data))):
                    return
            self._put(_DONE)
        except BaseException as exc:      # CorruptReplica, an I/O error: the sender raises it
            self._put(exc)
        finally:
            self._spans.close()

    def _put(self, item) -> bool:
        """Queue `item` unless the consumer has gone; whether it was queued."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False
