"""How an operator task ships a block's output tuples to the next stage: the payload of a
`stream.block` between operator tasks.

Tuples are (key, value) pairs of strings. Most carry no newline (keys, CSV lines, fields),
and for them the payload is text, with no per-tuple work in Python:

    enc "text", "n": N     the N keys, then the N values, each followed by "\\n" (UTF-8)

which `str.join` writes and `str.split` reads at C speed, about 10x faster than JSON for
lines of CSV (JSON escapes every quote). A block with a newline in some key or value goes as

    enc "json"             [[keys], [values]]

A source's blocks are raw lines of SRC (enc "lines", source_core.py), keyed by line number.
"""

from __future__ import annotations

import json

TEXT, JSON = "text", "json"


def encode(keys: list[str], values: list[str]) -> tuple[dict, bytes]:
    """(the message fields that say how, the payload) for the tuples."""
    n = len(keys)
    if n == 0:
        return {"enc": TEXT, "n": 0}, b""
    text = "\n".join(keys) + "\n" + "\n".join(values) + "\n"
    if text.count("\n") == 2 * n:         # no tuple holds a newline of its own
        return {"enc": TEXT, "n": n}, text.encode("utf-8")
    return {"enc": JSON}, json.dumps([keys, values], separators=(",", ":")).encode("utf-8")


def decode(message: dict, payload: bytes) -> tuple[list[str], list[str]]:
    """The (keys, values) of a block that `encode` made; ValueError if it is malformed."""
    if message.get("enc") == JSON:
        keys, values = json.loads(payload)
        if not isinstance(keys, list) or not isinstance(values, list) or \
                len(keys) != len(values):
            raise ValueError("a json block must be [keys, values] of one length")
        return keys, values
    if message.get("enc") != TEXT:
        raise ValueError(f"unknown block encoding {message.get('enc')!r}")
    n = int(message.get("n", -1))
    if n == 0 and not payload:
        return [], []
    parts = payload.decode("utf-8").split("\n")
    if n < 0 or len(parts) != 2 * n + 1 or parts[-1]:
        raise ValueError(f"a text block of {n} tuples has {len(parts) - 1} lines")
    return parts[:n], parts[n:2 * n]
