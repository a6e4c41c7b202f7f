"""Tests for hydfs.ring: positions, placement, collisions and placement changes."""

from __future__ import annotations

import ast
import itertools
import random
from pathlib import Path

import pytest

import hydfs.ring
from hydfs.ring import Ring, placement_changes, responsible_files, ring_position

pytestmark = pytest.mark.timeout(30)

VMS = [f"{i:02d}" for i in range(1, 11)]
BITS = 11


def file_at(ring: Ring, position: int, prefix: str = "f") -> str:
    """Find a file name that hashes to exactly `position` on `ring`."""
    for i in itertools.count():
        name = f"{prefix}{i}"
        if ring.file_position(name) == position:
            return name
    raise AssertionError("unreachable")


def names(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [f"file-{rng.getrandbits(64):016x}.txt" for _ in range(count)]


@pytest.mark.parametrize("name", ["01", "10", "", "a/b/c.txt", "ünïcødé"])
@pytest.mark.parametrize("bits", [1, 8, 11, 32])
def test_ring_position_deterministic_and_in_range(name: str, bits: int) -> None:
    pos = ring_position(name, bits)
    assert pos == ring_position(name, bits)
    assert 0 <= pos < 2**bits


@pytest.mark.parametrize(
    "name, pos", [("01", 835), ("02", 227), ("03", 595), ("10", 2021), ("a.txt", 1308)]
)
def test_ring_position_pinned(name: str, pos: int) -> None:
    # Pinned: a change of hash would move every node and file between versions.
    assert ring_position(name, 11) == pos


@pytest.mark.parametrize("bits", [0, -1, 161])
def test_ring_position_rejects_bad_bits(bits: int) -> None:
    with pytest.raises(ValueError):
        ring_position("01", bits)


def test_ring_from_names_uses_hashed_positions() -> None:
    ring = Ring(VMS, BITS)
    assert len(ring) == 10
    for vm in VMS:
        assert vm in ring
        assert ring.position(vm) == ring_position(vm, BITS)
    order = ring.nodes_in_order()
    assert order == sorted(VMS, key=lambda vm: (ring_position(vm, BITS), vm))
    assert "11" not in ring
    with pytest.raises(KeyError):
        ring.position("11")


def test_from_positions_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        Ring.from_positions({"01": 2048}, bits=11)
    with pytest.raises(ValueError):
        Ring.from_positions({"01": -1}, bits=11)


THREE = Ring.from_positions({"01": 100, "02": 500, "03": 1500}, bits=BITS)


@pytest.mark.parametrize(
    "file_pos, count, expected",
    [
        (0, 3, ["01", "02", "03"]),
        (100, 3, ["01", "02", "03"]),      # exactly on a node: that node is primary
        (101, 3, ["02", "03", "01"]),
        (500, 2, ["02", "03"]),
        (1000, 3, ["03", "01", "02"]),
        (1501, 3, ["01", "02", "03"]),     # past the last node: wrap around
        (2047, 1, ["01"]),
        (1501, 5, ["01", "02", "03"]),     # fewer nodes than count
        (300, 0, []),
    ],
)
def test_replicas_wrap_around(file_pos: int, count: int, expected: list[str]) -> None:
    name = file_at(THREE, file_pos)
    assert THREE.replicas(name, count) == expected
    assert THREE.primary(name) == THREE.replicas(name, 1)[0]


COLLIDING = Ring.from_positions({"02": 5, "01": 5, "03": 900}, bits=BITS)


@pytest.mark.parametrize(
    "file_pos, expected",
    [
        (5, ["01", "02", "03"]),       # tie at 5: smaller key first
        (0, ["01", "02", "03"]),
        (6, ["03", "01", "02"]),
        (901, ["01", "02", "03"]),
    ],
)
def test_collisions_broken_by_key(file_pos: int, expected: list[str]) -> None:
    assert COLLIDING.nodes_in_order() == ["01", "02", "03"]
    assert COLLIDING.replicas(file_at(COLLIDING, file_pos), 3) == expected


def test_collision_order_independent_of_insertion() -> None:
    a = Ring.from_positions({"01": 5, "02": 5, "03": 900}, bits=BITS)
    assert a == COLLIDING and hash(a) == hash(COLLIDING)


def test_empty_ring() -> None:
    ring = Ring([], BITS)
    assert len(ring) == 0
    assert ring.replicas("x", 3) == []
    assert ring.primary("x") is None
    assert ring.nodes_in_order() == []


@pytest.mark.parametrize("count", [1, 3, 10, 12])
def test_replicas_distinct_and_sized(count: int) -> None:
    ring = Ring(VMS, BITS)
    for name in names(100):
        got = ring.replicas(name, count)
        assert len(got) == min(count, 10)
        assert len(set(got)) == len(got)
        assert got[0] == ring.primary(name)


def test_replicas_rejects_negative_count() -> None:
    with pytest.raises(ValueError):
        THREE.replicas("x", -1)


FOUR = Ring.from_positions({"01": 10, "02": 20, "03": 30, "04": 40}, bits=BITS)


@pytest.mark.parametrize(
    "node, k, successors, predecessors",
    [
        ("01", 1, ["02"], ["04"]),
        ("01", 2, ["02", "03"], ["04", "03"]),
        ("03", 3, ["04", "01", "02"], ["02", "01", "04"]),
        ("04", 9, ["01", "02", "03"], ["03", "02", "01"]),  # capped, never self
        ("02", 0, [], []),
    ],
)
def test_successors_predecessors(
    node: str, k: int, successors: list[str], predecessors: list[str]
) -> None:
    assert FOUR.successors(node, k) == successors
    assert FOUR.predecessors(node, k) == predecessors


def test_neighbours_single_node_and_absent() -> None:
    solo = Ring.from_positions({"01": 3}, bits=BITS)
    assert solo.successors("01", 2) == [] and solo.predecessors("01", 2) == []
    with pytest.raises(KeyError):
        FOUR.successors("09", 1)


def test_without_and_with_node_return_new_rings() -> None:
    ring = Ring(VMS, BITS)
    smaller = ring.without("05")
    assert "05" not in smaller and "05" in ring
    assert len(smaller) == 9 and len(ring) == 10
    assert smaller.with_node("05") == ring
    assert ring.without("99") == ring
    assert ring.with_node("05") == ring


def test_responsible_files_matches_replicas() -> None:
    ring = Ring(VMS, BITS)
    files = names(200)
    per_node = {vm: responsible_files(ring, vm, files, 3) for vm in VMS}
    for name in files:
        holders = {vm for vm in VMS if name in per_node[vm]}
        assert holders == set(ring.replicas(name, 3))
    assert sum(len(held) for held in per_node.values()) == 3 * len(files)


@pytest.mark.parametrize("leaving", VMS)
def test_placement_changes_when_node_leaves(leaving: str) -> None:
    old = Ring(VMS, BITS)
    new = old.without(leaving)
    files = names(200)
    changes = placement_changes(old, new, files, 3)
    assert set(changes) == responsible_files(old, leaving, files, 3)
    for name, (before, after) in changes.items():
        assert before == old.replicas(name, 3) and after == new.replicas(name, 3)
        assert set(before) - set(after) == {leaving}
        assert len(set(after) - set(before)) == 1


@pytest.mark.parametrize("joining", VMS)
def test_placement_changes_when_node_joins(joining: str) -> None:
    new = Ring(VMS, BITS)
    old = new.without(joining)
    files = names(200)
    changes = placement_changes(old, new, files, 3)
    assert set(changes) == responsible_files(new, joining, files, 3)
    for before, after in changes.values():
        assert set(after) - set(before) == {joining}
        assert len(set(before) - set(after)) == 1


def test_placement_changes_identical_rings_empty() -> None:
    ring = Ring(VMS, BITS)
    assert placement_changes(ring, ring, names(50), 3) == {}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_two_failures_keep_three_replicas_and_an_old_copy(seed: int) -> None:
    rng = random.Random(seed)
    ring = Ring(VMS, BITS)
    files = [f"{rng.choice('abcxyz')}{rng.getrandbits(48)}" for _ in range(200)]
    for gone in itertools.combinations(VMS, 2):
        survivors = ring.without(gone[0]).without(gone[1])
        for name in files:
            old, new = ring.replicas(name, 3), survivors.replicas(name, 3)
            assert len(set(new)) == 3 and not set(new) & set(gone)
            assert set(old) & set(new), (name, gone, old, new)


@pytest.mark.parametrize("path", ["hydfs/ring.py", "hydfs/cache.py"])
def test_core_modules_are_pure(path: str) -> None:
    source = Path(hydfs.ring.__file__).parent.parent / path
    tree = ast.parse(source.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert not imported & {"socket", "threading", "time", "random", "asyncio", "os"}
