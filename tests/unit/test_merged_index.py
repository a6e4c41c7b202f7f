"""The index of merged appends, in a file beside the base (hydfs/merged_index.py), and
automatic merges' rules."""

from __future__ import annotations

import os
import struct

import pytest

from hydfs.idset import IdSet
from hydfs.merge import MERGE_AFTER_BYTES, automatic_plan, merge_due, plan_merge
from hydfs.checked_read import CorruptReplica
from hydfs.merged_index import ROW, BadIndex, IndexView, MergedIndex
from hydfs.pending_log import Record

pytestmark = pytest.mark.timeout(30)

ENTRIES = [("a", 1, 1.0, 5, 3), ("b", 1, 1.5, 8, 4), ("a", 2, 2.0, 12, 3)]
BASE = 15           # what ENTRIES describe: a create of 5 bytes, then three appends


def _index(folder, entries=ENTRIES) -> MergedIndex:
    index = MergedIndex()
    index.extend(str(folder), list(entries))
    return index


def _read(folder, index: MergedIndex) -> IndexView:
    return index.view(str(folder))


def test_entries_come_back_in_order_forwards_and_backwards(tmp_path):
    index = _index(tmp_path)
    view = _read(tmp_path, index)
    assert list(view) == ENTRIES and list(reversed(view)) == ENTRIES[::-1]
    assert len(view) == len(index) == 3 and view.entry(1) == ENTRIES[1]
    assert index.last() == view.last() == ENTRIES[-1]
    assert MergedIndex().last() is None and not MergedIndex()
    assert list(MergedIndex().view(str(tmp_path))) == []


def test_iteration_crosses_read_blocks_both_ways(tmp_path):
    entries = [("c", seq, float(seq), seq, 1) for seq in range(1, 2600)]
    view = _read(tmp_path, _index(tmp_path, entries))
    assert list(view) == entries and list(reversed(view)) == entries[::-1]


def test_rows_are_a_file_of_fixed_rows_and_meta_json_holds_only_count_and_clients(tmp_path):
    index = _index(tmp_path)
    assert os.path.getsize(tmp_path / index.file_name) == 3 * ROW.size
    assert index.meta() == {"index_file": index.file_name, "index_count": 3,
                            "index_clients": ["a", "b"]}
    loaded = MergedIndex.load(str(tmp_path), dict(index.meta(), base_size=BASE))
    assert list(_read(tmp_path, loaded)) == ENTRIES and loaded.last() == ENTRIES[-1]


def test_an_index_holds_no_open_file(tmp_path):
    # a node may hold thousands of files: only snapshots' views keep one open
    index = _index(tmp_path)
    before = len(os.listdir("/proc/self/fd"))
    index.extend(str(tmp_path), [("c", 1, 3.0, 15, 2)])
    loaded = MergedIndex.load(str(tmp_path), dict(index.meta(), base_size=BASE + 2))
    assert len(os.listdir("/proc/self/fd")) == before and len(loaded) == 4
    view = loaded.view(str(tmp_path))
    assert len(os.listdir("/proc/self/fd")) == before + 1
    view.close()
    assert len(os.listdir("/proc/self/fd")) == before


def test_loading_cuts_off_rows_past_the_committed_count(tmp_path):
    # a crash after a merge in place fsync'd its rows, before meta.json committed them
    index = _index(tmp_path)
    committed = dict(index.meta(), base_size=BASE)
    index.extend(str(tmp_path), [("c", 1, 3.0, 15, 2)])
    loaded = MergedIndex.load(str(tmp_path), committed)
    assert list(_read(tmp_path, loaded)) == ENTRIES and loaded.last() == ENTRIES[-1]
    assert os.path.getsize(tmp_path / index.file_name) == 3 * ROW.size
    with pytest.raises(BadIndex):
        MergedIndex.load(str(tmp_path), dict(committed, index_count=4))


def test_an_older_meta_json_with_the_rows_inline_still_loads(tmp_path):
    loaded = MergedIndex.load(str(tmp_path), {"index": [list(e) for e in ENTRIES]})
    assert list(_read(tmp_path, loaded)) == ENTRIES and loaded.file_name


def test_a_view_keeps_what_it_held_while_the_index_grows(tmp_path):
    index = _index(tmp_path)
    view = _read(tmp_path, index)
    index.extend(str(tmp_path), [("c", 1, 3.0, 15, 2)])
    assert list(view) == ENTRIES and len(view) == 3
    assert list(reversed(view)) == ENTRIES[::-1] and view.last() == ENTRIES[-1]
    assert len(index) == 4 and index.last() == ("c", 1, 3.0, 15, 2)
    assert list(_read(tmp_path, index))[-1] == ("c", 1, 3.0, 15, 2)


def test_a_view_is_still_read_after_its_file_is_deleted(tmp_path):
    # a rebuild writes a new index; the commit deletes the old file under open snapshots
    index = _index(tmp_path)
    view = _read(tmp_path, index)
    os.unlink(tmp_path / index.file_name)
    assert list(view) == ENTRIES


def test_each_client_id_is_stored_once(tmp_path):
    index = _index(tmp_path, [("client-with-a-long-id", seq, float(seq), seq, 1)
                              for seq in range(1, 1001)])
    assert index.meta()["index_clients"] == ["client-with-a-long-id"]
    assert _read(tmp_path, index).entry(999) == ("client-with-a-long-id", 1000, 1000.0, 1000, 1)


def test_a_row_that_fails_its_checksum_is_a_corrupt_replica(tmp_path):
    index = _index(tmp_path)
    with open(tmp_path / index.file_name, "r+b") as f:
        f.seek(ROW.size + 20)                 # the second row's offset field
        f.write(b"\x07")
    with pytest.raises(CorruptReplica, match="index row 1"):
        list(_read(tmp_path, index))
    assert _read(tmp_path, index).entry(0) == ENTRIES[0]


def test_a_damaged_last_row_sets_the_copy_aside_instead_of_failing_the_load(tmp_path):
    # review: an IndexError from a bad client number stopped the node from starting
    index = _index(tmp_path)
    meta = dict(index.meta(), base_size=BASE)
    for bad in (dict(meta, index_clients=[]), dict(meta, base_size=BASE + 1)):
        with pytest.raises(BadIndex):
            MergedIndex.load(str(tmp_path), bad)


MERGED = IdSet.of([("a", 1), ("b", 1), ("a", 2)])


def _receive(folder, chunks, base_size=BASE, clients=("a", "b"), merged=MERGED, count=3):
    return MergedIndex.receive(str(folder), count, list(clients), merged, chunks, base_size, 5)


def test_received_rows_are_checked_against_the_base_and_the_merged_ids(tmp_path):
    (tmp_path / "a").mkdir()
    rows = b"".join(_read(tmp_path / "a", _index(tmp_path / "a")).chunks())
    got = _receive(tmp_path, [rows[:7], rows[7:]])
    assert list(_read(tmp_path, got)) == ENTRIES and got.last() == ENTRIES[-1]
    bad = {"base too short": dict(base_size=14), "an unknown client number": dict(clients=["a"]),
           "rows that do not reach the base's end": dict(base_size=BASE + 1),
           "an id the summary does not say is merged":
               dict(merged=IdSet.of([("a", 1), ("b", 1), ("a", 3)])),
           "more rows than merged appends": dict(merged=IdSet.of([("a", 1), ("b", 1)]))}
    for what, how in bad.items():
        with pytest.raises(BadIndex):
            _receive(tmp_path, [rows], **how)
    with pytest.raises(BadIndex):
        _receive(tmp_path, [rows[:-1]])                                  # a torn row
    flipped = bytearray(rows)
    flipped[ROW.size + 3] ^= 1
    with pytest.raises(CorruptReplica):
        _receive(tmp_path, [bytes(flipped)])
    overlapping = _index(tmp_path / "a", [("a", 1, 1.0, 5, 3), ("a", 2, 2.0, 6, 3)])
    with pytest.raises(BadIndex, match="does not fit"):
        _receive(tmp_path, _read(tmp_path / "a", overlapping).chunks(), 11, ["a"],
                 IdSet.of([("a", 1), ("a", 2)]), 2)
    backwards = _index(tmp_path / "a", [("a", 2, 2.0, 5, 3), ("a", 1, 1.0, 8, 3)])
    with pytest.raises(BadIndex, match="next merged append"):
        _receive(tmp_path, _read(tmp_path / "a", backwards).chunks(), 11, ["a"],
                 IdSet.of([("a", 1), ("a", 2)]), 2)
    assert [f for f in os.listdir(tmp_path) if f.startswith("index.")] == [got.file_name]


def test_a_merge_is_due_at_the_configured_count_or_at_the_byte_bound_and_never_when_off():
    assert not merge_due(511, 0, 512)
    assert merge_due(512, 0, 512)
    assert merge_due(1, MERGE_AFTER_BYTES, 512)
    assert not merge_due(10_000, MERGE_AFTER_BYTES, 0)


def _summary(merged: list, pending: list) -> dict:
    return {"name": "f", "file_id": "x", "gen": 1, "merge_id": "m", "size": 0,
            "merged": IdSet.of(merged).to_wire(), "pending": IdSet.of(pending).to_wire()}


def test_an_automatic_merge_leaves_appends_of_the_last_grace_pending():
    # Several writers' appends arrive a little out of timestamp order; merging a late one
    # behind an already merged one would rewrite the whole base (base_file.py).
    now = 1000.0
    recs = [Record("a", 1, now - 9, 1, 0, 0), Record("b", 1, now - 1, 1, 0, 0)]
    summaries = {"01": _summary([("z", 1)], [("a", 1), ("b", 1)]),
                 "02": _summary([("z", 1)], [("a", 1), ("b", 1), ("c", 1)])}
    plan = automatic_plan(plan_merge(summaries), summaries, recs, now)
    assert plan.target == IdSet.of([("z", 1), ("a", 1)])       # not b (recent), not c (not here)
    assert automatic_plan(plan_merge(summaries), summaries, recs[1:], now) is None
    assert plan_merge(summaries).target == IdSet.of([("z", 1), ("a", 1), ("b", 1), ("c", 1)])


def test_an_automatic_merge_takes_what_any_replica_merged_so_the_bases_stay_alike():
    now = 1000.0
    summaries = {"01": _summary([("z", 1)], []), "02": _summary([("z", 1), ("z", 2)], [])}
    plan = automatic_plan(plan_merge(summaries), summaries, [], now)
    assert plan.target == IdSet.of([("z", 1), ("z", 2)]) and plan.missing == {"01": [["z", 2]]}


def test_a_number_no_row_holds_leaves_the_index_as_it_was(tmp_path):
    # Columns that fell out of step gave later entries another entry's client (review).
    index = _index(tmp_path, ENTRIES[:1])
    with pytest.raises(struct.error):
        index.extend(str(tmp_path), [("new", 1 << 63, 2.0, 8, 1)])
    index.extend(str(tmp_path), [("c", 3, 3.0, 8, 1)])
    assert list(_read(tmp_path, index)) == [ENTRIES[0], ("c", 3, 3.0, 8, 1)]
    assert index.meta()["index_clients"] == ["a", "c"]
    with pytest.raises(IndexError):
        _read(tmp_path, index).entry(2)


def test_an_append_id_whose_sequence_number_no_index_column_holds_is_a_bad_request():
    from cluster.errors import HandlerError
    from hydfs.messages import MAX_SEQ, append_id
    assert append_id({"id": ["c", MAX_SEQ - 1], "ts": 1.0}) == ("c", MAX_SEQ - 1, 1.0)
    for seq in (MAX_SEQ, -1):
        with pytest.raises(HandlerError, match="sequence number"):
            append_id({"id": ["c", seq], "ts": 1.0})
