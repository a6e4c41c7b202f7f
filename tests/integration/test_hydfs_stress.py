"""HyDFS under stress: a Jepsen-style append test with kill -9 and restarts, and a 200 MB file."""

from __future__ import annotations

import hashlib
import random
import threading
import time

import pytest

from cluster.local_cluster import wait_until
from hydfs.ring import Ring
from tests.appends import AppendClient, append_violations, merged_replicas

pytestmark = [pytest.mark.cluster]

CLIENTS = ["01", "02", "03", "04"]
KILLABLE = ["05", "06", "07", "08"]


def name_on(vms: list[str], all_vms: list[str]) -> str:
    """A file name whose replicas all live on `vms`."""
    ring = Ring(all_vms, 11)
    for i in range(10000):
        name = f"jepsen{i}"
        if set(ring.replicas(name, 3)) <= set(vms):
            return name
    raise AssertionError("no such name")


@pytest.mark.timeout(300)
def test_concurrent_appends_survive_kill_and_restart_exactly_once_in_client_order(local_cluster):
    cluster = local_cluster(8)
    name = name_on(KILLABLE, cluster.vms)
    empty = cluster.root / "empty"
    empty.write_bytes(b"")
    cluster.query("01", "create", str(empty), name)
    stop = threading.Event()
    clients = [AppendClient(cluster, vm, name, stop) for vm in CLIENTS]
    for c in clients:
        c.start()
    rng = random.Random(11)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:              # the nemesis: at most two down at once
        victims = rng.sample(KILLABLE, rng.choice([1, 2]))
        for vm in victims:
            cluster.kill(vm)
        time.sleep(rng.uniform(0.5, 2.5))           # the outage itself, not a wait for a result
        for vm in victims:
            cluster.start(vm, wait=False)
        cluster.wait_converged(cluster.vms, timeout=20)
    stop.set()
    for c in clients:
        c.join(timeout=60)
    owners = Ring(cluster.vms, 11).replicas(name, 3)
    wait_until(lambda: cluster.holders(name) == sorted(owners), 30, interval=0.3,
               what="re-replication to settle (excess copies dropped once covered)")
    assert append_violations(merged_replicas(cluster, name, owners), clients) == []
    assert sum(len(c.ok) for c in clients) > 100


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.timeout(300)
def test_a_200_mb_file_and_a_200_mb_append_round_trip_with_bounded_node_memory(local_cluster):
    cluster = local_cluster(5)
    src = cluster.root / "big.bin"
    block = hashlib.sha256(b"seed").digest() * 32768          # 1 MiB, repeated with a twist
    sha = hashlib.sha256()
    with open(src, "wb") as f:
        for i in range(200):
            chunk = i.to_bytes(4, "big") + block[4:]
            f.write(chunk)
            sha.update(chunk)
    cluster.query("02", "create", str(src), "big", timeout=120)
    cluster.query("04", "append", str(src), "big", timeout=120)     # appends stream too
    out = cluster.root / "big.out"
    cluster.query("03", "get", "big", str(out), timeout=120)
    got = hashlib.sha256()
    with open(out, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            got.update(chunk)
    twice = sha.copy()
    with open(src, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            twice.update(chunk)
    assert got.hexdigest() == twice.hexdigest()
    # Re-replicating it (a 200 MB base and a 200 MB pending append) is bounded too.
    owners = Ring(cluster.vms, 11).replicas("big", 3)
    victim = next(vm for vm in owners if vm != "01")
    cluster.kill(victim)
    alive = [vm for vm in cluster.vms if vm != victim]
    wait_until(lambda: cluster.holders("big") == sorted(Ring(alive, 11).replicas("big", 3)),
               60, interval=0.3, what="re-replication of the big file")
    for vm in alive:
        rss = peak_rss_mb(cluster.procs[vm].pid)
        assert rss < 120, f"node {vm} peaked at {rss:.0f} MB for a 200 MB file"
    assert (cluster.root / "big.out").stat().st_size == 400 * (1 << 20)
