"""What both benchmarks run on: a started local cluster, a progress log, a stopwatch.

`running_cluster` is the one way a benchmark gets a cluster of real node processes
(`cluster.local_cluster.LocalCluster`), and the one place that stops it and removes its data
directory again (its node logs stay, for `--keep`). `log` writes progress to stderr, so that
stdout carries only the report. `timed` is the stopwatch every timed operation goes through.
`RING_BITS` and `REPLICAS` are LocalCluster's defaults, so a benchmark can work out, as the
nodes do, which nodes hold a file.
"""

from __future__ import annotations

import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from cluster.local_cluster import LocalCluster

REPO = Path(__file__).resolve().parent.parent
RING_BITS = 11          # LocalCluster's default [hydfs] ring_bits and replicas
REPLICAS = 3


def log(text: str) -> None:
    """One progress line on stderr, stamped with the wall-clock time."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def timed(fn, *args, **kwargs):
    """(seconds, result) of fn(*args, **kwargs)."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


@contextmanager
def running_cluster(root: Path, n: int, membership: dict, hydfs: dict | None = None,
                    attempts: int = 1):
    """A started `n`-node LocalCluster; stopped, and its data directory removed, on exit.

    A start that fails with LocalCluster's AssertionError (its free ports can be taken by
    another process before the node binds them, on a busy machine) is retried on new ports,
    in a cleared `root`, up to `attempts` starts in all; the last failure is raised."""
    for attempt in range(1, attempts + 1):
        cluster = LocalCluster(root, n, membership=membership, hydfs=hydfs)
        try:
            cluster.start_all()
            break
        except AssertionError as exc:
            if attempt == attempts:
                _stop(cluster, root)
                raise
            cluster.close()
            shutil.rmtree(root, ignore_errors=True)
            log(f"cluster start failed ({exc}); retrying on new ports")
        except BaseException:
            _stop(cluster, root)
            raise
    try:
        yield cluster
    finally:
        _stop(cluster, root)


def _stop(cluster: LocalCluster, root: Path) -> None:
    cluster.close()
    shutil.rmtree(root / "data", ignore_errors=True)
