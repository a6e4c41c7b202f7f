"""The network-namespace tier (tests/netns.py): every node in its own namespace with its own
IP, all on port 7000, joined by a bridge; partitions made by moving links off the bridge.

Runs as root (`make test-netns`, and `make test` / `.ci/run` when they have root); skipped
otherwise, saying why.
"""

from __future__ import annotations

import collections
import http.client
import json
import threading
import time

import pytest

from bench import reference_apps
from bench.gen_traffic_signs import iter_lines
from cluster.local_cluster import CommandFailed, wait_until
from tests.bounds import detection
from tests.netns import FAKETIME_LIB, NetnsCluster, netns_available

WHY_NOT = netns_available()
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300),
              pytest.mark.skipif(WHY_NOT is not None, reason=f"netns tier: {WHY_NOT}")]

MINORITY = ["09", "10"]


@pytest.fixture
def cluster(tmp_path):
    with NetnsCluster(tmp_path / "netns", 10) as cluster:
        yield cluster



def test_ten_nodes_with_their_own_addresses_join_and_agree(cluster):
    for vm in cluster.vms:
        members = cluster.members(vm)
        assert set(members) == set(cluster.vms)
        assert {m["address"] for m in members.values()} == \
            {f"{cluster.host(v)}:7000" for v in cluster.vms}


class Appender(threading.Thread):
    """One client appending numbered lines to a HyDFS file until told to stop: from the
    root namespace to node `vm` (`inside=False`), or from inside `vm`'s namespace."""

    def __init__(self, cluster, vm: str, name: str, inside: bool):
        super().__init__(daemon=True)
        self.cluster, self.vm, self.name, self.inside = cluster, vm, name, inside
        self.acked, self.refused, self.stop = [], 0, threading.Event()
        self.errors: list[str] = []

    def run(self):
        seq = 0
        while not self.stop.is_set():
            seq += 1
            line = f"{'in' if self.inside else 'out'}-{self.vm}-{seq:05d}"
            path = self.cluster.root / f"{line}.txt"
            path.write_text(line + "\n")
            if self._append(path):
                self.acked.append(line)
            else:
                self.refused += 1
                time.sleep(0.2)

    def _append(self, path) -> bool:
        if self.inside:
            result = self.cluster.ctl_in(self.vm, "append", str(path), self.name, timeout=60)
            if result.returncode != 0:
                self.errors.append(result.stdout.strip() or result.stderr.strip())
            return result.returncode == 0
        try:
            self.cluster.query(self.vm, "append", str(path), self.name, timeout=60)
            return True
        except (CommandFailed, OSError) as exc:
            self.errors.append(str(exc))
            return False


def test_a_cut_off_minority_heals_and_every_acknowledged_append_is_there_once(cluster):
    """Two nodes cut off for longer than detection while a client on each side appends to
    one file; after healing, membership reconverges, and after a merge every acknowledged
    append of either side is on every replica once, in its client's order. (A 2-node side
    has fewer live nodes than replicas: it refuses writes at once; see the README.)"""
    seed = cluster.root / "seed.txt"
    seed.write_text("start\n")
    cluster.query("01", "create", str(seed), "split_file", timeout=30)
    clients = [Appender(cluster, "03", "split_file", inside=False),
               Appender(cluster, "09", "split_file", inside=True)]
    for client in clients:
        client.start()
    time.sleep(1.0)
    cluster.cut(MINORITY)
    majority = [vm for vm in cluster.vms if vm not in MINORITY]
    wait_until(lambda: all(set(cluster.members(vm)) == set(majority) for vm in majority),
               detection(cluster) + 10, what="the majority to see the minority failed")
    time.sleep(2.0)
    cluster.heal()
    cluster.wait_converged(cluster.vms, timeout=detection(cluster) + 30)
    time.sleep(1.0)
    for client in clients:
        client.stop.set()
        client.join(timeout=90)
    assert all(client.acked for client in clients), [len(c.acked) for c in clients]
    cluster.query("01", "merge", "split_file", timeout=60)
    # The copy the majority made while the minority was cut off lives on until a
    # re-replication round sees the returned replica holds it all, and drops it.
    wait_until(lambda: len(cluster.holders("split_file")) == 3, 30,
               what="the surplus copy made during the partition to be dropped")
    holders = cluster.holders("split_file")
    for vm in holders:
        out = cluster.root / f"split_file.{vm}"
        cluster.query("01", "getfromreplica", vm, "split_file", str(out), timeout=60)
        lines = out.read_text().splitlines()
        for client in clients:
            mine = [line for line in lines if line.startswith(client.acked[0][:-5])]
            acked = set(client.acked)
            assert all(lines.count(line) == 1 for line in acked), f"vm{vm}: lost or doubled"
            assert [line for line in mine if line in acked] == client.acked, \
                f"vm{vm}: {client.vm}'s appends out of order"
            assert len(mine) == len(set(mine)), f"vm{vm}: an append doubled"


@pytest.fixture
def skewed(tmp_path):
    if FAKETIME_LIB is None:
        pytest.skip("no libfaketime (Debian package faketime; .ci/run installs it)")
    cluster = NetnsCluster(tmp_path / "skewed", 10)
    cluster.skew = {"04": "+40", "05": "+40", "07": "-40", "08": "-40"}
    with cluster:
        yield cluster


def test_nodes_40_s_ahead_and_behind_keep_each_clients_order_and_fail_nobody(skewed):
    """Wall clocks 40 s ahead (04, 05) and behind (07, 08), monotonic clocks true: appends
    through skewed and true nodes keep each client's order, nothing is lost or doubled, and
    no one is declared failed."""
    cluster = skewed
    for vm, offset in cluster.skew.items():      # the skew is real
        conn = http.client.HTTPConnection(cluster.host(vm), 8000, timeout=10)
        conn.request("GET", "/api/node")
        their = json.loads(conn.getresponse().read())["time"]
        conn.close()
        assert abs(their - time.time() - float(offset)) < 5, (vm, their - time.time())
    seed = cluster.root / "seed.txt"
    seed.write_text("start\n")
    cluster.query("01", "create", str(seed), "skew_file", timeout=30)
    clients = [Appender(cluster, vm, "skew_file", inside=vm != "03")
               for vm in ("03", "04", "07")]
    for client in clients:
        client.start()
    time.sleep(6.0)
    for client in clients:
        client.stop.set()
        client.join(timeout=90)
    assert all(len(client.acked) >= 3 and client.refused == 0 for client in clients), \
        [(c.vm, len(c.acked), c.refused, c.errors[:2]) for c in clients]
    cluster.query("01", "merge", "skew_file", timeout=60)
    for vm in cluster.holders("skew_file"):
        out = cluster.root / f"skew_file.{vm}"
        cluster.query("01", "getfromreplica", vm, "skew_file", str(out), timeout=60)
        lines = out.read_text().splitlines()
        for client in clients:
            assert [line for line in lines if line in set(client.acked)] == client.acked, \
                f"vm{vm}: the appends through vm{client.vm} are lost, doubled or reordered"
    assert cluster.log_events(cluster.vms, r"^FAIL ") == []    # in the whole run
    cluster.wait_converged(cluster.vms, timeout=5)


def test_a_job_whose_two_workers_are_cut_off_and_healed_is_exact(cluster):
    """App 2 paced over ~6 s; 1.5 s in, two workers (none of them the leader, the node the
    test asks or one holding a source) are cut off for longer than detection, then healed: the job ends done with
    exactly the oracle's rows. Their tasks ran on, cut off, as zombies: fenced, they added
    nothing."""
    lines = list(iter_lines(12000, seed=5))
    src = cluster.root / "signs"
    src.write_text("".join(line + "\n" for line in lines))
    cluster.query("01", "create", str(src), "signs", timeout=60)
    op1, op2, arg = ("signs_by_category", "count", "Punched Telespar")
    job = cluster.query("02", "RainStorm", op1, op2, "signs", "signs_out", "3", "--op1-args",
                        arg, "--rate", "2000", "--detach", timeout=60)["job"]
    time.sleep(1.5)
    tasks = cluster.query("02", "job", job)["tasks"]
    sources = {t["vm"] for t in tasks if t["task"].startswith("source-")}
    victims = sorted({t["vm"] for t in tasks} - sources - {"01", "02"})[:2]   # not whom we ask
    assert len(victims) == 2, tasks
    cluster.cut(victims)
    others = [vm for vm in cluster.vms if vm not in victims]
    wait_until(lambda: all(set(cluster.members(vm)) == set(others) for vm in others),
               detection(cluster) + 10, what="the others to see the victims failed")
    wait_until(lambda: cluster.query("02", "job", job)["failures_recovered"] >= 1, 30,
               interval=0.2, what="the victims' tasks to be started elsewhere")
    cluster.heal()
    done = wait_until(lambda: cluster.query("02", "job", job)["state"] in ("done", "failed"),
                      180, interval=0.5, what="the job to end")
    summary = cluster.query("02", "job", job)
    assert done and summary["state"] == "done", summary
    out = cluster.root / "signs_out.csv"
    cluster.query("02", "get", "signs_out", str(out), timeout=60)
    assert collections.Counter(out.read_text().splitlines()) == \
        reference_apps.app2_expected_rows(lines, arg)
    assert summary["failures_recovered"] >= 1


def test_a_create_of_one_name_on_both_sides_only_the_majoritys_stands(cluster):
    """Sides of 7 and 3 nodes: the 3 nodes have enough live nodes for a file's replicas but
    no majority of the 10, so their create of `twice` is refused (`no_quorum`) while the
    majority's succeeds; after healing every replica holds the majority's file, on both
    sides. (Without the quorum rule both creates succeeded and copies of the losing one
    stayed on their nodes for ever: tests/unit/test_hydfs_logic.py pins that too.)"""
    minority = ["08", "09", "10"]
    majority = [vm for vm in cluster.vms if vm not in minority]
    cluster.cut(minority)
    wait_until(lambda: all(set(cluster.members(vm)) == set(majority) for vm in majority),
               detection(cluster) + 10, what="the majority to see the minority failed")
    wait_until(lambda: cluster.ctl_in("09", "list_mem").stdout.count('"vm"') == 3,
               detection(cluster) + 10, what="the minority to see the majority failed")
    first, second = cluster.root / "first.txt", cluster.root / "second.txt"
    first.write_text("created on the majority side\n")
    second.write_text("created on the minority side\n")
    made = cluster.ctl_in("09", "create", str(second), "twice", timeout=60)
    assert made.returncode == 1 and '"no_quorum"' in made.stdout, made.stdout + made.stderr
    cluster.query("02", "create", str(first), "twice", timeout=60)
    cluster.heal()
    cluster.wait_converged(cluster.vms, timeout=detection(cluster) + 30)
    holders = wait_until(lambda: (lambda h: len(h) == 3 and h)(cluster.holders("twice")), 30,
                         interval=0.5, what="3 replicas of twice (excess copies dropped)")
    for vm in holders:
        out = cluster.root / f"twice.{vm}"
        cluster.query("01", "getfromreplica", vm, "twice", str(out), timeout=30)
        assert out.read_text() == first.read_text()
    read = cluster.ctl_in("09", "get", "twice", str(cluster.root / "twice.read"))
    assert read.returncode == 0 and (cluster.root / "twice.read").read_text() == \
        first.read_text()
