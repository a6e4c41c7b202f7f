"""`signs_by_category` (filter; arg: a Sign_Post value): the records whose Sign_Post equals arg,
keyed by their Category, the value being the original line.

The header is dropped; an unparsable line (see stream.ops) is dropped and counted whatever its
Sign_Post, so the count does not depend on arg.
"""

from __future__ import annotations

from itertools import compress

from stream.operators import FILTER, Result
from stream.ops import CATEGORY, SIGN_POST, pick_fields, without_header

KIND = FILTER


def apply(keys: list[str], values: list[str], arg: str, state: None) -> Result:
    """(Category, line) of each record whose Sign_Post is exactly arg, in input order."""
    lines = without_header(values)
    fields = pick_fields(lines, (SIGN_POST, CATEGORY))
    matches = [f is not None and f[0] == arg for f in fields]
    return Result([f[1] for f in compress(fields, matches)], list(compress(lines, matches)),
                  dropped=fields.count(None))
