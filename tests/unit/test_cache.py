"""Tests for hydfs.cache: LRU order, byte bounds, oversize files, counters."""

from __future__ import annotations

import pytest

from hydfs.cache import LruCache

pytestmark = pytest.mark.timeout(30)


def run(cache: LruCache, ops: list[tuple]) -> None:
    """Apply ("put", name, size) / ("get", name) / ("inv", name) steps to `cache`."""
    for op, name, *rest in ops:
        if op == "put":
            cache.put(name, (name, rest[0]), b"x" * rest[0])
        elif op == "get":
            cache.get(name)
        else:
            cache.invalidate(name)


@pytest.mark.parametrize(
    "capacity, ops, kept, size, evictions",
    [
        # Fits: nothing evicted.
        (10, [("put", "a", 4), ("put", "b", 6)], ["a", "b"], 10, 0),
        # Oldest goes first.
        (10, [("put", "a", 4), ("put", "b", 4), ("put", "c", 4)], ["b", "c"], 8, 1),
        # A get refreshes recency: b becomes the oldest.
        (10, [("put", "a", 4), ("put", "b", 4), ("get", "a"), ("put", "c", 4)], ["a", "c"], 8, 1),
        # Several small entries evicted for one large one.
        (10, [("put", "a", 3), ("put", "b", 3), ("put", "c", 3), ("put", "d", 9)], ["d"], 9, 3),
        # Exactly capacity is cached.
        (10, [("put", "a", 10)], ["a"], 10, 0),
        # Oversize is not cached and evicts nothing.
        (10, [("put", "a", 4), ("put", "big", 11)], ["a"], 4, 0),
        # Oversize replacement drops the stale entry.
        (10, [("put", "a", 4), ("put", "a", 11)], [], 0, 0),
        # Replacement adjusts size and is not an eviction.
        (10, [("put", "a", 4), ("put", "a", 8)], ["a"], 8, 0),
        # Growing a replacement evicts others, never itself.
        (10, [("put", "a", 4), ("put", "b", 4), ("put", "a", 9)], ["a"], 9, 1),
        # Invalidate frees the bytes.
        (10, [("put", "a", 4), ("put", "b", 4), ("inv", "a"), ("put", "c", 6)], ["b", "c"], 10, 0),
        # Empty data is cacheable.
        (10, [("put", "e", 0)], ["e"], 0, 0),
        # Capacity 0 disables caching.
        (0, [("put", "a", 0), ("put", "b", 1)], [], 0, 0),
    ],
)
def test_cache_eviction_table(
    capacity: int, ops: list[tuple], kept: list[str], size: int, evictions: int
) -> None:
    cache = LruCache(capacity)
    run(cache, ops)
    present = [name for name in ["a", "b", "c", "d", "e", "big"] if name in cache]
    assert sorted(present) == sorted(kept)
    assert len(cache) == len(kept)
    assert cache.size_bytes == size <= capacity
    assert cache.evictions == evictions


def test_get_returns_version_as_given() -> None:
    cache = LruCache(100)
    version = (1712345.5, "03", 7)
    assert cache.put("f", version, b"hello") is True
    got = cache.get("f")
    assert got is not None
    assert got[0] is version and got[1] == b"hello"


def test_counters() -> None:
    cache = LruCache(100)
    assert cache.get("f") is None
    cache.put("f", 1, b"abc")
    cache.get("f")
    cache.get("f")
    cache.get("g")
    assert (cache.hits, cache.misses, cache.evictions) == (2, 2, 0)
    assert "f" in cache and "g" not in cache
    assert (cache.hits, cache.misses) == (2, 2)   # `in` is not a use


def test_capacity_zero_always_misses() -> None:
    cache = LruCache(0)
    assert cache.put("f", 1, b"") is False
    assert cache.get("f") is None
    assert (len(cache), cache.misses, cache.hits) == (0, 1, 0)


def test_invalidate_and_clear() -> None:
    cache = LruCache(100)
    cache.put("a", 1, b"12345")
    cache.put("b", 1, b"123")
    cache.invalidate("a")
    cache.invalidate("missing")
    assert "a" not in cache and cache.size_bytes == 3
    assert cache.get("a") is None
    cache.clear()
    assert len(cache) == 0 and cache.size_bytes == 0
    assert cache.misses == 1 and cache.evictions == 0


def test_put_replaces_version() -> None:
    cache = LruCache(100)
    cache.put("f", 1, b"old")
    cache.put("f", 2, b"newer")
    assert cache.get("f") == (2, b"newer")
    assert cache.size_bytes == 5 and len(cache) == 1


def test_put_makes_entry_most_recent() -> None:
    cache = LruCache(6)
    cache.put("a", 1, b"12")
    cache.put("b", 1, b"12")
    cache.put("a", 2, b"12")            # re-put: a is now newest
    cache.put("c", 1, b"1234")          # needs 4 bytes: evicts b only
    assert "a" in cache and "b" not in cache and "c" in cache


def test_negative_capacity_rejected() -> None:
    with pytest.raises(ValueError):
        LruCache(-1)
