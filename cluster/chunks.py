"""Iterables of byte chunks: the pieces every bulk payload moves in (connection.py)."""

from __future__ import annotations


def drain(chunks) -> int:
    """Consume `chunks` whose bytes are not wanted (a refused payload, a record already
    held), so the connection or record stream they come from stays in step; the bytes."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
    return total
