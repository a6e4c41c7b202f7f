"""Iterables of byte chunks: the pieces every bulk payload moves in (connection.py)."""

from __future__ import annotations


def drain(chunks) -> int:
    """Consume `chunks` whose bytes are not wanted (a refused payload, a record already
    held), so the connection or record stream they come from stays in step; the bytes."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
    return total


def split(chunks, size: int):
    """(the first `size` bytes of `chunks`, the rest): two iterators of chunks that must be
    read in that order, e.g. a state transfer's base and then its index rows. A chunk that
    straddles the cut is split without copying."""
    source, rest = iter(chunks), []

    def head():
        left = size
        while left:
            chunk = next(source, None)
            if chunk is None:
                return
            if len(chunk) > left:
                view = memoryview(chunk)
                rest.append(view[left:])
                yield view[:left]
                return
            left -= len(chunk)
            yield chunk

    def tail():
        yield from rest
        yield from source

    return head(), tail()
