"""HyDFS benchmark on real node processes on 127.0.0.1 (`make bench-hydfs`).

Every number comes from real `rainstorm.py` node processes started by
`cluster.local_cluster.LocalCluster` with fast membership timings (period 0.5 s, ping timeout
0.5 s, suspicion on with a 2 s timeout). Operations are the REPL commands, sent over each
node's TCP port with `LocalCluster.query`, so a latency includes the control round trip
(measured on its own as "ctl round trip"). MB means 2**20 bytes throughout.

Parts (select with `--parts`):

- throughput: `create` and `get` of 1, 10 and 100 MB files on a 10-node cluster, issued from
  nodes that are not replicas of the file (so the bytes cross a socket): the median of 3
  creates (3 files) and of 9 gets (3 distinct client nodes per file, so none is served from
  a cache; `--quick`: 2 and 4). "get" runs with the default client cache, so each get is a
  miss that also keeps a copy in memory; "get, cache off" repeats it on a second cluster
  with `cache_mb = 0` (bytes moved, nothing kept). The reference is a raw Python socket copy
  of the same bytes over loopback in this process (sender `sendall`, receiver `recv_into` a
  1 MB buffer), also with the receiver writing a local file, and with a final fsync; median
  of 9. The headline ratio is HyDFS MB/s over raw-socket MB/s (target: get >= 50 %); a get
  also writes a local file, so get over "raw + file" is shown too. Every timed transfer
  starts after `os.sync()`, so one run's dirty pages do not slow the next, and every file
  written is a new one (`fresh_path`). "extra pulls" counts `REPLICATE` log lines for these
  files: a replica's re-replicator pulling a file that the create is pushing to it anyway.
- append: p50/p99 latency of a few hundred 4 KB appends from one client node.
- merge: 1000 appends (4 KB or 40 KB) to a fresh file from 1, 2, 5 or 10 client nodes at
  once (one thread per client node, the appends split between them), then `merge`: the
  command's wall time and the `seconds` the coordinator reports; median of 3 files each.
- rerep: per file size, a fresh 10-node cluster, one file whose replicas exclude the
  introducer 01, kill -9 of two of its replicas; kill -> first `FAIL` log line about a
  victim on any survivor (detection), and detection -> the last `REPLICATE` log line of the
  file on its new replicas (re-replicated), confirmed by polling `store` on them.
- cache: `get` latency of 4 KB files on a 4-node cluster whose `cache_mb` is 0, 10, 20, 50
  and 100 % of the working set (one cluster per size), reads keyed uniformly and Zipfian
  (a = 1.2, rank 0 most popular), read-only and with 10 % appends from the same client
  (which invalidate its cache entry). A cached entry is served for 5 s without asking a
  replica, then revalidated, so "cached" counts both fresh hits and not-modified answers.
  The first ops of each workload warm the cache and are not measured.

Output: a markdown table per part on stdout and in `--out`.md, raw numbers in `--out`.json
(default bench/results/hydfs for a full run of every part; a `--quick` run or a subset of
`--parts` writes nothing unless `--out` is given). Scratch
data lives in a temporary directory that is removed at the end (`--keep` keeps it).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.harness import log  # noqa: E402
from bench.hydfs_experiments import Bench  # noqa: E402
from bench.hydfs_render import render  # noqa: E402
from bench.hydfs_settings import MEMBERSHIP, QUICK, Settings  # noqa: E402
from bench.report import code_version, write_report  # noqa: E402

PARTS = ("throughput", "append", "merge", "rerep", "cache")
DEFAULT_OUT = REPO / "bench" / "results" / "hydfs"
MEASURED = ("hydfs", "cluster")     # a change here marks the code version "+changes"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes and fewer ops")
    p.add_argument("--parts", default=",".join(PARTS),
                   help=f"comma-separated subset of {','.join(PARTS)} (default: all)")
    p.add_argument("--out", type=Path, help="write OUT.md and OUT.json (default for a full "
                   f"run of every part: {DEFAULT_OUT.relative_to(REPO)}; else none)")
    p.add_argument("--workdir", type=Path,
                   help="scratch directory, kept afterwards (default: a temp dir, removed)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (node logs)")
    args = p.parse_args(argv)
    args.parts = [x for x in args.parts.split(",") if x]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}; choose from {','.join(PARTS)}")
    if args.out is None and not args.quick and set(args.parts) == set(PARTS):
        args.out = DEFAULT_OUT
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    settings = QUICK if args.quick else Settings()
    own_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="hydfs-bench-")) if own_workdir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    results = {"meta": {"date": time.strftime("%Y-%m-%d %H:%M"), "code": code_version(MEASURED),
                        "python": platform.python_version(),
                        "load_before": round(os.getloadavg()[0], 2),
                        "cpus": os.cpu_count(), "quick": args.quick, "membership": MEMBERSHIP,
                        "settings": asdict(settings)}}
    bench = Bench(settings, workdir)
    runners = {"throughput": bench.part_throughput, "append": bench.part_append,
               "merge": bench.part_merge, "rerep": bench.part_rerep, "cache": bench.part_cache}
    started = time.monotonic()
    try:
        for part in (p for p in PARTS if p in args.parts):
            log(f"part {part}")
            results[part] = runners[part]()
    finally:
        bench.close()
        if own_workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    results["meta"]["elapsed_s"] = time.monotonic() - started
    results["meta"]["load_after"] = round(os.getloadavg()[0], 2)
    write_report(render(results), results, args.out, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
