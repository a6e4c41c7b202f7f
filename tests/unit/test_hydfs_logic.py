"""Pure HyDFS logic: names, id sets, the merge rule and re-replication plans."""

from __future__ import annotations


import pytest

from hydfs.idset import IdSet
from hydfs.merge import plan_merge
from hydfs.names import BadName, check_name, disk_name, name_from_disk
from hydfs.replication import covers, plan
from hydfs.ring import Ring

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("name", ["TrafficSigns_1000", "app1_out", "logs/task-3", "a b", "x.y",
                                  ".hidden", ".tmp-x", "x" * 200])
def test_good_names_map_to_one_safe_path_component(name):
    assert check_name(name) == name
    assert "/" not in disk_name(name) and name_from_disk(disk_name(name)) == name


@pytest.mark.parametrize("name", ["", "\u00e9" * 120, "../x", "a/../b", "/etc/passwd", "..", ".", "a\x00b",
                                  "a\nb", "x" * 256, None, 5, "C:\\x", "a/./b"])
def test_bad_names_are_refused(name):
    with pytest.raises(BadName):
        check_name(name)


def test_idset_ranges_union_and_cover():
    a = IdSet.of([("c", 1), ("c", 2), ("c", 3), ("d", 7)])
    assert a.to_wire() == {"c": [[1, 3]], "d": [[7, 7]]}
    assert ("c", 2) in a and ("c", 4) not in a and len(a) == 4
    b = IdSet.of([("c", 5)])
    u = a.union(b)
    assert u.covers(a) and u.covers(b) and not a.covers(u)
    assert IdSet(u.to_wire()) == u and u.max_seq("c") == 5
    with pytest.raises(ValueError):
        IdSet({"c": [[3, 1]]})


@pytest.mark.timeout(10)
def test_idset_with_many_sparse_ranges_stays_fast():
    ids = IdSet.of(("c", seq) for seq in range(1, 80000, 2))        # 40,000 spans
    assert len(ids) == 40000 and ("c", 79999) in ids and ("c", 2) not in ids
    assert ids.union(IdSet.of([("c", 2)])).covers(ids)


def summary(gen=0, merged=(), pending=(), merge_id="create", file_id="F"):
    return {"file_id": file_id, "gen": gen, "merge_id": merge_id,
            "merged": IdSet.of(merged).to_wire(), "pending": IdSet.of(pending).to_wire()}


def h(client, seq, ts):
    return {"id": [client, seq], "ts": ts, "size": 1, "crc": 0}


def test_a_merge_takes_the_union_and_says_who_lacks_what():
    summaries = {"01": summary(pending=[("a", 1), ("b", 1)]),
                 "02": summary(pending=[("b", 1), ("a", 2)]),
                 "03": summary(pending=[("a", 1), ("b", 1), ("a", 2)])}
    p = plan_merge(summaries)
    assert p.target == IdSet.of([("a", 1), ("a", 2), ("b", 1)]) and p.gen == 1
    assert p.missing == {"01": [["a", 2]], "02": [["a", 1]]}


def test_second_merge_with_nothing_new_is_a_no_op():
    merged = [("a", 1)]
    s = {vm: summary(gen=1, merged=merged, merge_id="m") for vm in ("01", "02", "03")}
    assert plan_merge(s) is None


def test_replicas_with_different_merge_histories_are_reconciled():
    s = {"01": summary(gen=2, merged=[("a", 1)], merge_id="m2"),
         "02": summary(gen=2, merged=[("b", 1)], merge_id="other")}      # two merges at once
    p = plan_merge(s)
    assert p.target == IdSet.of([("a", 1), ("b", 1)])
    assert p.missing == {"01": [["b", 1]], "02": [["a", 1]]} and p.gen == 3


def test_covers():
    assert covers(summary(pending=[("a", 1), ("a", 2)]), summary(pending=[("a", 1)]))
    assert not covers(summary(pending=[("a", 1)]), summary(pending=[("a", 2)]))
    assert covers(summary(gen=0, pending=[("a", 1)]), summary(gen=1, merged=[("a", 1)]))
    assert not covers(summary(file_id="F"), summary(file_id="G"))
    assert not covers(None, summary())


def test_plan_pulls_what_a_replica_lacks_and_drops_only_covered_excess():
    ring = Ring.from_positions({"01": 100, "02": 200, "03": 300, "04": 400}, bits=11)
    name = "f"
    owners = ring.replicas(name, 3)
    outsider = next(vm for vm in ring.nodes_in_order() if vm not in owners)
    full = summary(pending=[("a", 1), ("a", 2)])
    part = summary(pending=[("a", 1)])
    manifests = {owners[1]: {name: full}, owners[2]: {name: part}, outsider: {name: full}}
    p = plan(owners[0], ring, 3, {}, manifests)
    assert p.pulls == [(name, owners[1])] and p.drops == []
    p = plan(owners[2], ring, 3, {name: part}, {owners[0]: {name: full}, owners[1]: {name: full}})
    assert p.pulls == [(name, owners[0])]
    # The outsider drops its copy only once every replica covers it.
    manifests = {owners[0]: {name: full}, owners[1]: {name: full}, owners[2]: {name: part}}
    assert plan(outsider, ring, 3, {name: full}, manifests).drops == []
    manifests[owners[2]] = {name: full}
    assert plan(outsider, ring, 3, {name: full}, manifests).drops == [name]
    assert plan(outsider, ring, 3, {name: full}, {}).drops == []    # never the last copy blind


def test_a_copy_of_a_create_that_lost_to_an_earlier_one_is_dropped():
    """tests/netns_tier found it: both sides of a partition created one name; after healing
    the replicas kept the earlier create, and copies of the later one on other nodes were
    never dropped (nothing could ever cover them). A copy of a *newer* create than the
    replicas' is dropped; one of an older create is not (the replicas would pull it)."""
    ring = Ring.from_positions({"01": 100, "02": 200, "03": 300, "04": 400}, bits=11)
    name = "twice"
    owners = ring.replicas(name, 3)
    outsider = next(vm for vm in ring.nodes_in_order() if vm not in owners)
    earlier, later = summary(file_id="0001-a"), summary(file_id="0002-b", pending=[("b", 1)])
    manifests = {vm: {name: earlier} for vm in owners}
    lost = plan(outsider, ring, 3, {name: later}, manifests)
    assert lost.drops == [name] and lost.lost == [name]
    assert plan(outsider, ring, 3, {name: earlier}, {vm: {name: later} for vm in owners}
                ).drops == []
    manifests[owners[0]] = {}                      # a replica without it yet: keep ours
    assert plan(outsider, ring, 3, {name: later}, manifests).drops == []
