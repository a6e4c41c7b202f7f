"""RainStorm demo: a local ten-node cluster runs both traffic-signs applications.

What the course demo does, on one machine: start ten nodes, put TrafficSigns_N into HyDFS,
run App 1 (grep "No Outlet" | signs_select) and App 2 (signs_by_category "Punched Telespar"
| count) with 3 tasks per stage, and during App 2 kill -9 two workers (neither the leader nor
a source) once the job reports its first lines read, so that their tasks are running and
must be recovered. Each output is checked against the reference implementation.

    python -m demos.rainstorm_demo [--lines 10000] [--no-kill] [--keep DIR]
"""

from __future__ import annotations

import argparse
import collections
import re
import tempfile
import threading

from bench import reference_apps
from bench.stream_job import running_tasks, workers_without_a_source
from bench.gen_traffic_signs import iter_lines, write_csv
from cluster.local_cluster import LocalCluster
from stream.commands import summary_text

APPS = {
    "App 1": ("grep", "signs_select", "No Outlet"),
    "App 2": ("signs_by_category", "count", "Punched Telespar"),
}


def expected(app: str, lines: list[str]) -> collections.Counter:
    _, _, arg = APPS[app]
    if app == "App 1":
        return reference_apps.app1_lines(lines, arg)
    return reference_apps.app2_expected_rows(lines, arg)


def run_app(cluster, app: str, src: str, dest: str, rate: str, kill: int = 0) -> dict:
    """Run one app; `kill`: kill -9 that many workers that run its tasks (no source, not the
    leader) once it reads, where the leader placed them."""
    op1, op2, arg = APPS[app]
    print(f"\n== {app}: RainStorm {op1} {op2} {src} {dest} 3 --op1-args \"{arg}\"")
    result, reading = {}, threading.Event()

    def show(line: str) -> None:
        print("  " + line)
        if re.search(r"\bread [1-9][\d,]* lines", line):
            reading.set()            # the tasks run: a kill now is a failure to recover from

    def job():
        result.update(cluster.query("01", "RainStorm", op1, op2, src, dest, "3", "--op1-args",
                                    arg, "--rate", rate, timeout=600, on_output=show))
    thread = threading.Thread(target=job)
    thread.start()
    if kill:
        reading.wait(30)
        victims = workers_without_a_source(running_tasks(cluster))[:kill]
        print(f"  !! kill -9 of workers vm{' and vm'.join(victims)}")
        for vm in victims:
            cluster.kill(vm)
    thread.join()
    print("  " + summary_text(result))
    return result


def check(cluster, app: str, dest: str, lines: list[str]) -> None:
    out = cluster.root / f"{dest}.csv"
    cluster.query("01", "get", dest, str(out), timeout=120)
    got = collections.Counter(out.read_text().splitlines())
    ok = got == expected(app, lines)
    print(f"  {dest}: {sum(got.values())} rows; matches the reference exactly: "
          f"{'yes' if ok else 'NO'}")
    if not ok:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=10000)
    parser.add_argument("--no-kill", action="store_true", help="no failures during App 2")
    parser.add_argument("--keep", help="run in this directory and keep its data and logs")
    args = parser.parse_args()
    root = args.keep or tempfile.mkdtemp(prefix="rainstorm-demo-")
    cluster = LocalCluster(root, 10, membership={"protocol_period": 0.5, "ping_timeout": 0.5,
                                                 "suspicion_timeout": 1.5})
    try:
        cluster.start_all()
        src = f"TrafficSigns_{args.lines}"
        write_csv(args.lines, f"{root}/{src}")
        cluster.query("01", "create", f"{root}/{src}", src, timeout=120)
        print(f"10 nodes up; {src} ({args.lines} lines) created in HyDFS")
        lines = list(iter_lines(args.lines))
        run_app(cluster, "App 1", src, "app1_out", "0")
        check(cluster, "App 1", "app1_out", lines)
        kill = 0 if args.no_kill else 2
        rate = str(max(args.lines // 4, 1000)) if kill else "0"
        run_app(cluster, "App 2", src, "app2_out", rate, kill=kill)
        check(cluster, "App 2", "app2_out", lines)
        print(f"\nlogs: {root}/logs/   task logs in HyDFS: rainstorm/<job>/<task>.log")
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
