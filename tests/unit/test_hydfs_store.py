"""The replica store: crash safety, checksums, merges, installs."""

from __future__ import annotations

import os
import threading
import zlib

import pytest

from hydfs.idset import IdSet
from hydfs.checked_read import WINDOW
from hydfs.store import CorruptReplica, FileExists, LostCreateRace, ReplicaStore

pytestmark = pytest.mark.timeout(30)


def content(store: ReplicaStore, name: str) -> bytes:
    snap = store.snapshot(name)
    try:
        return b"".join(store.read_chunks(snap))
    finally:
        snap.close()


def entries(store: ReplicaStore, name: str) -> list:
    """The merged appends' index entries of our copy of `name`."""
    snap = store.snapshot(name)
    try:
        return list(snap.index)
    finally:
        snap.close()


def folder(store: ReplicaStore, name: str) -> str:
    return store._dir(name)


def test_create_append_read_and_dedup(tmp_path):
    store = ReplicaStore(str(tmp_path))
    store.create("f", "id1", [b"hello ", b"world"], 11)
    with pytest.raises(FileExists):
        store.create("f", "id2", [b"x"], 1)
    assert store.append("f", "c1", 1, 1.0, b"+a")
    assert not store.append("f", "c1", 1, 1.0, b"+a")        # a retry: stored once
    assert store.append("f", "c2", 1, 0.5, b"+b")
    assert content(store, "f") == b"hello world+a+b"          # arrival order before a merge


def test_state_survives_a_restart(tmp_path):
    store = ReplicaStore(str(tmp_path))
    store.create("dir/f", "id1", [b"base"], 4)
    store.append("dir/f", "c", 1, 1.0, b"1")
    again = ReplicaStore(str(tmp_path))
    assert again.names() == ["dir/f"] and content(again, "dir/f") == b"base1"
    assert again.state("dir/f").holds(("c", 1))


def test_torn_last_append_is_cut_off_on_load(tmp_path):
    store = ReplicaStore(str(tmp_path))
    store.create("f", "id1", [b"base"], 4)
    store.append("f", "c", 1, 1.0, b"one")
    st = store.state("f")
    with open(os.path.join(folder(store, "f"), st.pending_file), "ab") as log:
        log.write(b'{"id":["c",2],"ts":2.0,"size":100,"crc":0}\nonly-part')   # crash mid-append
    again = ReplicaStore(str(tmp_path))
    assert content(again, "f") == b"baseone"
    again.append("f", "c", 2, 2.0, b"two")
    assert content(ReplicaStore(str(tmp_path)), "f") == b"baseonetwo"


def test_uncommitted_install_leaves_no_file(tmp_path):
    store = ReplicaStore(str(tmp_path))

    def failing_chunks():
        yield b"partial"
        raise OSError("connection lost")
    with pytest.raises(OSError):
        store.create("f", "id1", failing_chunks(), 100)
    assert store.names() == [] and ReplicaStore(str(tmp_path)).names() == []
    assert not [e for e in os.listdir(tmp_path) if e.startswith(".tmp")]


def test_corrupted_base_is_detected_on_read(tmp_path):
    store = ReplicaStore(str(tmp_path))
    data = os.urandom(3 * 1024 * 1024 + 5)
    store.create("f", "id1", [data], len(data))
    st = store.state("f")
    path = os.path.join(folder(store, "f"), st.base_file)
    with open(path, "r+b") as f:
        f.seek(2 * 1024 * 1024 + 7)
        f.write(b"\xff" if data[2 * 1024 * 1024 + 7] != 0xFF else b"\x00")
    with pytest.raises(CorruptReplica):
        content(store, "f")


def test_corrupted_append_is_detected(tmp_path):
    store = ReplicaStore(str(tmp_path))
    store.create("f", "id1", [b"base"], 4)
    store.append("f", "c", 1, 1.0, b"abcdef")
    st = store.state("f")
    with open(os.path.join(folder(store, "f"), st.pending_file), "r+b") as f:
        f.seek(st.pending[0].offset + 2)
        f.write(b"X")
    with pytest.raises(CorruptReplica):
        content(store, "f")


def test_merge_sorts_by_timestamp_and_reports_what_is_missing(tmp_path):
    store = ReplicaStore(str(tmp_path))
    store.create("f", "id1", [b"B"], 1)
    store.append("f", "c1", 1, 2.0, b"1")
    store.append("f", "c2", 1, 1.0, b"2")
    want = IdSet.of([("c1", 1), ("c2", 1)])
    assert store.apply_merge("f", 1, "m1", want.union(IdSet.of([("c3", 1)]))) == [["c3", 1]]
    assert content(store, "f") == b"B12"                     # unchanged
    assert store.apply_merge("f", 1, "m1", want) == []
    assert content(store, "f") == b"B21"                     # c2 was stamped first
    st = store.state("f")
    assert st.gen == 1 and st.pending == [] and st.merged == want
    assert not store.append("f", "c1", 1, 2.0, b"1")          # merged ids still deduplicate
    assert store.apply_merge("f", 2, "m2", want) == []        # nothing new: no change
    assert content(ReplicaStore(str(tmp_path)), "f") == b"B21"


def test_replicas_converge_whatever_their_arrival_orders_and_merge_histories(tmp_path):
    appends = [("a", 1, 1.0, b"a1."), ("b", 1, 2.0, b"b1."), ("c", 1, 3.0, b"c1."),
               ("a", 2, 4.0, b"a2.")]
    histories = [                                  # (arrival order, merges along the way)
        ([0, 1, 2, 3], [[0, 1], [0, 1, 2, 3]]),
        ([2, 1, 3, 0], [[1, 2], [0, 1, 2, 3]]),    # its first base misses a1: rebuilt later
        ([3, 2, 1, 0], [[0, 1, 2, 3]]),
        ([1, 0, 3, 2], []),
    ]
    results = []
    for n, (arrival, merges) in enumerate(histories):
        store = ReplicaStore(str(tmp_path / str(n)))
        store.create("f", "id", [b"BASE:"], 5)
        for step, i in enumerate(arrival):
            store.append("f", *appends[i][:3], appends[i][3])
            for k, ids in enumerate(merges):
                if set(ids) <= set(arrival[:step + 1]) and len(ids) == step + 1:
                    target = IdSet.of((appends[j][0], appends[j][1]) for j in ids)
                    assert store.apply_merge("f", k + 1, f"m{n}{k}", target) == []
        everything = IdSet.of((a[0], a[1]) for a in appends)
        assert store.apply_merge("f", 9, "final", everything) == []
        results.append(content(ReplicaStore(str(tmp_path / str(n))), "f"))
    assert results == [b"BASE:a1.b1.c1.a2."] * len(histories)


def test_merged_appends_travel_as_records_via_the_base_index(tmp_path):
    src = ReplicaStore(str(tmp_path / "src"))
    src.create("f", "id", [b"B"], 1)
    src.append("f", "x", 1, 1.0, b"one")
    src.append("f", "x", 2, 2.0, b"two")
    src.apply_merge("f", 1, "m", IdSet.of([("x", 1), ("x", 2)]))
    snap = src.snapshot("f")
    records = src.snapshot_records(snap, IdSet.of([("x", 1)]), merged_too=True)
    got = [(h["id"], b"".join(chunks)) for h, chunks in records]
    snap.close()
    assert got == [(["x", 2], b"two")]


def test_crashed_merge_leftovers_past_the_committed_size_are_cut(tmp_path):
    store = ReplicaStore(str(tmp_path))
    store.create("f", "id1", [b"base"], 4)
    st = store.state("f")
    with open(os.path.join(folder(store, "f"), st.base_file), "ab") as f:
        f.write(b"garbage from a merge that never committed")
    assert content(ReplicaStore(str(tmp_path)), "f") == b"base"


def test_install_replaces_the_base_but_keeps_our_unmerged_appends(tmp_path):
    src = ReplicaStore(str(tmp_path / "a"))
    dst = ReplicaStore(str(tmp_path / "b"))
    src.create("f", "id1", [b"B"], 1)
    dst.create("f", "id1", [b"B"], 1)
    src.append("f", "c1", 1, 1.0, b"1")
    dst.append("f", "c2", 1, 2.0, b"2")
    src.apply_merge("f", 1, "m1", IdSet.of([("c1", 1)]))
    st = src.state("f")
    index = st.index.view(folder(src, "f"))
    dst.install("f", st.summary(), [b"B1", *index.chunks()], 2, [], st.create_size,
                index.header())
    assert content(dst, "f") == b"B12" and dst.state("f").holds(("c2", 1))


def test_large_file_streams_in_bounded_chunks(tmp_path):
    store = ReplicaStore(str(tmp_path))
    store.create("big", "id", (bytes([i]) * (1 << 20) for i in range(10)), 10 << 20)
    snap = store.snapshot("big")
    chunks = list(store.read_chunks(snap))
    snap.close()
    assert max(len(c) for c in chunks) <= WINDOW and sum(map(len, chunks)) == 10 << 20
    assert b"".join(chunks) == b"".join(bytes([i]) * (1 << 20) for i in range(10))


def test_byte_ranges_read_only_what_they_need_across_base_and_appends(tmp_path):
    store = ReplicaStore(str(tmp_path))
    base = bytes(range(256)) * 9000                   # > 2 blocks
    store.create("r", "id", [base], len(base))
    store.append("r", "c", 1, 1.0, b"APPEND-ONE")
    store.append("r", "c", 2, 2.0, b"APPEND-TWO")
    whole = base + b"APPEND-ONEAPPEND-TWO"
    for start, length in [(0, 10), (1048570, 20), (len(base) - 3, 8), (len(whole) - 5, 100),
                          (2 * 1048576 + 1, 5), (0, len(whole))]:
        snap = store.snapshot("r")
        got = b"".join(store.read_range(snap, start, length))
        snap.close()
        assert got == whole[start:start + length]


def test_a_failed_append_write_is_cut_back_and_not_doubled(tmp_path, monkeypatch):
    store = ReplicaStore(str(tmp_path))
    store.create("f", "id", [b"B"], 1)
    store.append("f", "c", 1, 1.0, b"one")
    real_fsync = os.fsync
    calls = {"n": 0}

    def failing_fsync(fd):
        calls["n"] += 1
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        store.append("f", "c", 2, 2.0, b"two")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert not store.state("f").holds(("c", 2))
    assert store.append("f", "c", 2, 2.0, b"two")                     # the retry
    assert content(ReplicaStore(str(tmp_path)), "f") == b"Bonetwo"


def test_a_crash_between_the_renames_of_an_install_keeps_the_old_copy(tmp_path):
    store = ReplicaStore(str(tmp_path))
    store.create("f", "id", [b"old"], 3)
    final = folder(store, "f")
    os.rename(final, os.path.join(str(tmp_path), ".old-crashed"))     # the first rename only
    assert content(ReplicaStore(str(tmp_path)), "f") == b"old"


def test_block_checksums_stay_right_across_merges_that_cross_block_edges(tmp_path):
    store = ReplicaStore(str(tmp_path))
    base = os.urandom((1 << 20) - 10)                     # the base ends inside block 0
    store.create("f", "id", [base], len(base))
    parts = [os.urandom(25), os.urandom(3 << 20), os.urandom(7)]
    for seq, part in enumerate(parts, 1):
        store.append("f", "c", seq, float(seq), part)
        store.apply_merge("f", seq, f"m{seq}", IdSet.of([("c", seq)]))
    fresh = ReplicaStore(str(tmp_path))
    assert content(fresh, "f") == base + b"".join(parts)     # every block CRC verified
    st = fresh.state("f")
    whole = base + b"".join(parts)
    assert st.base_crcs == [zlib.crc32(whole[i:i + (1 << 20)]) for i in range(0, len(whole), 1 << 20)]


def lock_is_free(store: ReplicaStore, name: str) -> bool:
    """Whether another thread could take the file's lock right now."""
    result = []

    def probe():
        lock = store.lock(name)
        result.append(lock.acquire(timeout=0.5))
        if result[0]:
            lock.release()
    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return result[0]


@pytest.mark.parametrize("size", [10, 9 << 20], ids=["in memory", "spooled to disk"])
def test_no_lock_is_held_while_a_write_streams_in(tmp_path, size):
    """Coordinators stream writes to each other: waiting on the network under a lock could
    deadlock two of them. Creates and appends read their bytes before locking."""
    store = ReplicaStore(str(tmp_path))
    piece = size // 3 + 1

    def arriving(name):
        left = size
        while left:
            assert lock_is_free(store, name)
            n = min(piece, left)
            left -= n
            yield b"z" * n
    store.create("f", "id", arriving("f"), size)
    assert store.append_stream("f", "c", 1, 1.0, size, arriving("f"))
    assert content(store, "f") == b"z" * (2 * size)
    assert not [e for e in os.listdir(tmp_path) if e.startswith(".spool-")]


def test_a_create_that_loses_a_race_while_streaming_says_so(tmp_path):
    store = ReplicaStore(str(tmp_path))

    def arriving():
        yield b"mine"
        store.create("f", "theirs", [b"theirs"], 6)     # committed meanwhile
    with pytest.raises(LostCreateRace):
        store.create("f", "mine", arriving(), 4)
    assert store.state("f").file_id == "theirs" and content(store, "f") == b"theirs"


def test_a_snapshot_keeps_its_index_while_merges_in_place_grow_the_base(tmp_path):
    # Snapshots share the base's index instead of copying it (merged_index.py): an append
    # merged after the snapshot must not show in it.
    store = ReplicaStore(str(tmp_path))
    store.create("f", "id1", [b"head"], 4)
    store.append("f", "c1", 1, 1.0, b"+one")
    store.apply_merge("f", 1, "m1", IdSet.of([("c1", 1)]))
    snap = store.snapshot("f")
    try:
        store.append("f", "c1", 2, 2.0, b"+two")
        store.apply_merge("f", 2, "m2", IdSet.of([("c1", 1), ("c1", 2)]))
        assert list(snap.index) == [("c1", 1, 1.0, 4, 4)]
        assert b"".join(store.read_chunks(snap)) == b"head+one"
        assert [h["id"] for h, _ in store.snapshot_records(snap, IdSet(), True)] == [["c1", 1]]
    finally:
        snap.close()
    assert entries(store, "f") == [("c1", 1, 1.0, 4, 4), ("c1", 2, 2.0, 8, 4)]
    assert content(store, "f") == b"head+one+two"
    assert entries(ReplicaStore(str(tmp_path)), "f") == entries(store, "f")  # meta.json


def test_a_snapshot_says_how_many_of_its_bytes_are_merged(tmp_path):
    # A reader tailing by offset re-reads from there after a merge (hydfs.data merged_size).
    store = ReplicaStore(str(tmp_path))
    store.create("f", "id1", [b"head"], 4)
    store.append("f", "c1", 1, 1.0, b"+one")
    with_pending = store.snapshot("f")
    store.apply_merge("f", 1, "m1", IdSet.of([("c1", 1)]))
    merged = store.snapshot("f")
    try:
        assert (with_pending.merged_size, merged.merged_size) == (4, 8)
    finally:
        with_pending.close()
        merged.close()


@pytest.mark.parametrize("key", [None, b"secret"])
def test_a_state_transfer_streams_the_index_after_the_base_not_in_its_header(tmp_path, key):
    # The index used to ride in the state message's line, capped at 16 MiB (about 250k
    # appends): a file that took appends for hours could not be re-replicated.
    import socket

    from cluster.connection import Connection
    from hydfs import transfer
    src, dst = ReplicaStore(str(tmp_path / "a")), ReplicaStore(str(tmp_path / "b"))
    src.create("f", "id1", [b"head\n"], 5)
    for seq in range(1, 3001):
        src.append("f", "c1", seq, float(seq), b"%d\n" % seq)
    src.apply_merge("f", 1, "m1", IdSet({"c1": [[1, 2990]]}))
    ours, theirs = socket.socketpair()
    sender = Connection(ours, key)
    lines = []
    real_send = sender.send
    sender.send = lambda message: (lines.append(message), real_send(message))[1]
    thread = threading.Thread(target=transfer.send_state, args=(sender, src, "f", True))
    thread.start()
    assert transfer.recv_state(Connection(theirs, key), dst, "f") == "full"
    thread.join()
    assert len(str(lines[0])) < 1000 and lines[0]["index"]["count"] == 2990
    assert content(dst, "f") == content(src, "f")
    assert entries(dst, "f") == entries(src, "f")
    assert entries(ReplicaStore(str(tmp_path / "b")), "f") == entries(src, "f")


def test_a_merge_whose_commit_fails_leaves_the_copy_that_meta_json_names(tmp_path, monkeypatch):
    # review: the merge changed the state in use before meta.json committed it, so after a
    # failed commit (a full disk) new appends went to a pending log meta.json did not name
    from hydfs import layout
    store = ReplicaStore(str(tmp_path))
    store.create("f", "id1", [b"head"], 4)
    store.append("f", "c1", 1, 1.0, b"+one")
    real = layout.commit_meta

    def full_disk(root, st):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(layout, "commit_meta", full_disk)
    with pytest.raises(OSError):
        store.apply_merge("f", 1, "m1", IdSet.of([("c1", 1)]))
    monkeypatch.setattr(layout, "commit_meta", real)
    assert store.state("f").gen == 0 and len(store.state("f").pending) == 1
    store.append("f", "c1", 2, 2.0, b"+two")
    assert content(ReplicaStore(str(tmp_path)), "f") == b"head+one+two"     # after a crash
    assert store.apply_merge("f", 1, "m1", IdSet.of([("c1", 1), ("c1", 2)])) == []
    assert content(ReplicaStore(str(tmp_path)), "f") == b"head+one+two"
    assert entries(store, "f") == [("c1", 1, 1.0, 4, 4), ("c1", 2, 2.0, 8, 4)]
