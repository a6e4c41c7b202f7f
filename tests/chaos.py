"""The chaos suite: real clusters, a seeded nemesis, and an oracle for every round.

    python -m tests.chaos [--rounds N] [--seed S] [--root DIR]      (make chaos ROUNDS= SEED=)

A ten-node cluster runs on 127.0.0.1 with fast failure detection (period 0.2 s, ping
timeout 0.3 s, suspicion 1.5 s: a crash is declared within about 2 s). Each round draws,
from its own seed, one of two workloads and one fault, on any node but the introducer (node
01), sources and the leader included:

- a RainStorm job: App 1 or App 2, NUM_TASKS 1-5, a 30,000-line traffic-signs file replayed
  at 10,000 lines/s, the fault injected 0.3-2 s into it. DEST must hold exactly the oracle's
  rows (bench/reference_apps.py), and the job must end (no hang: it gets 150 s);
- HyDFS appends: four clients append `vm:i` records to one file, one at a time, while the
  fault happens; after a merge every acknowledged append must be on every replica exactly
  once, in its client's order (tests/appends.py).

Faults: kill -9 of one node, or of two at once; SIGSTOP of a node process alone, or of a
node with all its task processes (a frozen VM), shorter and longer than detection; a kill
-9 followed by a restart while the work goes on; a kill of one node while another is frozen;
and the leader's faults: a kill -9 of the leader's machine (node and task processes), or a
freeze of it longer than detection. The job is submitted on, and waited for at, a node that
the fault spares: across a leader fault its summary comes from the successor.
Paused nodes are resumed and killed ones restarted after the round, so the next round finds
ten nodes again.

Every round prints one line with its seed; `--seed S --rounds 1` replays that round (the
nemesis' choices, not the machine's timing, which is what made the round what it was).
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import reference_apps
from bench.gen_traffic_signs import iter_lines, write_csv
from cluster.local_cluster import CommandFailed, LocalCluster, children_of
from tests.appends import AppendClient, append_violations, merged_replicas

LINES = 30000
RATE = 10000
JOB_TIMEOUT = 150.0
APPS = {1: ("grep", "signs_select", "No Outlet"), 2: ("signs_by_category", "count", "Punched Telespar")}
FAULTS = ("kill", "kill2", "pause_short", "pause_long", "freeze_short", "freeze_long",
          "restart", "kill_and_freeze", "leader_kill", "leader_freeze")
INTRODUCER = "01"
SRC = "chaos_src"


@dataclass
class Round:
    seed: int
    workload: str             # "job" or "appends"
    fault: str
    victims: list
    at: float                 # seconds into the workload
    hold: float               # how long a pause lasts, or a killed node stays down
    app: int = 0
    tasks: int = 0
    result: str = ""
    ok: bool = False
    seconds: float = 0.0
    notes: list = field(default_factory=list)

    def line(self) -> str:
        what = (f"app{self.app} tasks={self.tasks}" if self.workload == "job"
                else "appends x4 clients")
        return (f"seed {self.seed}: {what}, {self.fault} vm{'+vm'.join(self.victims)} "
                f"at {self.at:.1f} s for {self.hold:.1f} s -> {self.result} "
                f"({self.seconds:.1f} s)")


def draw(seed: int, vms: list[str]) -> Round:
    rng = random.Random(seed)
    fault = rng.choice(FAULTS)
    workers = [vm for vm in vms if vm != INTRODUCER]
    victims = rng.sample(workers, 2 if fault in ("kill2", "kill_and_freeze") else 1)
    if fault.startswith("leader"):
        victims = []                    # whoever leads when the fault strikes
    hold = {"pause_short": rng.uniform(0.4, 1.2), "freeze_short": rng.uniform(0.4, 1.2),
            "pause_long": rng.uniform(3.0, 6.0), "freeze_long": rng.uniform(3.0, 6.0),
            "kill_and_freeze": rng.uniform(3.0, 6.0), "leader_freeze": rng.uniform(3.0, 6.0),
            "restart": rng.uniform(0.5, 2.0)}.get(fault, 0.0)
    workload = "appends" if rng.random() < 0.2 else "job"
    return Round(seed, workload, fault, victims, rng.uniform(0.3, 2.0), hold,
                 app=rng.choice([1, 2]), tasks=rng.randint(1, 5))


# -- the nemesis ----------------------------------------------------------------------------

def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class Nemesis:
    """Carries out one round's fault; `heal` undoes what is left of it."""

    def __init__(self, cluster: LocalCluster, rnd: Round, home: str):
        self.cluster, self.rnd, self.home = cluster, rnd, home
        self.paused: list[int] = []
        self.killed: list[str] = []

    def strike(self) -> None:
        c, r = self.cluster, self.rnd
        if r.fault.startswith("leader"):
            r.victims = [c.query(self.home, "leader")["leader"]]
        if r.fault == "leader_kill":
            c.crash(r.victims[0])               # its task processes die with it
            self.killed.append(r.victims[0])
            return
        if r.fault in ("kill", "kill2", "restart"):
            for vm in r.victims:
                c.kill(vm)
                self.killed.append(vm)
            if r.fault == "restart":
                time.sleep(r.hold)              # the outage itself
                for vm in r.victims:
                    c.start(vm, wait=False)
                self.killed.clear()
            return
        frozen = r.victims[-1]
        if r.fault == "kill_and_freeze":
            c.kill(r.victims[0])
            self.killed.append(r.victims[0])
        pid = c.procs[frozen].pid
        pids = [pid] + (children_of(pid) if r.fault.startswith(("freeze", "kill_and", "leader"))
                        else [])
        signal_all(pids, signal.SIGSTOP)
        self.paused = pids
        time.sleep(r.hold)                      # the pause itself
        self.resume()

    def resume(self) -> None:
        signal_all(self.paused, signal.SIGCONT)
        self.paused = []

    def heal(self) -> None:
        self.resume()
        for vm in self.killed:
            self.cluster.start(vm, wait=False)
        self.killed.clear()
        for vm, proc in self.cluster.procs.items():
            if proc.poll() is not None:
                self.cluster.start(vm, wait=False)
        self.cluster.wait_converged(self.cluster.vms, timeout=60)


# -- the workloads --------------------------------------------------------------------------

class Suite:
    def __init__(self, root: Path):
        self.cluster = LocalCluster(root, 10)
        self.lines = list(iter_lines(LINES))
        self.expected = {1: reference_apps.app1_lines(self.lines, APPS[1][2]),
                         2: reference_apps.app2_expected_rows(self.lines, APPS[2][2])}

    def start(self) -> None:
        self.cluster.start_all()
        path = self.cluster.root / SRC
        write_csv(LINES, str(path))
        self.cluster.query(INTRODUCER, "create", str(path), SRC, timeout=120)

    def close(self) -> None:
        self.cluster.close()

    def play(self, rnd: Round) -> Round:
        started = time.monotonic()
        self.home = self._home(rnd)
        nemesis = Nemesis(self.cluster, rnd, self.home)
        try:
            if rnd.workload == "job":
                self._job(rnd, nemesis)
            else:
                self._appends(rnd, nemesis)
        except Exception as exc:         # a round that breaks is reported, not hidden
            rnd.result, rnd.ok = f"ERROR {type(exc).__name__}: {exc}", False
        finally:
            nemesis.heal()
        rnd.seconds = time.monotonic() - started
        return rnd

    def _home(self, rnd: Round) -> str:
        """Where the round's commands go: a node its fault spares (not the leader, for a
        leader fault)."""
        leader = self.cluster.query(INTRODUCER, "leader")["leader"]
        spared = [vm for vm in self.cluster.vms if vm not in rnd.victims and
                  not (rnd.fault.startswith("leader") and vm == leader)]
        return spared[rnd.seed % len(spared)]

    def _job(self, rnd: Round, nemesis: Nemesis) -> None:
        op1, op2, arg = APPS[rnd.app]
        dest = f"chaos_out_{rnd.seed}"
        outcome = {}

        def job():
            try:
                outcome["doc"] = self.cluster.query(
                    self.home, "RainStorm", op1, op2, SRC, dest, str(rnd.tasks), "--op1-args",
                    arg, "--rate", str(RATE), timeout=JOB_TIMEOUT)
            except (CommandFailed, OSError) as exc:
                outcome["error"] = str(exc)
        thread = threading.Thread(target=job, daemon=True)
        thread.start()
        time.sleep(rnd.at)                      # the fault's moment in the job
        nemesis.strike()
        thread.join(JOB_TIMEOUT)
        if thread.is_alive():
            rnd.result = f"HUNG (no summary after {JOB_TIMEOUT:.0f} s)"
            return
        if "error" in outcome:
            rnd.result = f"FAILED: {outcome['error']}"
            return
        got = self._rows(dest)
        want = self.expected[rnd.app]
        missing, doubled = sum((want - got).values()), sum((got - want).values())
        out = outcome["doc"]["records_out"]
        rnd.ok = not missing and not doubled
        rnd.result = (f"OK {sum(got.values())} rows" if rnd.ok else
                      f"WRONG missing={missing} extra={doubled} "
                      f"e.g. {list((want - got) + (got - want))[:3]}")
        if out != sum(want.values()):
            rnd.notes.append(f"summary records_out {out}, expected {sum(want.values())}")

    def _rows(self, dest: str) -> collections.Counter:
        out = self.cluster.root / f"{dest}.csv"
        self.cluster.query(self.home, "get", dest, str(out), timeout=120)
        return collections.Counter(out.read_text().splitlines())

    def _appends(self, rnd: Round, nemesis: Nemesis) -> None:
        name = f"chaos_appends_{rnd.seed}"
        empty = self.cluster.root / "empty"
        empty.write_bytes(b"")
        self.cluster.query(self.home, "create", str(empty), name, timeout=60)
        stop = threading.Event()
        leader = self.cluster.query(self.home, "leader")["leader"]
        writers = [vm for vm in self.cluster.vms if vm not in rnd.victims and
                   not (rnd.fault.startswith("leader") and vm == leader)][:4]
        clients = [AppendClient(self.cluster, vm, name, stop) for vm in writers]
        for c in clients:
            c.start()
        time.sleep(rnd.at)
        nemesis.strike()
        time.sleep(2.0)                          # appends go on after the fault
        stop.set()
        for c in clients:
            c.join(timeout=60)
        nemesis.heal()
        owners = self.cluster.query(self.home, "ls", name)["replicas"]
        problems = append_violations(
            merged_replicas(self.cluster, name, [r["vm"] for r in owners]), clients)
        acked = sum(len(c.ok) for c in clients)
        rnd.ok = not problems and acked > 0
        rnd.result = (f"OK {acked} acknowledged appends" if rnd.ok else
                      f"WRONG {'; '.join(problems) or 'no append succeeded'}")


def run(rounds: int, seed: int, root: Path, out=print) -> list[Round]:
    """Play `rounds` rounds (seeds seed, seed+1, ...); their results."""
    suite = Suite(root)
    results = []
    try:
        suite.start()
        for i in range(rounds):
            rnd = suite.play(draw(seed + i, suite.cluster.vms))
            results.append(rnd)
            out(f"round {i + 1}/{rounds} {rnd.line()}"
                + "".join(f"\n    note: {n}" for n in rnd.notes))
    finally:
        suite.close()
    out(table(results))
    return results


def table(results: list[Round]) -> str:
    """Fault kind x workload: rounds and how they ended."""
    rows = collections.defaultdict(lambda: [0, 0])
    for r in results:
        rows[(r.fault, r.workload)][0] += 1
        rows[(r.fault, r.workload)][1] += r.ok
    lines = ["| fault | workload | rounds | exact | not exact |", "|---|---|---|---|---|"]
    for (fault, workload), (n, ok) in sorted(rows.items()):
        lines.append(f"| {fault} | {workload} | {n} | {ok} | {n - ok} |")
    bad = sum(1 for r in results if not r.ok)
    lines.append(f"\n{len(results)} rounds, {len(results) - bad} exact, {bad} not")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None,
                        help="first round's seed (default: from the clock, printed)")
    parser.add_argument("--root", type=Path, default=None,
                        help="where the cluster keeps its files (default: a temporary dir)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time()) % 100000
    print(f"chaos: {args.rounds} rounds from seed {seed} (replay one: --seed N --rounds 1)",
          flush=True)
    root = args.root or Path(tempfile.mkdtemp(prefix="rainstorm-chaos-"))
    results = run(args.rounds, seed, root, out=lambda line: print(line, flush=True))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
