"""`signs_select` (transform): a traffic-signs line becomes (OBJECTID, Sign_Type).

The header is dropped; an unparsable line (see stream.ops) is dropped and counted.
"""

from __future__ import annotations

from stream.operators import TRANSFORM, Result
from stream.ops import OBJECTID, SIGN_TYPE, pick_fields, without_header

KIND = TRANSFORM


def apply(keys: list[str], values: list[str], arg: str, state: None) -> Result:
    """(OBJECTID, Sign_Type) of each record, in input order; arg is ignored."""
    lines = without_header(values)
    records = [f for f in pick_fields(lines, (OBJECTID, SIGN_TYPE)) if f is not None]
    return Result([f[0] for f in records], [f[1] for f in records],
                  dropped=len(lines) - len(records))
