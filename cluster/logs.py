"""Node logging: one file per node (log_dir/vmNN.log), timestamped, greppable.

Event lines start with an upper-case word (JOIN, LEAVE, SUSPECT, ALIVE, FAIL, MODE, ...) so
that `grep FAIL logs/vm*.log` answers "who saw which failure, when". Bad input from the
network is logged through `BadInputLog`, which keeps a flood of junk from filling the disk.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import time

FORMAT = "%(asctime)s.%(msecs)03d vm%(vm)s %(levelname)s %(name)s: %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"


class _VmFilter(logging.Filter):
    def __init__(self, vm: str):
        super().__init__()
        self.vm = vm

    def filter(self, record: logging.LogRecord) -> bool:
        record.vm = self.vm
        return True


def setup_logging(log_path: str, vm: str, console_level: int = logging.WARNING) -> None:
    """Log INFO and up to `log_path`; warnings and errors also to stderr."""
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter = logging.Formatter(FORMAT, DATEFMT)
    file_handler = logging.FileHandler(log_path, encoding="utf-8")
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(console_level)
    for handler in (file_handler, console):
        handler.setFormatter(formatter)
        handler.addFilter(_VmFilter(vm))
        root.addHandler(handler)


class Occasional:
    """Counts something that may happen very often (a refusal, a failing collector) and
    says which ones to log: the first `first`, then every `every`-th, so a flood writes a
    few lines that carry the running count."""

    def __init__(self, first: int = 1, every: int = 100):
        self.first, self.every = first, every
        self._count = itertools.count(1)      # next() is atomic: callers on many threads
        self.total = 0

    def due(self) -> int | None:
        """Count one; its number if it is to be logged, else None."""
        n = self.total = next(self._count)
        return n if n <= self.first or n % self.every == 0 else None


class BadInputLog:
    """Logs rejected input, at most `burst` lines per `window` seconds per kind of input."""

    def __init__(self, logger: logging.Logger, burst: int = 5, window: float = 10.0,
                 clock=time.monotonic):
        self.logger = logger
        self.burst = burst
        self.window = window
        self.clock = clock
        self._windows: dict[str, tuple[float, int]] = {}
        self.total = 0

    def reject(self, kind: str, source, reason: str) -> None:
        self.total += 1
        now = self.clock()
        start, count = self._windows.get(kind, (now, 0))
        if now - start > self.window:
            if count > self.burst:
                self.logger.warning("BADINPUT %s: %d more rejected in the last %.0f s",
                                    kind, count - self.burst, self.window)
            start, count = now, 0
        count += 1
        self._windows[kind] = (start, count)
        if count <= self.burst:
            self.logger.warning("BADINPUT %s from %s rejected: %s", kind, source, reason)
