"""RainStorm stream benchmark on a real local cluster, against peer engines (`make bench-stream`).

RainStorm runs as ten real node processes (`cluster.local_cluster.LocalCluster`, membership
period 1 s, ping timeout 1 s, suspicion timeout 3 s, so the failure detector stays cheap),
with 3 tasks per stage, on traffic-signs files from `bench/gen_traffic_signs.py` (seed 42;
cached under bench/data/, which git ignores):

- App 1: `RainStorm grep signs_select SRC DEST 3 --op1-args Stop`
- App 2: `RainStorm signs_by_category count SRC DEST 3 --op1-args "Punched Telespar"`

Each size's file is created in HyDFS once, before any timing (its create time is reported
apart), and every run writes a fresh DEST. Per run: the job's seconds as the leader reports
them (the RainStorm end-to-end time), the wall time of the REPL call around it, the leader's
phases (from the "JOB <id> ..." lines of its log: plan = check the files and cut SRC into
partitions, launch = start the 9 task processes, stream = until every source block is acked
end to end, stop = final reports and stopping the tasks), the CPU seconds every process of
the cluster used (from /proc: each node's own time, and its reaped task processes' time),
and the output, fetched with `get` and compared with the oracle (bench/reference_apps.py):
the App 1 multiset exactly, and for App 2 the rows `Category,1` .. `Category,N` each exactly
once.

Peers (bench/peers.py), on the same file in the same run, interleaved with RainStorm's runs:
the single-process Python loop with the oracle's per-line functions (the no-distribution
bound; always), and, when the peers venv exists, Bytewax (1 worker; 2 processes) and PySpark
Structured Streaming (local[2], availableNow). Their time is the wall time of the whole
command (interpreter and JVM start-up included), and every output is checked too. Set the
venv up once with

    python3 -m venv /tmp/rainstorm-peers && /tmp/rainstorm-peers/bin/pip install bytewax==0.21.1 pyspark==4.3.0

(or `make bench-peers-venv`); without it the bench runs the loop only and says so.

Scaling (bench/stream_scaling.py): App 2 at 1M lines with NUM_TASKS 1, 3, 6, 9, and both apps
at 1M and 10M lines (`--big`) against the loop on both, with each run's largest node and
task process RSS.

Targets (issue 14, printed at the end with met / not met): at 1M lines both apps within
0.7x the loop's time and 0.75x Bytewax-2p's; a 10k-line job within 0.15x of the 1M-line
job; 10M / 1M within 11x; no job slower with more tasks.

Recovery: App 2 on 100k lines with `--rate 20000` (so the job runs about 5 s) on a fresh
cluster per run (after one small warm-up job, as for the throughput runs): once without a
failure, then with a kill -9, 1.5 s after the call, of two workers that run no source task
(where the leader puts tasks is
`stream.scheduler.assign(workers_for(vms, "01"), 3, source_hosts=<replicas of SRC>)`; the
nodes' logs confirm which tasks died): the first two such workers, and (full run) two of the
other mix of OP1 and OP2 workers. From the leader's output lines and the nodes' logs: kill ->
FAIL at the leader, -> "task X moves" (reassignment), -> replacement tasks ready, the longest
stretch without output after the kill (its end is when output resumed), -> the first progress
line (they come once a second) with more output than the one before, and when the output
count caught up with the failure-free run's; the output must still be exact.

Shared machine: before each run the bench waits (at most 30 s, 300 s in all) until processes
that are not its own use under 10 % of the machine, and it records how much they used during
each run ("others' CPU"), since another user's job slows every figure.

    python bench/stream_bench.py [--sizes 10k,100k,1m] [--reps 3] [--quick]
                                 [--parts throughput,scaling,recovery] [--peers auto|none]
                                 [--big 10m] [--task-counts 1,3,6,9]

Output: markdown tables on stdout and in `--out`.md, raw numbers in `--out`.json (default
bench/results/stream; `--quick`, which runs 10k and 100k once, writes nothing unless `--out`
is given). Scratch data (the cluster's directories) lives in a temporary directory removed
at the end (`--keep` keeps it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import peers  # noqa: E402
from bench.harness import log  # noqa: E402
from bench.report import code_version, write_report  # noqa: E402
from bench.stream_measure import QuietGate  # noqa: E402
from bench.stream_recovery import Recovery  # noqa: E402
from bench.stream_scaling import TASK_COUNTS, Scaling  # noqa: E402
from bench.stream_render import render  # noqa: E402
from bench.stream_setup import APPS, MEMBERSHIP, TASKS, Oracle, parse_size  # noqa: E402
from bench.stream_throughput import Throughput  # noqa: E402

DEFAULT_OUT = REPO / "bench" / "results" / "stream"
MEASURED = ("stream", "hydfs", "cluster")     # a change here marks the code version "+changes"
RUNNERS = {"throughput": Throughput, "scaling": Scaling, "recovery": Recovery}   # in order
PARTS = tuple(RUNNERS)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10k,100k,1m", help="line counts (10k, 100k, 1m or numbers)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="10k and 100k lines, 1 run each")
    p.add_argument("--parts", default=",".join(PARTS), help=f"subset of {','.join(PARTS)}")
    p.add_argument("--peers", choices=("auto", "none"), default="auto",
                   help="auto: Bytewax and PySpark too if their venv exists (default)")
    p.add_argument("--peers-venv", type=Path, default=peers.DEFAULT_VENV)
    p.add_argument("--big", type=parse_size, default=10_000_000,
                   help="scaling: the large file's lines (default 10m; 0 skips it)")
    p.add_argument("--task-counts", default=",".join(map(str, TASK_COUNTS)),
                   help="scaling: NUM_TASKS values for App 2 at 1M lines")
    p.add_argument("--rate", type=float, default=20000, help="recovery job's lines/s")
    p.add_argument("--recovery-lines", type=parse_size, default=100_000)
    p.add_argument("--kill-after", type=float, default=1.5)
    p.add_argument("--quiet", type=float, default=0.10,
                   help="before each run, wait until other processes use less than this "
                        "share of the machine (default 0.10; 1 = never wait)")
    p.add_argument("--quiet-budget", type=float, default=300,
                   help="seconds of such waiting in all, at most 30 s per run (default 300)")
    p.add_argument("--out", type=Path, help="write OUT.md and OUT.json "
                   f"(default {DEFAULT_OUT.relative_to(REPO)}; none with --quick)")
    p.add_argument("--workdir", type=Path, help="scratch directory, kept afterwards")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (node logs)")
    args = p.parse_args(argv)
    args.sizes = [parse_size(x) for x in args.sizes.split(",") if x]
    if args.quick:
        args.sizes = [n for n in args.sizes if n <= 100_000] or [10_000, 100_000]
        args.reps = 1
        args.big = 0
    args.parts = [x for x in args.parts.split(",") if x]
    args.task_counts = [int(x) for x in args.task_counts.split(",") if x]
    if set(args.parts) - set(PARTS):
        p.error(f"unknown parts {sorted(set(args.parts) - set(PARTS))}")
    if args.reps < 1:
        p.error("--reps must be at least 1")
    if args.out is None and not args.quick:
        args.out = DEFAULT_OUT
    return args


def merged_with_earlier(results: dict, path: Path) -> dict:
    """A run of some parts only keeps the other parts of the results file it updates."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return results
    kept = [p for p in PARTS if p not in results and p in earlier and "run" in earlier[p]]
    if kept:
        log(f"keeping the earlier results of {', '.join(kept)} in {path}")
    return dict(results, **{p: earlier[p] for p in kept})


def main(argv=None) -> int:
    args = parse_args(argv)
    own_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="stream-bench-")) if own_workdir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    results = {"meta": {"date": time.strftime("%Y-%m-%d %H:%M"), "code": code_version(MEASURED),
                        "python": platform.python_version(), "cpus": os.cpu_count(),
                        "load_before": round(os.getloadavg()[0], 2), "quick": args.quick,
                        "sizes": args.sizes, "reps": args.reps, "membership": MEMBERSHIP,
                        "apps": {str(k): list(v) for k, v in APPS.items()}, "tasks": TASKS}}
    started = time.monotonic()
    oracle, gate = Oracle(), QuietGate(args.quiet, 30.0, args.quiet_budget)
    runners = {part: RUNNERS[part](args, workdir, oracle, gate)
               for part in PARTS if part in args.parts}
    try:
        for part, runner in runners.items():
            log(f"part {part}")
            part_started, waited = time.monotonic(), gate.waited
            date = time.strftime("%Y-%m-%d %H:%M")
            results[part] = runner.run()
            results[part]["run"] = {
                "date": date, "code": results["meta"]["code"],
                "elapsed_s": round(time.monotonic() - part_started, 1),
                "quiet_wait_s": round(gate.waited - waited, 1)}
    finally:
        results["meta"]["quiet_wait_s"] = round(gate.waited, 1)
        if own_workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif args.keep or not own_workdir:
            log(f"scratch data and node logs kept in {workdir}")
    results["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
    if args.out and not args.quick and set(args.parts) != set(PARTS):
        results = merged_with_earlier(results, args.out.with_suffix(".json"))
    write_report(render(results), results, args.out, log)
    failed = [r for part in ("throughput", "scaling", "recovery") if part in results
              for r in results[part]["runs"] if not r["ok"]]
    if failed:
        log(f"{len(failed)} runs gave a wrong output")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
