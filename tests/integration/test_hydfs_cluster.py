"""HyDFS on real node processes: the classic demo scenarios, failures, races, errors."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import time

import pytest

from cluster.connection import Connection
from cluster.local_cluster import FAST_MEMBERSHIP, CommandFailed, wait_until
from hydfs.names import disk_name
from hydfs.read_rules import FIRST_PATIENCE
from hydfs.ring import Ring, ring_position

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]

REREPLICATION_BOUND = 12.0     # detection (2 s with fast timings) + a resync round + copying


def write(cluster, name: str, data: bytes) -> str:
    path = cluster.root / name
    path.write_bytes(data)
    return str(path)


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def replica_contents(cluster, name: str, vms) -> dict:
    out = {}
    for vm in vms:
        local = cluster.root / f"from{vm}-{name}"
        cluster.query("01" if vm != "01" else "02", "getfromreplica", vm, name, str(local))
        out[vm] = local.read_bytes()
    return out


def line(vm: str, round_: int) -> bytes:
    return f"{vm}:{round_}\n".encode()


def test_create_five_files_get_one_back_and_listings_agree_with_the_ring(local_cluster):
    cluster = local_cluster(10)
    files = {f"file{i}": os.urandom(1000 * (i + 1)) for i in range(5)}
    for name, data in files.items():
        cluster.query("03", "create", write(cluster, name, data), name)
    cluster.query("07", "get", "file2", str(cluster.root / "back"))
    assert (cluster.root / "back").read_bytes() == files["file2"]
    ring = Ring(cluster.vms, 11)
    ids = cluster.query("05", "list_mem_ids")["members"]
    assert [m["ring_id"] for m in ids] == sorted(m["ring_id"] for m in ids)
    assert {m["vm"]: m["ring_id"] for m in ids} == {vm: ring.position(vm) for vm in cluster.vms}
    for name in files:
        doc = cluster.query("09", "ls", name)
        assert doc["ring_id"] == ring_position(name, 11)
        assert [r["vm"] for r in doc["replicas"]] == ring.replicas(name, 3)
        assert cluster.holders(name) == sorted(ring.replicas(name, 3))
    store = cluster.query("04", "store")
    assert store["ring_id"] == ring.position("04")


def test_two_appends_from_one_client_then_get_shows_both_in_order(local_cluster):
    cluster = local_cluster(5)
    cluster.query("02", "create", write(cluster, "base", b"base\n"), "log")
    cluster.query("04", "append", write(cluster, "a1", b"first\n"), "log")
    cluster.query("04", "append", write(cluster, "a2", b"second\n"), "log")
    cluster.query("04", "get", "log", str(cluster.root / "got"))
    assert (cluster.root / "got").read_bytes() == b"base\nfirst\nsecond\n"


def test_multiappend_then_merge_makes_every_replica_identical(local_cluster):
    cluster = local_cluster(10)
    cluster.query("01", "create", write(cluster, "empty", b""), "shared")
    for round_ in range(3):
        pairs = [f"{vm}=" + write(cluster, f"m{vm}-{round_}", line(vm, round_) * 50)
                 for vm in ("02", "04", "06", "08")]
        cluster.query("05", "multiappend", "shared", *pairs)
    first = cluster.query("03", "merge", "shared")
    assert first["merged"] == 12 and not first["already"]
    assert cluster.query("03", "merge", "shared")["already"] is True
    owners = Ring(cluster.vms, 11).replicas("shared", 3)
    contents = replica_contents(cluster, "shared", owners)
    assert len(set(contents.values())) == 1
    text = next(iter(contents.values())).decode()
    for vm in ("02", "04", "06", "08"):
        for round_ in range(3):
            assert text.count(line(vm, round_).decode()) == 50
        rounds = [text.index(line(vm, r).decode()) for r in range(3)]
        assert rounds == sorted(rounds)       # each client's appends keep their order


def test_kill_two_replicas_and_every_file_gets_three_identical_live_copies(local_cluster):
    cluster = local_cluster(10)
    names = [f"f{i}" for i in range(12)]
    for name in names:
        cluster.query("01", "create", write(cluster, name, os.urandom(20000)), name)
        cluster.query("01", "append", write(cluster, name + ".a", name.encode() * 10), name)
    victims = Ring(cluster.vms, 11).replicas("f0", 3)[:2]
    if "01" in victims:
        victims = [vm for vm in Ring(cluster.vms, 11).replicas("f0", 3) if vm != "01"]
    for vm in victims:
        cluster.kill(vm)
    survivors = [vm for vm in cluster.vms if vm not in victims]
    ring = Ring(survivors, 11)

    def all_replicated():
        return all(cluster.holders(n) == sorted(ring.replicas(n, 3)) for n in names)
    wait_until(all_replicated, REREPLICATION_BOUND, interval=0.2, what="three live replicas")
    for name in names[:4]:
        contents = replica_contents(cluster, name, ring.replicas(name, 3))
        assert len(set(contents.values())) == 1
        assert next(iter(contents.values())).endswith(name.encode() * 10)


def test_joining_node_receives_its_files_and_excess_copies_are_removed(local_cluster):
    cluster = local_cluster(6, start=False)
    cluster.start("01")
    for vm in ["02", "03", "04", "05"]:
        cluster.start(vm, wait=False)
    cluster.wait_converged(["01", "02", "03", "04", "05"], timeout=15)
    names = [f"g{i}" for i in range(15)]
    for name in names:
        cluster.query("02", "create", write(cluster, name, name.encode() * 100), name)
    cluster.start("06")
    ring = Ring(cluster.vms, 11)
    wait_until(lambda: all(cluster.holders(n) == sorted(ring.replicas(n, 3)) for n in names),
               REREPLICATION_BOUND, interval=0.2, what="placement after a join")


def test_racing_creates_of_one_name_exactly_one_wins(local_cluster):
    cluster = local_cluster(6)
    sources = {vm: write(cluster, f"race{vm}", f"from {vm}".encode()) for vm in cluster.vms}
    for attempt in range(3):
        name = f"race{attempt}"

        def create(vm):
            try:
                cluster.query(vm, "create", sources[vm], name)
                return vm
            except CommandFailed as exc:
                assert "already exists" in str(exc)
                return None
        with concurrent.futures.ThreadPoolExecutor(len(cluster.vms)) as pool:
            winners = [w for w in pool.map(create, cluster.vms) if w]
        assert len(winners) == 1
        cluster.query("03", "get", name, str(cluster.root / "winner"))
        assert (cluster.root / "winner").read_bytes() == f"from {winners[0]}".encode()


def test_errors_a_user_understands(local_cluster):
    cluster = local_cluster(4)
    local = write(cluster, "x", b"x")
    cluster.query("01", "create", local, "exists")
    non_holder = next(vm for vm in cluster.vms if vm not in Ring(cluster.vms, 11).replicas("exists", 3))
    cases = [
        (("create", local, "exists"), "already exists"),
        (("get", "missing", str(cluster.root / "o")), "no such file"),
        (("append", local, "missing"), "no such file"),
        (("create", str(cluster.root / "nope.txt"), "new"), "does not exist"),
        (("create", local, "../escape"), "'..'"),
        (("create", local, "/etc/passwd"), "absolute"),
        (("ls", "missing"), "no such file"),
        (("create", str(cluster.root), "new"), "is a directory"),
        (("get", "exists", str(cluster.root)), "is a directory"),
        (("get", "exists", str(cluster.root / "no-dir" / "o")), "local directory .* does not exist"),
        (("getfromreplica", non_holder, "exists", str(cluster.root / "o")),
         f"node {non_holder} holds no copy of exists"),
    ]
    for argv, reason in cases:
        with pytest.raises(CommandFailed, match=reason):
            cluster.query("02", *argv)
    result = cluster.ctl("02", "get", "missing", "out")
    assert result.returncode == 1 and "no such file" in result.stderr
    for argv in (("getfromreplica", "99", "exists", "out"), ("multiappend", "exists", "99=x")):
        result = cluster.ctl("02", *argv)             # not a node of this cluster: usage
        assert result.returncode == 2 and "node 99 is not in [nodes]" in result.stderr
    assert not (cluster.root / "data" / "escape").exists()


def test_corrupted_replica_is_detected_and_repaired(local_cluster):
    cluster = local_cluster(5)
    data = os.urandom(300_000)
    cluster.query("01", "create", write(cluster, "c", data), "c")
    victim = Ring(cluster.vms, 11).replicas("c", 3)[0]
    folder = cluster.root / "data" / f"vm{victim}" / "hydfs" / "f-c"
    base = next(p for p in folder.iterdir() if p.name.startswith("base."))
    raw = bytearray(base.read_bytes())
    raw[1000] ^= 0xFF
    base.write_bytes(bytes(raw))
    with pytest.raises(CommandFailed):
        cluster.query("02", "getfromreplica", victim, "c", str(cluster.root / "bad"))
    assert not (cluster.root / "bad").exists()      # the parts that went out: not kept
    assert "CORRUPT" in cluster.log(victim)
    cluster.query("02", "get", "c", str(cluster.root / "good"))    # fails over to a good copy
    assert (cluster.root / "good").read_bytes() == data

    def repaired():
        cluster.query("02", "getfromreplica", victim, "c", str(cluster.root / "fixed"))
        return (cluster.root / "fixed").read_bytes() == data
    wait_until(repaired, REREPLICATION_BOUND, interval=0.3, what="the corrupt copy to be repaired")


def test_a_primary_reads_its_own_copy_and_falls_over_when_it_is_corrupt(local_cluster):
    """A get on a file's primary reads that node's own copy (no round trip to itself): it
    reflects the node's own appends, revalidates its cache against its own copy, and a
    corrupt copy is set aside while the get is answered by another replica."""
    cluster = local_cluster(5, hydfs={"cache_mb": 8})
    data = os.urandom(300_000)
    cluster.query("01", "create", write(cluster, "own", data), "own")
    primary = Ring(cluster.vms, 11).replicas("own", 3)[0]
    out = cluster.root / "own.out"
    assert cluster.query(primary, "get", "own", str(out)) == \
        {"name": "own", "size": len(data), "replica": primary, "cached": False, "ok": True}
    cluster.query(primary, "append", write(cluster, "more", b"more"), "own")
    assert cluster.query(primary, "get", "own", str(out))["replica"] == primary
    assert out.read_bytes() == data + b"more"
    assert cluster.query(primary, "get", "own", str(out))["cached"] is True

    folder = cluster.root / "data" / f"vm{primary}" / "hydfs" / "f-own"
    base = next(p for p in folder.iterdir() if p.name.startswith("base."))
    raw = bytearray(base.read_bytes())
    raw[1000] ^= 0xFF
    base.write_bytes(bytes(raw))
    cluster.query(primary, "append", write(cluster, "x", b"x"), "own")   # drops the entry
    got = cluster.query(primary, "get", "own", str(out), timeout=30)
    assert got["replica"] != primary and out.read_bytes() == data + b"more" + b"x"
    assert "CORRUPT" in cluster.log(primary)


def test_get_reflects_own_appends_through_the_cache(local_cluster):
    cluster = local_cluster(4, hydfs={"cache_mb": 8})
    cluster.query("01", "create", write(cluster, "c0", b"0"), "cached")
    out = str(cluster.root / "out")
    assert cluster.query("02", "get", "cached", out)["cached"] is False
    assert cluster.query("02", "get", "cached", out)["cached"] is True
    cluster.query("02", "append", write(cluster, "c1", b"1"), "cached")
    cluster.query("02", "get", "cached", out)
    assert open(out, "rb").read() == b"01"


def test_writes_need_as_many_live_nodes_as_replicas(local_cluster):
    cluster = local_cluster(3)
    cluster.query("01", "create", write(cluster, "w", b"w"), "w")
    cluster.kill("03")
    cluster.wait_converged(["01", "02"], timeout=5)
    started = time.monotonic()
    with pytest.raises(CommandFailed, match="not enough live replicas .* only 2 nodes"):
        cluster.query("01", "append", write(cluster, "w2", b"more"), "w", timeout=30)
    assert time.monotonic() - started < 2.0     # no waiting: detection cannot add a node
    cluster.query("02", "get", "w", str(cluster.root / "w.out"))      # reads still work
    assert (cluster.root / "w.out").read_bytes() == b"w"


def test_read_my_writes_after_the_primary_restarts_with_an_old_copy(local_cluster):
    cluster = local_cluster(5)
    cluster.query("02", "create", write(cluster, "b", b"base\n"), "rmw")
    primary = Ring(cluster.vms, 11).replicas("rmw", 3)[0]
    client = next(vm for vm in cluster.vms if vm not in (primary, "01"))
    cluster.kill(primary)
    cluster.wait_converged([vm for vm in cluster.vms if vm != primary], timeout=5)
    cluster.query(client, "append", write(cluster, "x", b"appended\n"), "rmw", timeout=30)
    cluster.start(primary)                         # back with its old copy on disk
    cluster.query(client, "get", "rmw", str(cluster.root / "rmw.out"), timeout=30)
    assert (cluster.root / "rmw.out").read_bytes() == b"base\nappended\n"


def test_two_merges_coordinated_at_once_converge_without_losing_appends(local_cluster):
    cluster = local_cluster(5)
    cluster.query("01", "create", write(cluster, "empty", b""), "twice")
    owners = Ring(cluster.vms, 11).replicas("twice", 3)
    expected = set()
    for round_ in range(3):
        for vm in cluster.vms:
            record = f"{vm}-{round_}\n".encode()
            cluster.query(vm, "append", write(cluster, f"r{vm}", record), "twice")
            expected.add(record.decode().strip())

        def merge_via(vm):               # straight to a replica, as a failed-over client would
            with Connection.open(cluster.address(vm), None, 30) as conn:
                return conn.request({"t": "hydfs.merge", "name": "twice"})
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(merge_via, owners[:2]))
    cluster.query("01", "merge", "twice", timeout=60)
    contents = replica_contents(cluster, "twice", owners)
    assert len(set(contents.values())) == 1
    lines = next(iter(contents.values())).decode().split()
    assert sorted(lines) == sorted(expected)


def test_a_retried_create_is_not_mistaken_for_someone_elses(local_cluster):
    """A client whose create reply was lost retries with the same file id: that succeeds;
    another create of the name fails."""
    cluster = local_cluster(4)
    primary = Ring(cluster.vms, 11).replicas("retried", 3)[0]

    def create(file_id: str) -> dict:
        with Connection.open(cluster.address(primary), None, 30) as conn:
            conn.send_bulk_bytes({"t": "hydfs.create", "name": "retried", "file_id": file_id},
                                 b"content")
            return conn.recv()
    assert create("0001-me")["t"] == "ok"
    assert create("0001-me")["t"] == "ok"
    reply = create("0002-someone-else")
    assert reply["t"] == "error" and "already exists" in reply["error"]

    # A replica that holds the file answers a streamed copy at once, not after a timeout.
    replica = Ring(cluster.vms, 11).replicas("retried", 3)[1]
    for file_id, answer in (("0001-me", "ok"), ("0002-someone-else", "error")):
        with Connection.open(cluster.address(replica), None, 5) as conn:
            conn.send_bulk_bytes({"t": "hydfs.create_replica", "name": "retried",
                                  "file_id": file_id}, b"content")
            assert conn.recv()["t"] == answer


def test_a_replica_dying_mid_create_rolls_it_back_everywhere(local_cluster):
    """The coordinator streams a create to the other replicas while it arrives. A replica
    killed mid-stream fails that create, which leaves no copy anywhere; once the failure is
    detected, the create lands on the new ring: three identical copies."""
    cluster = local_cluster(6)
    name = "created-under-failure"
    primary, *others = Ring(cluster.vms, 11).replicas(name, 3)
    victim = next(vm for vm in others if vm != "01")
    data = os.urandom(8 << 20)
    receiving = cluster.root / "data" / f"vm{victim}" / "hydfs"
    with Connection.open(cluster.address(primary), None, 30) as conn:
        writer = conn.bulk_writer({"t": "hydfs.create", "name": name, "file_id": "1-me"},
                                  len(data))
        writer.write(data[:len(data) // 2])
        wait_until(lambda: any(p.name.startswith(".tmp-") for p in receiving.iterdir()), 10,
                   interval=0.01, what="the victim receiving the create")
        cluster.kill(victim)
        writer.write(data[len(data) // 2:])
        writer.close()
        reply = conn.recv()
    assert reply["t"] == "error" and "not enough live replicas" in reply["error"]
    assert cluster.holders(name) == []

    cluster.query("01", "create", write(cluster, "under-failure", data), name, timeout=60)
    expect = sorted(Ring([vm for vm in cluster.vms if vm != victim], 11).replicas(name, 3))
    assert cluster.holders(name) == expect
    assert set(replica_contents(cluster, name, expect).values()) == {data}


def test_a_read_skips_a_paused_replica_instead_of_waiting_for_it(local_cluster):
    """A SIGSTOPped primary still accepts connections (the kernel does) but never answers.
    While it is not yet declared failed, a get must not wait out the transfer timeout: it
    gives the replica FIRST_PATIENCE to start answering, then reads the next one."""
    cluster = local_cluster(5, membership=dict(FAST_MEMBERSHIP, suspicion_timeout=60.0))
    name = "paused-primary"
    data = os.urandom(300_000)
    cluster.query("01", "create", write(cluster, name, data), name)
    owners = Ring(cluster.vms, 11).replicas(name, 3)
    client = next(vm for vm in cluster.vms if vm not in owners)
    out = cluster.root / "from-paused"
    cluster.pause(owners[0])
    try:
        started = time.monotonic()
        doc = cluster.query(client, "get", name, str(out), timeout=30)
        elapsed = time.monotonic() - started
    finally:
        cluster.resume(owners[0])
    assert doc["replica"] == owners[1] and out.read_bytes() == data
    assert FIRST_PATIENCE <= elapsed < FIRST_PATIENCE + 3.0


def test_everything_works_the_same_with_a_secret(local_cluster):
    """With a secret every payload passes through the HMAC instead of sendfile/splice:
    create (streamed to the replicas), append, get, merge, re-replication."""
    cluster = local_cluster(5, secret="s3cret")
    name = "authenticated"
    data = os.urandom(3 << 20)
    cluster.query("01", "create", write(cluster, "auth", data), name)
    cluster.query("02", "append", write(cluster, "auth.a", b"appended"), name)
    cluster.query("03", "merge", name)
    owners = Ring(cluster.vms, 11).replicas(name, 3)
    expected = data + b"appended"
    assert set(replica_contents(cluster, name, owners).values()) == {expected}
    victim = next(vm for vm in owners if vm != "01")
    cluster.kill(victim)
    ring = Ring([vm for vm in cluster.vms if vm != victim], 11)
    wait_until(lambda: cluster.holders(name) == sorted(ring.replicas(name, 3)),
               REREPLICATION_BOUND, interval=0.2, what="a third copy again")
    assert set(replica_contents(cluster, name, ring.replicas(name, 3)).values()) == {expected}


def test_two_coordinators_appending_to_one_file_at_once_both_finish(local_cluster):
    """Two replicas each coordinate a large append to the same file, and each streams its
    append to the other while it arrives. Neither may hold its lock on the file while it
    waits for the other's bytes, or both wait forever (a review found exactly that)."""
    cluster = local_cluster(3)
    cluster.query("01", "create", write(cluster, "base", b"base\n"), "contended")
    a, b = Ring(cluster.vms, 11).replicas("contended", 3)[:2]
    payloads = {a: b"A" * (16 << 20), b: b"B" * (16 << 20)}
    conns = {vm: Connection.open(cluster.address(vm), None, 60) for vm in (a, b)}
    try:
        writers = {vm: conns[vm].bulk_writer(
            {"t": "hydfs.append", "name": "contended", "id": [f"client-{vm}", 1],
             "ts": time.time()}, len(payloads[vm])) for vm in (a, b)}
        half, started = 8 << 20, time.monotonic()
        for vm in (a, b):                        # both coordinators are mid-append...
            writers[vm].write(payloads[vm][:half])
        for vm in (a, b):                        # ...then both finish
            writers[vm].write(payloads[vm][half:])
            writers[vm].close()
        replies = {vm: conns[vm].recv() for vm in (a, b)}
    finally:
        for conn in conns.values():
            conn.close()
    assert all(r["t"] == "ok" for r in replies.values()), replies
    assert time.monotonic() - started < 20
    cluster.query("01", "merge", "contended", timeout=60)
    contents = set(replica_contents(cluster, "contended", cluster.vms).values())
    assert len(contents) == 1
    merged = contents.pop()
    assert merged.startswith(b"base\n") and len(merged) == 5 + (32 << 20)
    assert merged.count(b"A") == merged.count(b"B") == 16 << 20


def test_a_file_that_keeps_taking_appends_is_merged_by_its_primary_on_its_own(local_cluster):
    # A following job's source, DEST and task logs take appends for as long as it runs;
    # unmerged, every replica keeps a record in memory for each (see hydfs/merge.py).
    cluster = local_cluster(4, hydfs={"merge_after_appends": 5})
    cluster.query("01", "create", write(cluster, "h", b"head\n"), "grows")
    expected = b"head\n"
    for i in range(10):
        vm = "02" if i % 2 else "03"
        cluster.query(vm, "append", write(cluster, f"a{i}", line(vm, i)), "grows")
        expected += line(vm, i)
    owners = Ring(cluster.vms, 11).replicas("grows", 3)

    def merged_everywhere() -> bool:
        metas = [json.loads((cluster.root / "data" / f"vm{vm}" / "hydfs" / disk_name("grows") /
                             "meta.json").read_text()) for vm in owners]
        return all(meta["index_count"] == 10 for meta in metas)
    wait_until(merged_everywhere, 15, interval=0.3, what="the automatic merges")
    assert set(replica_contents(cluster, "grows", owners).values()) == {expected}
    cluster.query("04", "get", "grows", str(cluster.root / "grows.out"))
    assert (cluster.root / "grows.out").read_bytes() == expected
