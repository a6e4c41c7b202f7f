"""The failure detector measured (`make bench-membership`): detection times, false positives
against message loss, bandwidth, and bandwidth as the group grows.

Both modes (Ping-Ack+S: suspicion on; Ping-Ack: off), with the seed's timings (period 5 s,
ping timeout 1.5 s, suspicion 8 s: config.ini's defaults) and fast ones (0.2 / 0.3 / 1.5 s,
what the tests run). Everything but the simulator rows runs real node processes on
127.0.0.1, started as `LocalCluster` starts them.

1. Detection: on a 10-node cluster, kill -9 of 1, 2 or 3 nodes at once (never the
   introducer, which restarted nodes rejoin through), `--failures` times each. From the
   nodes' logs (millisecond timestamps, one clock): the first FAIL line about a victim on
   any node ("first") and the last survivor's ("by all"), seconds after the kill. The
   victims then restart and rejoin before the next kill. Against the bound period + ping
   timeout (+ suspicion timeout), which the issue's target widens by 1 s.
2. False positives: nobody is killed; every node drops each membership datagram it receives
   with probability `drop_rate` (its config key) for `--periods` protocol periods. A false
   positive is a member declared failed (counted once however many nodes log it), per 100
   protocol periods of the cluster. Real processes at the fast timings; the seed's timings
   would take 100 x 5 s per rate, so their rows come from the simulator (tests/simnet.py:
   the same protocol code and wire format, a fake clock, each message lost with the same
   probability), with its fast-timing rows beside them to show it agrees with the real runs.
3. Bandwidth: UDP bytes sent and received per node per second, from each node's /metrics
   (`rainstorm_membership_sent_bytes_total`, `_received_bytes_total`) at the start and end
   of a quiet window; for 10, 20 and 50 nodes on this machine at the fast timings (SWIM's
   claim: flat per node as the group grows).

    python bench/membership_bench.py [--failures 10] [--periods 100] [--quick] [--only ...]
"""

from __future__ import annotations

import argparse
import http.client
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.harness import log, running_cluster  # noqa: E402
from bench.report import code_version, md_table, write_report  # noqa: E402
from cluster.local_cluster import HTTP_OFFSET, LocalCluster  # noqa: E402
from membership.protocol import Settings  # noqa: E402
from membership.suspicion import detection_bound  # noqa: E402
from tests import simnet  # noqa: E402

TIMINGS = {
    "seed": {"protocol_period": 5.0, "ping_timeout": 1.5, "suspicion_timeout": 8.0,
             "monitors": 4},
    "fast": {"protocol_period": 0.2, "ping_timeout": 0.3, "suspicion_timeout": 1.5,
             "monitors": 4},
}
MODES = {"Ping-Ack+S": "on", "Ping-Ack": "off"}
DROPS = (0.0, 0.01, 0.05, 0.10, 0.20, 0.30)
SCALES = (10, 20, 50)
RESULTS = Path(__file__).parent / "results" / "membership"
FAIL_LINE = re.compile(r"^FAIL (\d+)@(\S+)")
SUSPECT_LINE = re.compile(r"^SUSPECT (\S+) inc=(\d+)")
BANDWIDTH_WINDOW = {"seed": 60.0, "fast": 20.0}


def membership_config(timing: str, mode: str, drop: float = 0.0) -> dict:
    return dict(TIMINGS[timing], suspicion=MODES[mode], drop_rate=drop)


def bound(timing: str, mode: str) -> float:
    t = TIMINGS[timing]
    return detection_bound(t["protocol_period"], t["ping_timeout"], MODES[mode] == "on",
                           t["suspicion_timeout"])


# -- 1. detection -------------------------------------------------------------------------

def failures_seen(cluster, since: float) -> dict:
    """{failed member id: [(time, vm that logged it), ...]} from every node's log."""
    seen: dict = {}
    for at, vm, message in cluster.log_events(cluster.vms, r"^FAIL ", since):
        match = FAIL_LINE.match(message)
        if match:
            seen.setdefault(f"{match[1]}@{match[2]}", []).append((at, vm))
    return seen


def member_ids(cluster, vm: str) -> dict:
    """vm -> member id as node `vm` lists them."""
    return {m["vm"]: m["id"] for m in cluster.query(vm, "list_mem")["members"]}


def one_kill(cluster, victims: list, limit: float) -> tuple[list, list]:
    """Kill `victims` at once, then restart them once every survivor declared them failed
    (or `limit` seconds passed). Per victim {first detection, detection by all} in seconds
    (None: not within the limit), and the other members declared failed meanwhile."""
    ids = member_ids(cluster, "01")
    survivors = [vm for vm in cluster.vms if vm not in victims]
    killed = time.time()
    for vm in victims:
        cluster.crash(vm)
    wanted = {ids[vm] for vm in victims}
    while True:
        seen = failures_seen(cluster, killed - 0.5)
        done = all({vm for _, vm in seen.get(i, [])} >= set(survivors) for i in wanted)
        if done or time.time() - killed > limit:
            break
        time.sleep(0.2)
    out = []
    for member in wanted:
        times = {}
        for at, vm in seen.get(member, []):
            times.setdefault(vm, at - killed)
        first = min(times.values()) if times else None
        every = max(times.values()) if set(times) >= set(survivors) else None
        out.append({"first": first, "all": every})
    false = [i for i in seen if i not in wanted and i in ids.values()]   # a live one
    for vm in victims:
        cluster.start(vm, wait=True)
    cluster.wait_converged(cluster.vms, timeout=60)
    return out, false


def detection(root: Path, timing: str, mode: str, failures: int, rng: random.Random) -> dict:
    rows = {}
    with running_cluster(root, 10, membership_config(timing, mode), attempts=3) as cluster:
        limit = bound(timing, mode) + 10
        false = []
        for k in (1, 2, 3):
            results = []
            for i in range(failures):
                victims = rng.sample(cluster.vms[1:], k)
                got, wrong = one_kill(cluster, victims, limit)
                results += got
                false += wrong
                log(f"  {timing} {mode}: kill {k} ({'+'.join(victims)}) #{i + 1}: " +
                    ", ".join(f"first {_s(r['first'])} all {_s(r['all'])}" for r in got))
            rows[k] = results
    return {"by_kills": rows, "false_failures": len(false), "bound": bound(timing, mode)}


# -- 2. false positives --------------------------------------------------------------------

def false_positives_real(root: Path, mode: str, drop: float, periods: int) -> dict:
    """At high loss in Ping-Ack the group never settles (members are failed as fast as they
    join): the window is measured all the same, from when every node runs."""
    timing = "fast"
    period = TIMINGS[timing]["protocol_period"]
    c = LocalCluster(root, 10, membership=membership_config(timing, mode, drop))
    try:
        c.start("01")
        for vm in c.vms[1:]:
            c.start(vm, wait=False)
        try:
            c.wait_converged(c.vms, timeout=20)
            settled = True
        except AssertionError:
            settled = False
        time.sleep(2 * period)
        start = time.time()
        before = {vm: scrape(c, vm) for vm in c.vms}
        time.sleep(periods * period)
        after = {vm: scrape(c, vm) for vm in c.vms}
        seconds = time.time() - start
        failed = failures_seen(c, start)
        suspected = {tuple(SUSPECT_LINE.match(message).groups())
                     for _, _, message in c.log_events(c.vms, r"^SUSPECT ", start)}
    finally:
        c.close()
        shutil.rmtree(root / "data", ignore_errors=True)
    return {"false_positives": len(failed), "per_100_periods": 100 * len(failed) / (
        seconds / period), "suspicions": len(suspected), "seconds": seconds,
            "settled": settled, "bytes": bandwidth(before, after, seconds)}


def false_positives_sim(timing: str, mode: str, drop: float, periods: int, seed: int) -> dict:
    t = TIMINGS[timing]
    settings = Settings(protocol_period=t["protocol_period"], ping_timeout=t["ping_timeout"],
                        suspicion=MODES[mode] == "on", suspicion_timeout=t["suspicion_timeout"],
                        monitors=t["monitors"], join_retry=0.5, tombstone_ttl=1e9)
    net = simnet.start_cluster(10, seed=seed, settings=settings)
    net.loss = drop
    start, failed = net.now, set()
    step = min(0.05, t["protocol_period"] / 10)
    while net.now < start + periods * t["protocol_period"]:
        net.run_for(t["protocol_period"], step)
        for at, _, event in net.events_of("fail"):
            if at >= start:
                failed.add(event.member.id)
        for at, addr, event in net.events_of("self_failed"):   # as a node's shell does:
            if at >= start and addr not in net.crashed:        # it rejoins under a new id
                net.crashed.add(addr)
                net.restart(event.member.vm)
        net.events = [e for e in net.events if e[0] >= net.now - 1e-9]
    return {"false_positives": len(failed), "per_100_periods": 100 * len(failed) / periods}


# -- 3. bandwidth ---------------------------------------------------------------------------

def scrape(cluster, vm: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", cluster.ports[vm] + HTTP_OFFSET, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    values = {}
    for line in text.splitlines():
        if line.startswith("rainstorm_membership_") and "_bytes_total" in line:
            name, value = line.split(" ")
            values[name] = float(value)
    return values


def bandwidth(before: dict, after: dict, seconds: float) -> dict:
    per_node = [sum(after[vm].get(k, 0) - before[vm].get(k, 0) for k in after[vm]) / seconds
                for vm in after if vm in before]
    sent = [(after[vm]["rainstorm_membership_sent_bytes_total"] -
             before[vm]["rainstorm_membership_sent_bytes_total"]) / seconds for vm in after]
    return {"mean": statistics.mean(per_node), "max": max(per_node),
            "sent_mean": statistics.mean(sent)}


def quiet_bandwidth(root: Path, n: int, timing: str, mode: str) -> dict:
    with running_cluster(root, n, membership_config(timing, mode), attempts=3) as cluster:
        time.sleep(2 * TIMINGS[timing]["protocol_period"])
        start = time.time()
        before = {vm: scrape(cluster, vm) for vm in cluster.vms}
        time.sleep(BANDWIDTH_WINDOW[timing])
        after = {vm: scrape(cluster, vm) for vm in cluster.vms}
        return bandwidth(before, after, time.time() - start)


# -- the report ----------------------------------------------------------------------------

def _s(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _stats(values: list) -> tuple:
    got = [v for v in values if v is not None]
    return (statistics.median(got) if got else None, max(got) if got else None,
            len(values) - len(got))


def report(results: dict, args) -> str:
    parts = [f"# Membership benchmark\n\ncode {code_version(('membership', 'cluster'))}, "
             f"{time.strftime('%Y-%m-%d')}; 10 nodes unless said; seconds after kill -9.\n"]
    rows = []
    for key, d in results.get("detection", {}).items():
        timing, mode = key.split(" ", 1)
        for k, runs in d["by_kills"].items():
            first, every = _stats([r["first"] for r in runs]), _stats([r["all"] for r in runs])
            ok = every[1] is not None and every[2] == 0 and every[1] <= d["bound"] + 1
            rows.append([timing, mode, k, len(runs), _s(first[0]), _s(first[1]), _s(every[0]),
                         _s(every[1]), every[2], f"{d['bound']:g}", "yes" if ok else "NO"] +
                        ([d["false_failures"]] if "false_failures" in d else []))
    if rows:
        parts.append("## Detection\n\n" + md_table(
            ["timings", "mode", "killed at once", "failures", "first median", "first max",
             "all median", "all max", "missed", "bound", "all max <= bound + 1"] +
            (["live members failed meanwhile"] if rows and len(rows[0]) == 12 else []), rows))
    rows = []
    for mode in MODES:
        for drop in DROPS:
            key = f"{mode} {drop:g}"
            real = results.get("fp_real", {}).get(key)
            sim_fast = results.get("fp_sim_fast", {}).get(key)
            sim_seed = results.get("fp_sim_seed", {}).get(key)
            if not (real or sim_fast or sim_seed):
                continue
            rows.append([mode, f"{100 * drop:g} %",
                         (f"{real['per_100_periods']:.2f} ({real['false_positives']})" +
                          ("" if real["settled"] else ", never settled")) if real else "",
                         real["suspicions"] if real else "",
                         f"{sim_fast['per_100_periods']:.2f}" if sim_fast else "",
                         f"{sim_seed['per_100_periods']:.2f}" if sim_seed else ""])
    if rows:
        parts.append(f"## False positives per 100 protocol periods (cluster-wide)\n\n"
                     f"{args.periods} periods per row; in brackets the members falsely failed."
                     f"\n\n" + md_table(["mode", "drop rate", "real, fast timings",
                                         "suspicions (real, distinct)", "simulator, fast timings",
                                         "simulator, seed timings"], rows))
    rows = [[n, timing, mode, f"{b['mean']:,.0f}", f"{b['max']:,.0f}", f"{b['sent_mean']:,.0f}"]
            for key, b in results.get("bandwidth", {}).items()
            for n, timing, mode in [key.split(" ", 2)]]
    if rows:
        parts.append("## Bandwidth (UDP bytes per node per second, sent + received)\n\n" +
                     md_table(["nodes", "timings", "mode", "mean", "max", "sent, mean"], rows))
    target = results.get("target")
    if target:
        parts.append("## Target\n\n" + target)
    return "\n\n".join(parts) + "\n"


def target_verdict(results: dict) -> str:
    """The issue's target: 0 false positives at 10 % drop in Ping-Ack+S, and detection by
    all within period + timeout + suspicion + 1 s."""
    lines = []
    fp = results.get("fp_real", {}).get("Ping-Ack+S 0.1")
    if fp is not None:
        periods = fp["seconds"] / TIMINGS["fast"]["protocol_period"]
        lines.append(f"- false positives at 10 % drop, Ping-Ack+S, real processes: "
                     f"{fp['false_positives']} in {periods:.0f} periods "
                     f"({'met' if fp['false_positives'] == 0 else 'NOT met'}; target 0)")
    for key, d in results.get("detection", {}).items():
        if not key.endswith("Ping-Ack+S"):
            continue
        worst = [r["all"] for runs in d["by_kills"].values() for r in runs]
        seen = [w for w in worst if w is not None]
        ok = len(seen) == len(worst) and max(seen) <= d["bound"] + 1
        lines.append(f"- detection by all, {key} timings: max {_s(max(seen) if seen else None)} s"
                     f" over {len(worst)} failures, {len(worst) - len(seen)} missed; bound + 1 ="
                     f" {d['bound'] + 1:g} s ({'met' if ok else 'NOT met'})")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--failures", type=int, default=10, help="kills per count and mode")
    parser.add_argument("--periods", type=int, default=100, help="periods per drop rate")
    parser.add_argument("--quick", action="store_true",
                        help="2 failures, 50 periods, fast timings, 10 and 20 nodes")
    parser.add_argument("--only", default="detection,fp,bandwidth",
                        help="which parts: detection, fp, bandwidth")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    if args.quick:
        args.failures, args.periods = 2, 50
    timings = ["fast"] if args.quick else ["fast", "seed"]
    parts = set(args.only.split(","))
    rng = random.Random(args.seed)
    results: dict = {"args": vars(args)}
    work = Path(tempfile.mkdtemp(prefix="rainstorm-membership-bench-"))
    if "detection" in parts:
        results["detection"] = {}
        for timing in timings:
            for mode in MODES:
                log(f"detection: {timing} timings, {mode}, bound {bound(timing, mode):g} s")
                results["detection"][f"{timing} {mode}"] = detection(
                    work / f"det-{timing}-{mode}", timing, mode, args.failures, rng)
    if "fp" in parts:
        for name in ("fp_real", "fp_sim_fast", "fp_sim_seed"):
            results[name] = {}
        for mode in MODES:
            for drop in DROPS:
                key = f"{mode} {drop:g}"
                log(f"false positives: {mode}, drop {drop:g}")
                results["fp_real"][key] = real = false_positives_real(
                    work / f"fp-{mode}-{drop}", mode, drop, args.periods)
                results["fp_sim_fast"][key] = false_positives_sim(
                    "fast", mode, drop, args.periods, args.seed)
                if not args.quick:
                    results["fp_sim_seed"][key] = false_positives_sim(
                        "seed", mode, drop, args.periods, args.seed)
                log(f"  real: {real['false_positives']} false failures, "
                    f"{real['suspicions']} suspicions in {real['seconds']:.0f} s")
                if drop == 0.0:
                    results.setdefault("bandwidth", {})[f"10 fast {mode}"] = real["bytes"]
    if "bandwidth" in parts:
        results.setdefault("bandwidth", {})
        if not args.quick:
            log("bandwidth: 10 nodes, seed timings")
            results["bandwidth"]["10 seed Ping-Ack+S"] = quiet_bandwidth(
                work / "bw-seed", 10, "seed", "Ping-Ack+S")
        for n in SCALES[:2] if args.quick else SCALES:
            log(f"bandwidth: {n} nodes, fast timings")
            results["bandwidth"][f"{n} fast Ping-Ack+S (scale)"] = quiet_bandwidth(
                work / f"bw-{n}", n, "fast", "Ping-Ack+S")
    results["target"] = target_verdict(results)
    write_report(report(results, args), results, Path(args.out), log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
