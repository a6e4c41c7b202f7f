"""Jepsen-style HyDFS appends: clients that remember which appends were acknowledged, and the
check that after a merge every acknowledged append is on every replica exactly once, in its
client's order. Used by the stress test and the chaos suite."""

from __future__ import annotations

import threading

from cluster.local_cluster import CommandFailed, wait_until
from cluster.rpc import Unreachable
from cluster import wire


class AppendClient(threading.Thread):
    """Appends `vm:i` records one at a time and remembers which calls returned success."""

    def __init__(self, cluster, vm: str, name: str, stop: threading.Event):
        super().__init__(daemon=True)
        self.cluster, self.vm, self.name, self.stop = cluster, vm, name, stop
        self.ok: list[int] = []
        self.unknown: list[int] = []

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            path = self.cluster.root / f"rec-{self.vm}"
            path.write_text(f"{self.vm}:{i}\n")
            try:
                self.cluster.query(self.vm, "append", str(path), self.name, timeout=30)
                self.ok.append(i)
            except (CommandFailed, OSError, wire.ProtocolError, Unreachable):
                self.unknown.append(i)          # may or may not have been applied


def merged_replicas(cluster, name: str, owners: list[str], via: str = "01") -> dict:
    """Merge `name` until a second merge finds nothing new; each owner's copy (text)."""
    def merged():
        try:
            cluster.query(via, "merge", name, timeout=60)
        except CommandFailed:
            return False
        return cluster.query(via, "merge", name, timeout=60)["already"]
    wait_until(merged, 60, interval=0.5, what=f"a complete merge of {name}")
    contents = {}
    for vm in owners:
        out = cluster.root / f"final-{name}-{vm}"
        cluster.query(via, "getfromreplica", vm, name, str(out))
        contents[vm] = out.read_text()
    return contents


def append_violations(contents: dict, clients: list[AppendClient]) -> list[str]:
    """What breaks the promise: replicas that differ, an append twice, a client's appends
    out of order, an acknowledged append missing, a line nobody appended."""
    problems = []
    if len(set(contents.values())) != 1:
        problems.append("replicas differ after merge")
    lines = next(iter(contents.values())).splitlines()
    if len(lines) != len(set(lines)):
        problems.append(f"{len(lines) - len(set(lines))} appends present twice")
    for c in clients:
        seen = [int(line.split(":")[1]) for line in lines if line.startswith(f"{c.vm}:")]
        if seen != sorted(seen):
            problems.append(f"client {c.vm}'s appends are out of order")
        missing = set(c.ok) - set(seen)
        if missing:
            problems.append(f"client {c.vm}: {len(missing)} acknowledged appends lost")
        if not set(seen) <= set(c.ok) | set(c.unknown):
            problems.append(f"client {c.vm}: appends nobody made")
    return problems
