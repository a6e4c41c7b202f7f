"""Client-side LRU cache of whole HyDFS files, bounded in bytes.

Theory of operation (seed, "Client-Side Caching"): a client's `get` first looks here; on a miss
it fetches the file from a replica and `put`s it. Any append by this client `invalidate`s the
name, so a later get refetches and sees its own writes (read-my-writes). Entries are kept in
recency order; a `put` evicts least-recently-used entries until the new one fits.

Invariants:
- size_bytes == sum of len(data) over the entries, and size_bytes <= capacity_bytes.
- A file larger than the capacity is never cached; a `put` of one drops any older entry of that
  name, so the cache never returns a version older than one it was offered.
- capacity 0 disables the cache: `put` stores nothing and every `get` is a miss.
- `version` is opaque: it is stored and returned exactly as given.

Counters: `hits` and `misses` count `get` calls; `evictions` counts entries removed to make room
(not invalidations, clears or replacements of the same name).

This module is pure: it keeps bytes in memory and does no I/O, threading or timing; the caller
serialises access if it shares one cache between threads.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class LruCache:
    """A least-recently-used map name -> (version, data), bounded by total data bytes."""

    def __init__(self, capacity_bytes: int) -> None:
        """Create an empty cache holding at most `capacity_bytes` of data; ValueError if < 0."""
        if capacity_bytes < 0:
            raise ValueError(f"cache capacity must be >= 0 bytes, got {capacity_bytes}")
        self.capacity_bytes = capacity_bytes  # the byte budget, fixed for the cache's life
        self._entries: OrderedDict[str, tuple[Any, bytes]] = OrderedDict()  # oldest use first
        self._size = 0                        # sum of len(data) over _entries
        self.hits = 0                         # gets that found the name
        self.misses = 0                       # gets that did not
        self.evictions = 0                    # entries removed to make room for a put

    @property
    def size_bytes(self) -> int:
        """The total bytes of cached data."""
        return self._size

    def get(self, name: str) -> tuple[Any, bytes] | None:
        """Return (version, data) and mark the name most recently used, or None on a miss."""
        entry = self._entries.get(name)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(name)
        self.hits += 1
        return entry

    def put(self, name: str, version: Any, data: bytes) -> bool:
        """Cache `data` as the most recent entry for `name`; return whether it was cached.

        Replaces any older entry of the name. A file larger than the capacity is not cached
        (and the older entry is dropped). Evicts least-recently-used entries until it fits.
        """
        self.invalidate(name)
        if len(data) > self.capacity_bytes or self.capacity_bytes == 0:
            return False
        while self._size + len(data) > self.capacity_bytes:
            self._evict_oldest()
        self._entries[name] = (version, data)
        self._size += len(data)
        return True

    def invalidate(self, name: str) -> None:
        """Forget `name` if cached (e.g. after this client appends to it)."""
        entry = self._entries.pop(name, None)
        if entry is not None:
            self._size -= len(entry[1])

    def clear(self) -> None:
        """Forget every entry; the counters are kept."""
        self._entries.clear()
        self._size = 0

    def _evict_oldest(self) -> None:
        _, (_, data) = self._entries.popitem(last=False)
        self._size -= len(data)
        self.evictions += 1

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        """Whether `name` is cached; does not count as a use, hit or miss."""
        return name in self._entries

    def __repr__(self) -> str:
        return (
            f"LruCache({self._size}/{self.capacity_bytes} bytes, {len(self)} entries, "
            f"hits={self.hits}, misses={self.misses}, evictions={self.evictions})"
        )
