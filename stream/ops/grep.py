"""`grep` (filter; arg: a string): passes the tuples whose value contains arg, unchanged.

The match is a case-sensitive substring test on the whole value; the header line is not special.
"""

from __future__ import annotations

from itertools import compress, repeat
from operator import contains

from stream.operators import FILTER, Result

KIND = FILTER


def apply(keys: list[str], values: list[str], arg: str, state: None) -> Result:
    """The tuples whose value contains arg, in input order."""
    matches = list(map(contains, values, repeat(arg)))
    return Result(list(compress(keys, matches)), list(compress(values, matches)))
