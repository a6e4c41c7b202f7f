"""`grep` (filter; arg: a string): passes the tuples whose value contains arg, unchanged.

The match is a case-sensitive substring test on the whole value; the header line is not special.
"""

from __future__ import annotations

from itertools import compress, repeat
from operator import contains

from stream.operators import FILTER, Result

KIND = FILTER


def apply_lines(data: bytes, first_line: int, src: str, arg: str) -> Result:
    """The same on a raw block of lines: only the matching lines are ever decoded, and the
    search runs over the whole block at C speed (most lines of a stream do not match)."""
    pattern = arg.encode("utf-8")
    keys, values = [], []
    if not pattern or b"\n" in pattern:
        return apply_text(data, first_line, src, arg)
    line, counted = first_line, 0
    hit = data.find(pattern)
    while hit >= 0:
        start = data.rfind(b"\n", 0, hit) + 1
        end = data.find(b"\n", hit)
        end = len(data) if end < 0 else end
        line += data.count(b"\n", counted, start)
        counted = start
        keys.append(f"{src}:{line}")
        values.append(data[start:end].decode("utf-8", errors="replace"))
        hit = data.find(pattern, end)
    return Result(keys, values)


def apply_text(data: bytes, first_line: int, src: str, arg: str) -> Result:
    """Patterns the byte search cannot handle (empty, or with a newline): line by line."""
    text = data.decode("utf-8", errors="replace")
    lines = text[:-1].split("\n") if text.endswith("\n") else (text.split("\n") if text else [])
    keys = [f"{src}:{first_line + i}" for i in range(len(lines))]
    return apply(keys, lines, arg, None)


def apply(keys: list[str], values: list[str], arg: str, state: None) -> Result:
    """The tuples whose value contains arg, in input order."""
    matches = list(map(contains, values, repeat(arg)))
    return Result(list(compress(keys, matches)), list(compress(values, matches)))
