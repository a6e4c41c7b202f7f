"""Metrics: counters, gauges and histograms, and their Prometheus text (format 0.0.4).

A node has one `Registry`. Subsystems create their metrics in it and count where things
happen (`inc`, `set`, `observe`: a dict update under a lock, cheap enough for a per-batch
call; nothing here is ever called per tuple). What is cheaper to read than to count (members
by state, bytes stored, a job's per-task figures that its reports bring) is read at scrape
time by a *collector*: a function that returns freshly filled metrics.

Naming, checked by tests/unit/test_metrics.py's strict parser: every name starts with
`rainstorm_`, counters end in `_total`, durations are `_seconds` and sizes `_bytes`; label
values come from small fixed sets (a state, an operation, an error code, a job, a stage, a
task index), never from a key, a line or a file name.
"""

from __future__ import annotations

import logging
import math
import re
import threading

from cluster.logs import Occasional

log = logging.getLogger("node")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds, from a cached 4 KB get (~0.5 ms) to a job-sized wait.
TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                2.5, 5.0, 10.0)

_NAME = re.compile(r"^rainstorm_[a-z0-9_]+$")
_LABEL = re.compile(r"^[a-z_][a-z0-9_]*$")


class Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: tuple = ()):
        if not _NAME.match(name):
            raise ValueError(f"metric name {name!r} must match {_NAME.pattern}")
        if self.kind == "counter" and not name.endswith("_total"):
            raise ValueError(f"counter {name!r} must end in _total")
        for label in labels:
            if not _LABEL.match(label) or label == "le":
                raise ValueError(f"bad label name {label!r} of {name}")
        self.name, self.help, self.labels = name, help_text, tuple(labels)
        self._values: dict[tuple, object] = {}
        self._lock = threading.Lock()

    def _key(self, labels: dict) -> tuple:
        if set(labels) != set(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, not {tuple(labels)}")
        return tuple(str(labels[name]) for name in self.labels)

    def value(self, **labels):
        with self._lock:
            return self._values.get(self._key(labels))

    def samples(self) -> list[tuple[str, tuple, float]]:
        """(name suffix, ((label, value), ...), value) for every series."""
        with self._lock:
            items = sorted(self._values.items())
        return [("", tuple(zip(self.labels, key)), value) for key, value in items]


class Counter(Metric):
    kind = "counter"

    def inc(self, amount: float = 1, **labels) -> None:
        if amount < 0:
            raise ValueError(f"{self.name}: a counter only goes up (got {amount})")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def set_total(self, total: float, **labels) -> None:
        """For collectors: the running total some other part keeps."""
        with self._lock:
            self._values[self._key(labels)] = total


class Gauge(Metric):
    kind = "gauge"

    def set(self, value: float, **labels) -> None:
        with self._lock:
            self._values[self._key(labels)] = value


class Histogram(Metric):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, labels: tuple = (),
                 buckets: tuple = TIME_BUCKETS):
        super().__init__(name, help_text, labels)
        self.buckets = tuple(sorted(buckets))

    def observe(self, value: float, **labels) -> None:
        key = self._key(labels)
        with self._lock:
            counts, total = self._values.get(key) or ([0] * (len(self.buckets) + 1), 0.0)
            counts[bucket_of(self.buckets, value)] += 1
            self._values[key] = (counts, total + value)

    def set_counts(self, counts: list, total: float, **labels) -> None:
        """For collectors: per-bucket (not cumulative) counts, the last one past the top
        bucket, and the sum of the observations."""
        if len(counts) != len(self.buckets) + 1:
            raise ValueError(f"{self.name}: {len(counts)} counts for "
                             f"{len(self.buckets) + 1} buckets")
        with self._lock:
            self._values[self._key(labels)] = (list(counts), float(total))

    def samples(self) -> list[tuple[str, tuple, float]]:
        out = []
        with self._lock:
            items = sorted((k, (list(c), s)) for k, (c, s) in self._values.items())
        for key, (counts, total) in items:
            labels = tuple(zip(self.labels, key))
            running = 0
            for bound, n in zip(self.buckets + (math.inf,), counts):
                running += n
                out.append(("_bucket", labels + (("le", _number(bound)),), running))
            out.append(("_sum", labels, total))
            out.append(("_count", labels, running))
        return out


def bucket_of(buckets: tuple, value: float) -> int:
    """Which of `buckets` (upper bounds, ascending) `value` counts in; len(buckets) past
    the top one."""
    for i, bound in enumerate(buckets):
        if value <= bound:
            return i
    return len(buckets)


class Registry:
    def __init__(self):
        self._metrics: dict[str, Metric] = {}
        self._collectors: list = []
        self._lock = threading.Lock()
        self.collector_errors = Occasional()

    def counter(self, name, help_text, labels=()) -> Counter:
        return self._add(Counter(name, help_text, labels))

    def gauge(self, name, help_text, labels=()) -> Gauge:
        return self._add(Gauge(name, help_text, labels))

    def histogram(self, name, help_text, labels=(), buckets=TIME_BUCKETS) -> Histogram:
        return self._add(Histogram(name, help_text, labels, buckets))

    def _add(self, metric: Metric) -> Metric:
        with self._lock:
            if metric.name in self._metrics:
                raise ValueError(f"metric {metric.name} registered twice")
            self._metrics[metric.name] = metric
        return metric

    def collect(self, collector) -> None:
        """`collector()` -> list of metrics, filled at each scrape."""
        self._collectors.append(collector)

    def metrics(self) -> list[Metric]:
        with self._lock:
            found = list(self._metrics.values())
        for collector in self._collectors:
            try:
                found.extend(collector())
            except Exception:        # one broken collector must not hide every metric
                n = self.collector_errors.due()
                if n is not None:
                    log.exception("metrics collector %r failed (%d so far)", collector, n)
        return found

    def render(self) -> str:
        """The exposition text: one HELP and TYPE per name, then its samples."""
        lines, seen = [], set()
        for metric in sorted(self.metrics(), key=lambda m: m.name):
            if metric.name in seen:
                raise ValueError(f"metric {metric.name} exported twice")
            seen.add(metric.name)
            lines.append(f"# HELP {metric.name} {_escape_help(metric.help)}")
            lines.append(f"# TYPE {metric.name} {metric.kind}")
            for suffix, labels, value in metric.samples():
                lines.append(f"{metric.name}{suffix}{_labels(labels)} {_number(value)}")
        return "\n".join(lines) + "\n"


def _labels(labels: tuple) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_value(str(v))}"' for k, v in labels) + "}"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
