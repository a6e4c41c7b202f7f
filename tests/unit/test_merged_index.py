"""The compact index of merged appends (hydfs/merged_index.py) and automatic merges' rules."""

from __future__ import annotations

import json

import pytest

from hydfs.idset import IdSet
from hydfs.merge import (MAX_AUTO_MERGED, MERGE_AFTER_BYTES, automatic_plan, merge_due,
                         plan_merge)
from hydfs.merged_index import MergedIndex
from hydfs.pending_log import Record

pytestmark = pytest.mark.timeout(30)

ENTRIES = [("a", 1, 1.0, 5, 3), ("b", 1, 1.5, 8, 4), ("a", 2, 2.0, 12, 3)]


def test_entries_come_back_in_order_forwards_and_backwards():
    index = MergedIndex(ENTRIES)
    assert list(index) == ENTRIES
    assert list(reversed(index)) == ENTRIES[::-1]
    assert len(index) == 3 and index.last() == ENTRIES[-1]
    assert MergedIndex().last() is None and not MergedIndex()


def test_its_wire_form_is_the_meta_json_list_of_old():
    index = MergedIndex(ENTRIES)
    wire = json.loads(json.dumps(index.to_wire()))
    assert wire == [list(e) for e in ENTRIES]
    assert MergedIndex.from_wire(wire) == index


def test_a_frozen_index_keeps_what_it_held_while_the_index_grows():
    index = MergedIndex(ENTRIES)
    snapshot = index.frozen()
    index.append("c", 1, 3.0, 15, 2)
    assert list(snapshot) == ENTRIES and len(snapshot) == 3
    assert list(reversed(snapshot)) == ENTRIES[::-1] and snapshot.last() == ENTRIES[-1]
    assert len(index) == 4 and index.last() == ("c", 1, 3.0, 15, 2)
    with pytest.raises(TypeError):
        snapshot.append("d", 1, 4.0, 17, 1)


def test_each_client_id_is_stored_once():
    index = MergedIndex(("client-with-a-long-id", seq, float(seq), seq, 1)
                        for seq in range(1, 1001))
    assert index._clients == ["client-with-a-long-id"]
    assert index.entry(999) == ("client-with-a-long-id", 1000, 1000.0, 1000, 1)


def test_a_merge_is_due_at_the_configured_count_or_at_the_byte_bound_and_never_when_off():
    assert not merge_due(511, 0, 0, 512)
    assert merge_due(512, 0, 0, 512)
    assert merge_due(1, MERGE_AFTER_BYTES, 0, 512)
    assert not merge_due(10_000, MERGE_AFTER_BYTES, 0, 0)
    # past this, a state transfer's header line could not carry the index (transfer.py)
    assert not merge_due(10_000, 0, MAX_AUTO_MERGED, 512)


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


def test_a_number_no_column_holds_leaves_the_index_as_it_was():
    # Columns that fell out of step gave later entries another entry's client (review).
    index = MergedIndex(ENTRIES[:1])
    with pytest.raises(OverflowError):
        index.append("new", 1 << 63, 2.0, 8, 1)
    index.append("c", 3, 3.0, 8, 1)
    assert list(index) == [ENTRIES[0], ("c", 3, 3.0, 8, 1)] and index._clients == ["a", "c"]
    index.truncate(1)
    assert list(index) == ENTRIES[:1]
    with pytest.raises(IndexError):
        index.frozen().entry(1)


def test_an_append_id_whose_sequence_number_no_index_column_holds_is_a_bad_request():
    from cluster.errors import HandlerError
    from hydfs.messages import MAX_SEQ, append_id
    assert append_id({"id": ["c", MAX_SEQ - 1], "ts": 1.0}) == ("c", MAX_SEQ - 1, 1.0)
    for seq in (MAX_SEQ, -1):
        with pytest.raises(HandlerError, match="sequence number"):
            append_id({"id": ["c", seq], "ts": 1.0})
