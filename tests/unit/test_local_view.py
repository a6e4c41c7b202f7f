"""A source's direct read of its node's copy of SRC (stream/local_view.py): the same bytes as
the store's own view, and a clear refusal, so the task reads through its node instead, when
the base was replaced or fails its checksum."""

from __future__ import annotations

import os

import pytest

from hydfs.checked_read import BLOCK, as_bytes
from hydfs.idset import IdSet
from hydfs.store import ReplicaStore
from stream.local_view import LocalView, Unusable

pytestmark = pytest.mark.timeout(30)

HEAD = b"".join(b"line %07d\n" % i for i in range(300_000))      # 3.6 MB: four blocks


def merged_store(path) -> ReplicaStore:
    store = ReplicaStore(str(path))
    store.create("f", "id1", [HEAD], len(HEAD))
    store.append("f", "a", 1, 1.0, b"first append\n")
    store.append("f", "b", 1, 2.0, b"second append\n")
    assert store.apply_merge("f", 1, "m1", IdSet.of([("a", 1), ("b", 1)])) == []
    return store


def where(store: ReplicaStore, ids: IdSet):
    snap = store.snapshot("f")
    try:
        v = store.view(snap, ids, True)
        expected = b"".join(as_bytes(s) for s in store.view_spans(snap, v, 0, v.size))
        return store.where_in_base(snap, v), expected
    finally:
        snap.close()


@pytest.mark.parametrize("offset, length", [(0, 100), (BLOCK - 7, 20), (5, 3 * BLOCK),
                                            (len(HEAD) - 4, 40), (0, 10 * BLOCK)])
def test_a_direct_read_gives_the_views_bytes(tmp_path, offset, length):
    store = merged_store(tmp_path)
    spot, expected = where(store, IdSet.of([("b", 1)]))     # the head, then b's append only
    view = LocalView(spot)
    assert view.size == len(expected) == len(HEAD) + len(b"second append\n")
    assert view.read(offset, length) == expected[offset:offset + length]
    view.close()


def test_a_view_with_appends_still_pending_is_not_offered(tmp_path):
    store = merged_store(tmp_path)
    store.append("f", "c", 1, 3.0, b"pending\n")
    assert where(store, IdSet.of([("a", 1), ("c", 1)]))[0] is None


def test_a_corrupt_block_or_a_replaced_base_makes_the_reader_use_its_node(tmp_path):
    store = merged_store(tmp_path)
    spot, _ = where(store, IdSet.of([("a", 1)]))
    view = LocalView(spot)
    with open(spot["path"], "r+b") as f:              # one bit flipped in block 1
        f.seek(BLOCK + 10)
        byte = f.read(1)
        f.seek(BLOCK + 10)
        f.write(bytes([byte[0] ^ 1]))
    assert view.read(0, 100)
    with pytest.raises(Unusable):
        view.read(BLOCK, 100)
    view.close()
    os.rename(spot["path"], spot["path"] + ".old")    # replaced by another file
    with open(spot["path"], "wb") as f:
        f.write(HEAD)
    with pytest.raises(Unusable, match="replaced"):
        LocalView(spot)
