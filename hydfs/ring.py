"""Consistent-hash ring: which nodes hold which HyDFS file.

Theory of operation (seed, "Hybrid Distributed File System"): nodes and file names are hashed
onto one ring of positions 0 .. 2**bits - 1 (bits = `[hydfs] ring_bits`, 11 by default). A
node's key is its stable vm name ("03"), so its ring id is the same across restarts and every
machine computes the same ring from the same membership list, with no coordination. A file is
stored on its *primary*, the first node clockwise at or after the file's position (wrapping
past the top), and on the next `count - 1` distinct nodes clockwise: 3 replicas tolerate two
simultaneous failures.

Ties: two nodes may hash to the same position (2048 slots). Nodes are ordered by the pair
(position, key), so a collision is broken by node key and placement stays deterministic. A file
at position p is placed starting at the smallest (position, key) >= (p, ""), i.e. the colliding
node with the smallest key is the primary.

Invariants:
- A `Ring` is immutable; `without` and `with_node` return new rings.
- `replicas(name, count)` holds min(count, len(ring)) distinct nodes, primary first, in
  clockwise order.
- When one node leaves, each file it held swaps exactly that node for one new node (the next
  one clockwise); files it did not hold keep their replica lists (see `placement_changes`).

This module is pure: no sockets, threads, clocks or randomness.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
from collections.abc import Iterable, Iterator, Mapping


@functools.lru_cache(maxsize=8192)     # every request places its file: hash a name once
def ring_position(name: str, bits: int) -> int:
    """Return the ring position of `name` in 0 .. 2**bits - 1 (SHA-1, stable across runs)."""
    _check_bits(bits)
    digest = hashlib.sha1(name.encode("utf-8")).digest()
    return int.from_bytes(digest, "big") % (1 << bits)


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= 160:
        raise ValueError(f"ring bits must be in 1..160, got {bits}")


class Ring:
    """An immutable set of nodes placed on the hash ring, ordered by (position, key)."""

    __slots__ = ("_bits", "_positions", "_points", "_order", "_index")

    def __init__(self, nodes: Iterable[str], bits: int) -> None:
        """Place each node key at `ring_position(key, bits)`; duplicate keys count once."""
        self._setup({node: ring_position(node, bits) for node in nodes}, bits)

    @classmethod
    def from_positions(cls, positions: Mapping[str, int], bits: int) -> Ring:
        """Build a ring with explicit positions (tests: force collisions and wrap-around).

        Raises ValueError if a position is outside 0 .. 2**bits - 1.
        """
        ring = cls.__new__(cls)
        ring._setup(dict(positions), bits)
        return ring

    def _setup(self, positions: dict[str, int], bits: int) -> None:
        _check_bits(bits)
        for node, pos in positions.items():
            if not 0 <= pos < (1 << bits):
                raise ValueError(f"position {pos} of node {node!r} is outside the ring")
        self._bits = bits                     # positions are 0 .. 2**bits - 1
        self._positions = positions           # node key -> ring position
        self._points = sorted((pos, node) for node, pos in positions.items())  # ring order
        self._order = [node for _, node in self._points]  # node keys in ring order
        self._index = {node: i for i, node in enumerate(self._order)}  # key -> index in order

    @property
    def bits(self) -> int:
        """The ring size exponent: positions are 0 .. 2**bits - 1."""
        return self._bits

    def position(self, node: str) -> int:
        """Return the ring position of a member node; KeyError if it is not on the ring."""
        return self._positions[node]

    def file_position(self, file_name: str) -> int:
        """Return the ring position (ring id) of a file name."""
        return ring_position(file_name, self._bits)

    def nodes_in_order(self) -> list[str]:
        """Return the node keys clockwise from position 0, ties by key."""
        return list(self._order)

    def replicas(self, file_name: str, count: int) -> list[str]:
        """Return the primary and the next count-1 distinct nodes clockwise.

        Fewer than `count` if the ring is smaller; [] for an empty ring. ValueError if count < 0.
        """
        if count < 0:
            raise ValueError(f"replica count must be >= 0, got {count}")
        if not self._order:
            return []
        start = bisect.bisect_left(self._points, (self.file_position(file_name), ""))
        return self._walk(start, min(count, len(self._order)))

    def primary(self, file_name: str) -> str | None:
        """Return the file's primary node, or None for an empty ring."""
        found = self.replicas(file_name, 1)
        return found[0] if found else None

    def successors(self, node: str, k: int) -> list[str]:
        """Return up to k distinct nodes clockwise after `node`, nearest first, never `node`.

        KeyError if `node` is not on the ring; likewise for `predecessors`.
        """
        return self._walk(self._index[node] + 1, self._clamp(k))

    def predecessors(self, node: str, k: int) -> list[str]:
        """Return up to k distinct nodes counter-clockwise before `node`, nearest first."""
        here, n = self._index[node], len(self._order)
        return [self._order[(here - step) % n] for step in range(1, self._clamp(k) + 1)]

    def without(self, node: str) -> Ring:
        """Return a ring without `node` (this same ring if it is absent)."""
        if node not in self._positions:
            return self
        rest = {key: pos for key, pos in self._positions.items() if key != node}
        return Ring.from_positions(rest, self._bits)

    def with_node(self, node: str) -> Ring:
        """Return a ring with `node` at its hashed position (this same ring if present)."""
        if node in self._positions:
            return self
        return Ring.from_positions(
            {**self._positions, node: ring_position(node, self._bits)}, self._bits
        )

    def _walk(self, start: int, count: int) -> list[str]:
        n = len(self._order)
        return [self._order[(start + step) % n] for step in range(count)]

    def _clamp(self, k: int) -> int:
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        return min(k, len(self._order) - 1)

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, node: object) -> bool:
        return node in self._positions

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ring):
            return NotImplemented
        return self._bits == other._bits and self._points == other._points

    def __hash__(self) -> int:
        return hash((self._bits, tuple(self._points)))

    def __repr__(self) -> str:
        inner = ", ".join(f"{node}@{pos}" for pos, node in self._points)
        return f"Ring(bits={self._bits}, [{inner}])"


def responsible_files(ring: Ring, node: str, file_names: Iterable[str], count: int) -> set[str]:
    """Return the names among `file_names` whose replica set on `ring` contains `node`."""
    return {name for name in file_names if node in ring.replicas(name, count)}


def placement_changes(
    old: Ring, new: Ring, file_names: Iterable[str], count: int
) -> dict[str, tuple[list[str], list[str]]]:
    """Map each file whose replica list differs between rings to (old_replicas, new_replicas).

    Files whose replicas are unchanged are left out. With every node keeping its position, an
    equal replica set implies an equal order, so this is also exactly the set of files whose
    replica *set* changed. Re-replication pulls new_replicas - old_replicas and drops the excess.
    """
    changes: dict[str, tuple[list[str], list[str]]] = {}
    for name in file_names:
        before, after = old.replicas(name, count), new.replicas(name, count)
        if before != after:
            changes[name] = (before, after)
    return changes
