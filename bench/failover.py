"""How long a job goes without a leader when the leader's machine dies (`make bench-failover`).

Setup: a local 10-node cluster with fast failure detection (period 0.2 s, ping timeout
0.3 s, suspicion 1.5 s: the detection bound is printed), a traffic-signs source of
`--lines` records in HyDFS. Each of `--runs` runs:

1. submits App 2 (`signs_by_category count SRC DEST 3 --op1-args "Punched Telespar"
   --rate R --detach`) on a node that is not the leader, paced to last about 6 s;
2. 1.5 s in, kills -9 the leader's node and its task processes (`LocalCluster.crash`);
3. polls, every 0.05 s from that same node: `leader` on every live node (all agree on a new,
   live leader: "elected"), and `job JOBID` (relayed to whoever leads): the first answer
   after the kill is the new leader's first progress report ("first report"), and the
   first whose `records_out` exceeds the last count seen before the kill is output moving
   again as the new leader sees it ("output resumed");
   and, from the nodes' logs, when the leader was declared failed, when the successor began
   its claim and when its take-over was done (millisecond timestamps; one clock);
4. waits for the job to end `done`, checks DEST against the oracle (exactly once), and
   restarts the killed node before the next run (as an ordinary member: the leader stays).

Per measure: median and max over the runs, seconds after the kill; with the detection
bound beside them (the contract: a new leader within detection + a few seconds).

    python bench/failover.py [--runs 10] [--lines 24000] [--keep]
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import reference_apps  # noqa: E402
from bench.gen_traffic_signs import write_csv  # noqa: E402
from bench.harness import running_cluster  # noqa: E402
from cluster.local_cluster import FAST_MEMBERSHIP, CommandFailed  # noqa: E402
from membership.suspicion import detection_bound  # noqa: E402

APP2 = ("signs_by_category", "count", "Punched Telespar")
RESULTS = Path(__file__).parent / "results"
POLL = 0.05
KILL_AT = 1.5
JOB_SECONDS = 6.0


def ask(cluster, vm, *argv, timeout=5.0):
    try:
        return cluster.query(vm, *argv, timeout=timeout)
    except (CommandFailed, OSError):
        return None


def one_run(cluster, lines: list[str], run: int) -> dict:
    leader = cluster.query("02", "leader")["leader"]
    home = next(vm for vm in ("05", "06", "07", "08") if vm != leader)
    dest = f"failover_out_{run}"
    rate = int(len(lines) / JOB_SECONDS)
    op1, op2, arg = APP2
    job = cluster.query(home, "RainStorm", op1, op2, "signs", dest, "3", "--op1-args", arg,
                        "--rate", str(rate), "--detach", timeout=60)["job"]
    out_before = 0
    deadline = time.monotonic() + KILL_AT
    while time.monotonic() < deadline:
        doc = ask(cluster, home, "job", job)
        out_before = doc["records_out"] if doc else out_before
        time.sleep(POLL)
    killed, killed_wall = time.monotonic(), time.time()
    cluster.crash(leader)
    live = [vm for vm in cluster.vms if vm != leader]
    marks: dict[str, float] = {}
    while len(marks) < 3 and time.monotonic() - killed < 60:
        if "elected" not in marks:
            seen = {(ask(cluster, vm, "leader") or {}).get("leader") for vm in live}
            if len(seen) == 1 and None not in seen and leader not in seen:
                marks["elected"] = time.monotonic() - killed
        doc = ask(cluster, home, "job", job, timeout=10.0)
        if doc is not None:
            marks.setdefault("first_report", time.monotonic() - killed)
            if doc["records_out"] > out_before:
                marks.setdefault("output_resumed", time.monotonic() - killed)
        time.sleep(POLL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        doc = ask(cluster, home, "job", job) or {}
        if doc.get("state") in ("done", "stopped", "failed"):
            break
        time.sleep(0.3)
    out = cluster.root / f"{dest}.out"
    cluster.query(home, "get", dest, str(out), timeout=60)
    got = collections.Counter(out.read_text().splitlines())
    exact = doc.get("state") == "done" and got == reference_apps.app2_expected_rows(lines, arg)
    marks.update(phases(cluster, live, leader, killed_wall))
    cluster.start(leader)
    cluster.wait_converged(cluster.vms, timeout=30)
    return dict(marks, run=run, killed=leader, exact=exact, state=doc.get("state"))


def phases(cluster, live: list, leader: str, killed_wall: float) -> dict:
    """From the nodes' logs: when the leader was first declared failed, when the successor
    began its claim and when its take-over was done (seconds after the kill)."""
    found = {}
    for key, pattern in (("declared_failed", rf"^FAIL {leader}@"),
                         ("claim_began", r"^LEADER vm\d+ claims leadership"),
                         ("took_over", r"^LEADER vm\d+ took over")):
        events = cluster.log_events(live, pattern, since=killed_wall)
        if events:
            found[key] = round(events[0][0] - killed_wall, 3)
    return found


def summarize(runs: list[dict], detection: float) -> str:
    lines = [f"Leader failover: {len(runs)} runs, App 2 over the traffic signs, the leader's "
             f"machine killed -9 {KILL_AT} s into the job; seconds after the kill "
             f"(failure detection bound {detection:.1f} s).", "",
             "| measure | median | max |", "|---|---|---|"]
    for key, label in (("declared_failed", "membership declares the leader failed (logs)"),
                       ("claim_began", "the successor begins its claim (logs)"),
                       ("took_over", "its take-over is done (logs)"),
                       ("elected", "every node names the new leader"),
                       ("first_report", "the new leader's first progress report"),
                       ("output_resumed", "output moving again (records_out grows)")):
        values = [r[key] for r in runs if key in r]
        if values:
            lines.append(f"| {label} | {statistics.median(values):.2f} | {max(values):.2f} |")
        else:
            lines.append(f"| {label} | never | never |")
    exact = sum(1 for r in runs if r["exact"])
    lines.append("")
    lines.append(f"Exactly once: {exact}/{len(runs)} runs ended `done` with DEST equal to the "
                 f"oracle.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--lines", type=int, default=24000)
    parser.add_argument("--keep", action="store_true", help="keep the cluster's directory")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="rainstorm-failover-"))
    m = FAST_MEMBERSHIP
    detection = detection_bound(m["protocol_period"], m["ping_timeout"],
                                m["suspicion"] == "on", m["suspicion_timeout"])
    runs = []
    with running_cluster(root, 10, FAST_MEMBERSHIP, attempts=3) as cluster:
        path = root / "signs.csv"
        write_csv(args.lines, path, seed=42)
        cluster.query("02", "create", str(path), "signs", timeout=60)
        lines = path.read_text().splitlines()
        for run in range(1, args.runs + 1):
            result = one_run(cluster, lines, run)
            runs.append(result)
            print(f"run {run}: killed vm{result['killed']}: " + ", ".join(
                f"{k} {result[k]:.2f} s" for k in ("elected", "first_report", "output_resumed")
                if k in result) + f", {'exact' if result['exact'] else 'NOT EXACT'}",
                flush=True)
    text = summarize(runs, detection)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "failover.md").write_text(text + "\n")
    (RESULTS / "failover.json").write_text(json.dumps(
        {"detection": detection, "runs": runs}, indent=2) + "\n")
    return 0 if all(r["exact"] for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
