"""The stream benchmark's fixed setup: the cluster's settings, the two applications, the
input files (bench/data/, made once per generator version) and their expected outputs.

Every other stream-bench module takes these from here, so the report states the same
settings the runs used.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections import Counter
from pathlib import Path

from bench import gen_traffic_signs, reference_apps
from bench.harness import REPO

MEMBERSHIP = {"protocol_period": 1.0, "ping_timeout": 1.0, "suspicion": "on",
              "suspicion_timeout": 3}
NODES = 10
TASKS = 3
APPS = {1: ("grep", "signs_select", "Stop"),
        2: ("signs_by_category", "count", "Punched Telespar")}
DATA = REPO / "bench" / "data"
LEADER = "01"
SIZE_NAMES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000, "10m": 10_000_000}


def parse_size(text: str) -> int:
    """A line count: one of SIZE_NAMES ("10k", "1m", ...) or a number ("20_000")."""
    text = text.strip().lower()
    return SIZE_NAMES[text] if text in SIZE_NAMES else int(text.replace("_", ""))


def size_label(n: int) -> str:
    """How the report names a line count: "10k", "100k", "1M", or the number."""
    for name, value in SIZE_NAMES.items():
        if value == n:
            return name.upper() if name.endswith("m") else name
    return str(n)


def data_file(n: int) -> tuple[Path, float]:
    """bench/data/ts-N-GEN.csv, made once (atomically) by the generator whose source hashes
    to GEN, so an edited generator never leaves a stale file; (path, seconds generating)."""
    DATA.mkdir(parents=True, exist_ok=True)
    gen = hashlib.sha1(Path(gen_traffic_signs.__file__).read_bytes()).hexdigest()[:8]
    path = DATA / f"ts-{n}-{gen}.csv"
    if path.exists():
        return path, 0.0
    for old in DATA.glob(f"ts-{n}-*.csv"):      # made by an older generator
        old.unlink()
    start = time.perf_counter()
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    gen_traffic_signs.write_csv(n, tmp)
    tmp.rename(path)
    return path, time.perf_counter() - start


def spark_dir(path: Path) -> Path:
    """A directory holding only `path` (Spark's file source reads directories)."""
    d = DATA / f"spark-{path.stem}"
    for old in DATA.glob(f"spark-{path.stem.rsplit('-', 1)[0]}-*"):
        if old != d:
            shutil.rmtree(old, ignore_errors=True)
    d.mkdir(exist_ok=True)
    link = d / "ts.csv"
    if not link.exists() or not os.path.samefile(link, path):
        link.unlink(missing_ok=True)
        os.link(path, link)
    return d


class Oracle:
    """Expected outputs per (file, app), computed once."""

    def __init__(self):
        self._rows, self._counts = {}, {}

    def rows(self, path: Path, app: int) -> Counter:
        if (path, app) not in self._rows:
            self._rows[path, app] = reference_apps.expected_rows(app, str(path), APPS[app][2])
        return self._rows[path, app]

    def counts(self, path: Path) -> dict:
        if path not in self._counts:
            with open(path, newline="", encoding="utf-8") as f:
                self._counts[path] = reference_apps.app2_counts(f, APPS[2][2])
        return self._counts[path]
