"""Views, settled appends and watches: the primitives a stream source follows a file with.

A view (view.py) is the create's content and a set of appends in merge order: the same
bytes on every replica that holds them, merged or pending. Store-level tests first, then the
pure rules, then an in-process HyDFS of four services on real sockets (no node processes).
"""

from __future__ import annotations

import os
import threading
import time
from types import SimpleNamespace

import pytest

from cluster.config import Config
from cluster.errors import BAD_REQUEST, HandlerError
from cluster.local_cluster import free_ports
from cluster.rpc import RemoteError
from cluster.server import MessageServer
from hydfs import checked_read, read_rules
from hydfs import messages as m
from hydfs.checked_read import BLOCK, as_bytes
from hydfs.client import HydfsClient, HydfsError
from hydfs.coordinator import Coordinator
from hydfs.fences import Fence, Fences, writer_client
from hydfs.idset import IdSet, held_by_at_least
from hydfs.pending_log import Record
from hydfs.ring import Ring
from hydfs.service import HydfsService
from hydfs.store import CorruptReplica, LacksAppends, ReplicaStore
from hydfs.view import Part, plan

pytestmark = pytest.mark.timeout(30)

HEAD = b"HEAD|"
A1, B1, A2, X1 = ("a", 1, 1.0, b"a1|"), ("b", 1, 3.0, b"b1|"), ("a", 2, 5.0, b"a2|"), \
    ("x", 1, 2.0, b"x1|")          # x1 sorts between a1 and b1


def ids(*appends) -> IdSet:
    return IdSet.of((client, seq) for client, seq, _, _ in appends)


def store_with(path, appends, merges=()) -> ReplicaStore:
    """A store holding file "f" (HEAD), `appends` in arrival order, and a merge of each
    set in `merges` after they arrived."""
    store = ReplicaStore(str(path))
    store.create("f", "id1", [HEAD], len(HEAD))
    for client, seq, ts, data in appends:
        store.append("f", client, seq, ts, data)
    for gen, target in enumerate(merges, 1):
        assert store.apply_merge("f", gen, f"m{gen}", target) == []
    return store


def view_of(store: ReplicaStore, wanted: IdSet, create: bool = True, offset: int = 0,
            length: int | None = None) -> tuple[int, bytes]:
    snap = store.snapshot("f")
    try:
        v = store.view(snap, wanted, create)
        start, count = m.byte_range({"offset": offset,
                                     "length": v.size if length is None else length}, v.size)
        return v.size, b"".join(as_bytes(s) for s in store.view_spans(snap, v, start, count))
    finally:
        snap.close()


def content(store: ReplicaStore) -> bytes:
    snap = store.snapshot("f")
    try:
        return b"".join(store.read_chunks(snap))
    finally:
        snap.close()


# -- views in the store -------------------------------------------------------------------------


def test_a_view_is_the_same_bytes_on_pending_merged_and_rebuilt_replicas(tmp_path):
    everything = ids(A1, B1, A2, X1)
    pending = store_with(tmp_path / "p", [A2, X1, B1, A1])                  # arrival order
    merged = store_with(tmp_path / "m", [A1, B1, A2, X1], [everything])
    half = store_with(tmp_path / "h", [A1, B1, A2, X1], [ids(A1, B1)])     # some of each
    rebuilt = store_with(tmp_path / "r", [A1, B1, A2], [ids(A1, B1, A2)])
    in_place_base = rebuilt.state("f").base_file
    rebuilt.append("f", *X1)                       # sorts before merged appends: a rebuild
    assert rebuilt.apply_merge("f", 2, "m2", everything) == []
    assert rebuilt.state("f").base_file != in_place_base
    assert content(rebuilt) == b"HEAD|a1|x1|b1|a2|" == content(merged)
    assert content(pending) == b"HEAD|a2|x1|b1|a1|"                      # unlike its view
    replicas = [pending, merged, half, rebuilt]
    for wanted, create, expected in [
            (ids(A1, B1, A2), True, b"HEAD|a1|b1|a2|"),     # the rebuilt base skips x1
            (everything, True, b"HEAD|a1|x1|b1|a2|"),
            (ids(B1, X1), False, b"x1|b1|"),
            (IdSet(), True, HEAD), (IdSet(), False, b"")]:
        for store in replicas:
            assert view_of(store, wanted, create) == (len(expected), expected)
    before = view_of(pending, everything)
    assert pending.apply_merge("f", 1, "m1", everything) == []
    assert view_of(pending, everything) == before            # a merge moves no view byte


def test_a_view_read_from_a_snapshot_is_unchanged_by_a_merge_after_it(tmp_path):
    store = store_with(tmp_path, [A1, B1, A2], [ids(A1, A2)])
    store.append("f", *X1)
    snap = store.snapshot("f")
    try:
        v = store.view(snap, ids(A1, B1, A2, X1), True)
        assert store.apply_merge("f", 2, "m2", ids(A1, B1, A2, X1)) == []   # a rebuild
        got = b"".join(as_bytes(s) for s in store.view_spans(snap, v, 0, v.size))
    finally:
        snap.close()
    assert got == b"HEAD|a1|x1|b1|a2|"


def test_a_view_of_appends_a_replica_lacks_says_which(tmp_path):
    store = store_with(tmp_path, [A1, B1], [ids(A1)])
    with pytest.raises(LacksAppends) as lacks:
        view_of(store, ids(A1, B1, A2, X1))
    assert (lacks.value.count, lacks.value.examples) == (2, [["a", 2], ["x", 1]])
    with pytest.raises(LacksAppends) as huge:             # costs what is held, not 10 ** 12
        view_of(store, IdSet({"a": [[1, 10 ** 12]]}))
    assert (huge.value.count, huge.value.examples) == (10 ** 12 - 1, [["a", 2], ["a", 3],
                                                                      ["a", 4]])


def test_view_ranges_are_clipped_to_the_view(tmp_path):
    store = store_with(tmp_path, [A1, B1, A2], [ids(A1, A2)])       # b1 pending, between
    full = b"HEAD|a1|b1|a2|"
    for offset in range(len(full) + 3):
        for length in (0, 1, 3, 4, 100):
            assert view_of(store, ids(A1, B1, A2), True, offset, length) == \
                (len(full), full[offset:offset + length])


def test_views_across_block_edges_read_only_the_parts_they_need(tmp_path):
    big = [("c", i, float(i), os.urandom(BLOCK // 2 + 1000 * i)) for i in range(1, 6)]
    store = store_with(tmp_path, big, [ids(*big[:4])])            # the last one pending
    chosen = [big[0], big[2], big[4]]
    full = HEAD + b"".join(a[3] for a in chosen)
    size, got = view_of(store, ids(*chosen))
    assert (size, got) == (len(full), full)
    start = len(HEAD) + len(big[0][3]) - 10
    assert view_of(store, ids(*chosen), True, start, BLOCK) == \
        (len(full), full[start:start + BLOCK])


def test_a_view_of_thousands_of_merged_appends_reads_each_block_once(tmp_path, monkeypatch):
    store = ReplicaStore(str(tmp_path))
    store.create("f", "id1", [HEAD], len(HEAD))
    n = 5000
    store.add_records("f", [({"id": ["c", i], "ts": float(i), "size": 8}, [b"%07d|" % i])
                            for i in range(1, n + 1)])
    assert store.apply_merge("f", 1, "m1", IdSet({"c": [[1, n]]})) == []
    reads = []
    real_read = checked_read._read
    monkeypatch.setattr(checked_read, "_read", lambda *a: reads.append(a) or real_read(*a))
    odd = IdSet.of(("c", i) for i in range(1, n + 1, 2))
    started = time.monotonic()
    size, got = view_of(store, odd, create=False)
    assert got == b"".join(b"%07d|" % i for i in range(1, n + 1, 2)) and size == len(got)
    assert len(reads) == 1 and time.monotonic() - started < 5    # ~40 KB: one block
    snap = store.snapshot("f")
    try:
        assert store.view(snap, IdSet({"c": [[1, n]]}), True).parts == \
            [Part(None, 0, len(HEAD) + 8 * n)]              # a prefix of the base: one part
    finally:
        snap.close()


def corrupt(path: str, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_corrupt_merged_append_in_a_view_is_detected(tmp_path):
    store = store_with(tmp_path, [A1, B1, A2], [ids(A1, B1, A2)])
    st = store.state("f")
    corrupt(os.path.join(store._dir("f"), st.base_file), len(HEAD) + 4)      # inside b1
    with pytest.raises(CorruptReplica):
        view_of(store, ids(A1, B1))


def test_a_corrupt_pending_append_in_a_view_is_detected(tmp_path):
    store = store_with(tmp_path, [A1, B1], [ids(A1)])
    st = store.state("f")
    corrupt(os.path.join(store._dir("f"), st.pending_file), st.pending[0].offset + 1)
    assert view_of(store, ids(A1)) == (8, b"HEAD|a1|")           # b1 is not read
    with pytest.raises(CorruptReplica):
        view_of(store, ids(A1, B1))


# -- the pure rules -----------------------------------------------------------------------------


def rec(client, seq, ts, size) -> Record:
    return Record(client, seq, ts, size, 0, 0)


def test_the_view_plan_sorts_by_merge_order_and_joins_base_neighbours():
    index = [["a", 1, 1.0, 5, 3], ["a", 2, 2.0, 8, 3], ["b", 1, 4.0, 11, 3]]
    pending = [rec("c", 1, 5.0, 2), rec("c", 2, 3.0, 7), rec("d", 1, 0.5, 1)]
    everything = IdSet.of([("a", 1), ("a", 2), ("b", 1), ("c", 1), ("c", 2), ("d", 1)])
    v = plan(index, pending, everything, True, 5)
    assert v.parts == [Part(None, 0, 5), Part(2, 0, 1), Part(None, 5, 6), Part(1, 0, 7),
                       Part(None, 11, 3), Part(0, 0, 2)]   # the create first, whatever the ts
    assert v.size == 5 + 1 + 6 + 7 + 3 + 2
    assert plan(index, [], IdSet.of([("a", 1), ("a", 2)]), True, 5).parts == \
        [Part(None, 0, 11)]                                 # the create and a1, a2: one part
    skip = plan(index, pending, IdSet.of([("a", 1), ("b", 1)]), False, 5)
    assert skip.parts == [Part(None, 5, 3), Part(None, 11, 3)]
    assert plan([], [], IdSet(), True, 0).parts == []
    with pytest.raises(LacksAppends):
        plan(index, pending, IdSet.of([("a", 1), ("z", 9)]), True, 5)


def summary(held: IdSet, fences: Fences | None = None) -> dict:
    doc = {"name": "f", "file_id": "F", "gen": 0, "merge_id": "create",
           "merged": IdSet().to_wire(), "pending": held.to_wire(), "size": 0}
    if fences:
        doc["fences"] = fences.to_wire()
    return doc


def s(*pairs) -> IdSet:
    return IdSet.of(pairs)


OLD = writer_client("task", 1)
FENCED = Fences({"task": Fence(2, s((OLD, 1)))})   # epoch 1's seq 2 was sealed out


@pytest.mark.parametrize("copies, settled", [
    ([s(("a", 1), ("a", 2), ("b", 1)), s(("a", 1), ("a", 2)), s(("a", 1))], s(("a", 1), ("a", 2))),
    ([s(("a", 1), ("a", 2)), s(("a", 2), ("a", 3))], s(("a", 2))),
    ([s(("a", 1), ("a", 2))], s()),                  # one copy answered: it may be lost
    ([s(("a", 1)), s(("b", 1)), s(("c", 1))], s()),           # each on one replica only
    ([s((OLD, 1), (OLD, 2)), s((OLD, 1), (OLD, 2)), s()], s((OLD, 1), (OLD, 2))),
])
def test_settled_ids_are_those_on_at_least_two_copies(copies, settled):
    assert read_rules.settled_ids([summary(c) for c in copies]) == settled


def test_a_file_with_one_replica_settles_on_it():
    assert read_rules.settled_ids([summary(s(("a", 1)))], replicas=1) == s(("a", 1))


def test_settled_ids_leave_out_appends_the_strongest_fence_refuses():
    held = s((OLD, 1), (OLD, 2), ("a", 1))
    copies = [summary(held), summary(held), summary(s(("a", 1)), FENCED)]
    assert read_rules.settled_ids(copies) == s((OLD, 1), ("a", 1))


def test_held_by_at_least_counts_ranges_not_ids():
    a, b, c = IdSet({"x": [[1, 10], [20, 30]]}), IdSet({"x": [[5, 25]]}), IdSet({"x": [[11, 11]]})
    assert held_by_at_least([a, b, c], 2) == IdSet({"x": [[5, 11], [20, 25]]})
    assert held_by_at_least([a, b, c], 3) == IdSet()
    assert held_by_at_least([a, b], 1) == IdSet({"x": [[1, 30]]})
    big = [IdSet({"c": [[1, 10 ** 9]]})] * 3
    assert held_by_at_least(big, 2) == big[0]                       # fast: two ranges
    assert held_by_at_least([], 2) == IdSet()


@pytest.mark.parametrize("codes, code", [
    (["missing", "no_such_file", "unreachable"], "missing"),
    (["no_such_file", "unreachable"], "unreachable"),
    (["slow", "no_such_file"], "slow"),
    (["no_such_file", "no_such_file"], "no_such_file"),
])
def test_a_view_read_fails_with_the_most_telling_code(codes, code):
    assert all(read_rules.view_tries_next(c) for c in codes)
    assert read_rules.view_failure(codes) == code
    assert not read_rules.view_tries_next("bad_request")


@pytest.mark.parametrize("value, expected", [(0, 0.0), (2.5, 2.5), (30, 30.0), (1e9, 30.0)])
def test_a_watch_waits_at_most_thirty_seconds(value, expected):
    assert m.watch_timeout({"timeout": value}) == expected


@pytest.mark.parametrize("value", [-1, "5", None, True, float("nan"), float("inf")])
def test_a_bad_watch_timeout_is_refused(value):
    with pytest.raises(HandlerError) as refused:
        m.watch_timeout({"timeout": value})
    assert refused.value.code == BAD_REQUEST


# -- watching the store -------------------------------------------------------------------------


def later(delay: float, fn, *args) -> threading.Thread:
    def run():
        time.sleep(delay)
        fn(*args)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("how", ["append", "records", "install"])
def test_a_watch_returns_as_soon_as_a_new_append_lands(tmp_path, how):
    store = store_with(tmp_path / "s", [A1])
    peer = store_with(tmp_path / "peer", [A1, B1], [ids(A1, B1)])
    st, base = peer.state("f"), content(peer)

    def land():
        if how == "append":
            store.append("f", *B1)
        elif how == "records":
            store.add_records("f", [({"id": ["b", 1], "ts": 3.0, "size": 3}, [b"b1|"])])
        else:
            index = st.index.view(peer._dir("f"))
            store.install("f", st.summary(), [base, *index.chunks()], len(base), [],
                          st.create_size, index.header())
    started = time.monotonic()
    thread = later(0.3, land)
    got = store.wait_for_new("f", ids(A1), 10)
    elapsed = time.monotonic() - started
    thread.join()
    assert 0.25 < elapsed < 3
    assert ("b", 1) in IdSet(got["merged"]).union(IdSet(got["pending"]))


def test_a_watch_with_nothing_new_returns_at_its_timeout_and_holds_no_lock(tmp_path):
    store = store_with(tmp_path, [A1, B1])
    done = []
    started = time.monotonic()
    thread = threading.Thread(target=lambda: done.append(
        store.wait_for_new("f", ids(A1, B1), 0.6)), daemon=True)
    thread.start()
    time.sleep(0.1)
    assert store.lock("f").acquire(timeout=1)         # the waiting watch holds no file lock
    store.lock("f").release()
    assert store.apply_merge("f", 1, "m1", ids(A1, B1)) == []   # nothing new: waits on
    thread.join(5)
    assert 0.55 < time.monotonic() - started < 3
    assert done[0]["merged"] == ids(A1, B1).to_wire()


def test_a_watch_answers_at_once_when_something_is_new_or_there_is_no_copy(tmp_path):
    store = store_with(tmp_path, [A1, B1])
    started = time.monotonic()
    assert store.wait_for_new("f", ids(A1), 10)["pending"] == ids(A1, B1).to_wire()
    assert store.wait_for_new("nothing", IdSet(), 10) is None
    later(0.2, store.remove, "f")
    assert store.wait_for_new("f", ids(A1, B1), 10) is None        # removed meanwhile
    assert time.monotonic() - started < 3


# -- an in-process HyDFS: four services on real sockets, no node processes ----------------------


class Members:
    """The membership a HydfsService asks: a fixed set of live nodes."""

    def __init__(self, vms, me):
        self.vms, self._me = vms, me

    def members(self):
        return [SimpleNamespace(vm=vm) for vm in self.vms]

    def me(self):
        return SimpleNamespace(id=f"client-{self._me}")

    def is_joined(self):
        return True


@pytest.fixture
def hydfs(tmp_path):
    vms = ["01", "02", "03", "04"]
    config = Config(data_dir=str(tmp_path), nodes={vm: f"127.0.0.1:{port}"
                                                   for vm, port in zip(vms, free_ports(4))})
    nodes, servers = {}, []
    for vm in vms:
        service = HydfsService(config, vm, Members(vms, vm))
        server = MessageServer(*config.address(vm), None)
        server.add_routes(service.routes())
        server.add_routes(Coordinator(service).routes())
        server.start()
        servers.append(server)
        nodes[vm] = SimpleNamespace(service=service, store=service.store,
                                    client=HydfsClient(service, 0, 5))
    yield nodes
    for server, node in zip(servers, nodes.values()):
        server.stop()
        node.service.stop()


def roles(nodes, name: str):
    """The file's owners in read order, and a node that is not one."""
    owners = Ring(list(nodes), 11).replicas(name, 3)
    return owners, next(vm for vm in nodes if vm not in owners)


def read_all(client, name, wanted, create=True, offset=0, length=1 << 30):
    size, chunks = client.read_view(name, wanted, create, offset, length)
    return size, b"".join(chunks)


def raw_view(node, vm, name, wanted, create=True, offset=0, length=1 << 30) -> bytes:
    conn, reply = node.client._request_read(vm, {"t": m.READ_VIEW, "name": name,
                                                 "ids": wanted.to_wire(), "create": create,
                                                 "offset": offset, "length": length}, 5)
    with conn:
        assert reply["replica"] == vm
        return b"".join(conn.recv_bulk_chunks(reply["bulk"]))


def test_settled_holds_acknowledged_appends_and_every_replica_serves_one_view(hydfs):
    owners, other = roles(hydfs, "log")
    writer, second = hydfs[owners[0]].client, hydfs[other].client
    writer.create_bytes("log", b"HEAD|")
    acked = [writer.append_bytes("log", b"w1|"), second.append_bytes("log", b"o1|"),
             writer.append_bytes("log", b"w2|")]
    settled = second.settled("log")
    assert len(settled) == len(acked) == 3
    expected = b"HEAD|w1|o1|w2|"
    for vm in owners:
        assert raw_view(hydfs[other], vm, "log", settled) == expected
        assert read_all(hydfs[vm].client, "log", settled) == (len(expected), expected)  # local
    assert read_all(second, "log", settled, False, 3, 5) == (9, b"o1|w2")            # remote
    writer.merge("log")
    assert {raw_view(hydfs[other], vm, "log", settled) for vm in owners} == {expected}


def test_a_view_read_passes_over_replicas_that_lack_its_appends(hydfs):
    owners, other = roles(hydfs, "f")
    client = hydfs[other].client
    client.create_bytes("f", b"H|")
    client.append_bytes("f", b"1|")
    hydfs[owners[-1]].store.append("f", "lone", 1, time.time(), b"lone|")  # on one replica
    settled = client.settled("f")
    assert ("lone", 1) not in settled and len(settled) == 1
    wider = settled.union(IdSet.of([("lone", 1)]))
    assert read_all(client, "f", wider) == (9, b"H|1|lone|")
    with pytest.raises(HydfsError) as lacking:
        client.read_view("f", wider.union(IdSet.of([("ghost", 1)])), True, 0, 10)
    assert lacking.value.code == m.MISSING
    with pytest.raises(HydfsError) as nothing:
        client.read_view("nofile", IdSet(), True, 0, 10)
    assert nothing.value.code == m.NO_SUCH_FILE
    with pytest.raises(HydfsError) as none_settled:
        client.settled("nofile")
    assert none_settled.value.code == m.NO_SUCH_FILE


def test_a_replica_refuses_a_bad_view_request_and_clips_a_range(hydfs):
    owners, other = roles(hydfs, "f")
    node = hydfs[other]
    node.client.create_bytes("f", b"0123456789")
    assert raw_view(node, owners[0], "f", IdSet(), True, 4, 100) == b"456789"
    assert raw_view(node, owners[0], "f", IdSet(), True, 50, 5) == b""
    for bad in [{"ids": [1]}, {"ids": {"c": [[2, 1]]}}, {"create": 1}, {"offset": -1}]:
        request = dict({"t": m.READ_VIEW, "name": "f", "ids": {}, "create": True,
                        "offset": 0, "length": 1}, **bad)
        with pytest.raises(RemoteError) as refused:
            node.client._request_read(owners[0], request, 5)
        assert refused.value.code == BAD_REQUEST
    with pytest.raises(RemoteError) as missing:
        node.client._request_read(owners[0], {"t": m.READ_VIEW, "name": "f",
                                              "ids": {"c": [[1, 1]]}, "create": True,
                                              "offset": 0, "length": 1}, 5)
    assert missing.value.code == m.MISSING
    with pytest.raises(RemoteError) as no_copy:
        node.client._request_read(other, {"t": m.READ_VIEW, "name": "f", "ids": {},
                                          "create": True, "offset": 0, "length": 1}, 5)
    assert no_copy.value.code == m.NO_SUCH_FILE


def test_a_corrupt_replica_fails_a_view_read_once_bytes_went_out_and_is_set_aside(hydfs):
    owners, other = roles(hydfs, "f")
    client = hydfs[other].client
    client.create_bytes("f", os.urandom(3 * BLOCK))
    store = hydfs[owners[0]].store
    corrupt(os.path.join(store._dir("f"), store.state("f").base_file), 2 * BLOCK + 5)
    size, chunks = client.read_view("f", IdSet(), True, 0, 3 * BLOCK)
    assert size == 3 * BLOCK
    with pytest.raises(HydfsError) as broken:
        b"".join(chunks)
    assert broken.value.code == "unreachable"
    assert store.get_state("f") is None                                 # quarantined
    assert read_all(client, "f", IdSet())[0] == 3 * BLOCK               # the next replica


def test_a_client_watch_returns_what_is_held_when_an_append_lands_and_none_at_its_timeout(hydfs):
    owners, other = roles(hydfs, "f")
    client = hydfs[other].client
    client.create_bytes("f", b"H|")
    client.append_bytes("f", b"1|")
    known = client.settled("f")
    started = time.monotonic()
    assert client.watch("f", known, 0.5) is None
    assert 0.45 < time.monotonic() - started < 3
    thread = later(0.3, hydfs[owners[1]].client.append_bytes, "f", b"2|")
    started = time.monotonic()
    news = client.watch("f", known, 10)
    assert news is not None and len(news) == 2
    assert 0.25 < time.monotonic() - started < 3          # it waited for the append
    thread.join()
    assert len(client.settled("f")) == 2
    started = time.monotonic()
    assert client.watch("nofile", IdSet(), 10) is None                 # no copy anywhere
    assert time.monotonic() - started < 2


@pytest.mark.timeout(30)
def test_a_merged_views_plan_is_kept_until_the_base_changes(tmp_path, monkeypatch):
    """A source reads its partition piece by piece: the plan of its view (O(n log n) in
    the file's appends) is made once, and again only once a merge changed the base."""
    from hydfs import store as store_module
    st = ReplicaStore(str(tmp_path))
    st.create("f", "c@1", iter([b"H\n"]), 2)
    for seq in (1, 2):
        st.append("f", "a", seq, float(seq), b"%d\n" % seq)
    st.apply_merge("f", 1, "m1", IdSet.of([("a", 1), ("a", 2)]))
    plans = []
    real = store_module.plan_view
    monkeypatch.setattr(store_module, "plan_view", lambda *a: plans.append(1) or real(*a))
    ids = IdSet.of([("a", 1), ("a", 2)])
    for _ in range(3):
        snap = st.snapshot("f")
        assert st.view(snap, ids, True).size == 6
        snap.close()
    assert len(plans) == 1
    st.append("f", "a", 3, 3.0, b"3\n")                 # pending: the base is the same
    snap = st.snapshot("f")
    assert st.view(snap, ids, True).size == 6 and len(plans) == 1
    assert st.view(snap, IdSet.of([("a", 3)]), False).size == 2     # pending: not kept
    snap.close()
    st.apply_merge("f", 2, "m2", IdSet.of([("a", 3)]))
    snap = st.snapshot("f")
    assert st.view(snap, ids, True).size == 6 and len(plans) == 4
    snap.close()


def test_a_rejoined_replica_serves_no_get_until_a_round_has_checked_its_copy(hydfs, tmp_path):
    """Regression (`make test`, two workers killed mid-job): a node restarted with its old
    copy of DEST became the primary again and answered the next get with the rows it held
    at its kill. Now the copies a node holds when it joins answer gets only once an
    anti-entropy round has compared them with every other replica (and pulled what they
    lacked); meanwhile the others answer."""
    owners, other = roles(hydfs, "dest")
    primary = hydfs[owners[0]]
    hydfs[other].client.create_bytes("dest", b"rows|")
    for vm in owners[1:]:              # appended while the primary was away
        assert hydfs[vm].store.append("dest", "w", 1, time.time(), b"more|")
    primary.service.on_membership([SimpleNamespace(kind="joined")])

    out = tmp_path / "got"
    for vm in (other, owners[0]):      # a client elsewhere, and the primary itself
        got = hydfs[vm].client.get("dest", str(out))
        assert got["replica"] != owners[0] and out.read_bytes() == b"rows|more|"
    assert b"".join(hydfs[owners[0]].client.read_range("dest", 0, 100)) == b"rows|more|"

    primary.service.resync()           # every member answered: pulled, then checked
    got = hydfs[other].client.get("dest", str(out))
    assert got["replica"] == owners[0] and out.read_bytes() == b"rows|more|"
