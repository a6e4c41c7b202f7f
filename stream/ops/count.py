"""`count` (aggregate by key): a running count per key, emitting (key, count) at each update.

The state of a key is its count so far (an int); the runtime owns and persists the state dict.
"""

from __future__ import annotations

from stream.operators import AGGREGATE, Result

KIND = AGGREGATE
READS_VALUES = False      # so the stage before sends it keys only (operator_core.py)


def apply(keys: list[str], values: list[str], arg: str, state: dict) -> Result:
    """For each tuple in order, count its key in state and emit (key, str(new count))."""
    counts = []
    for key in keys:
        n = state.get(key, 0) + 1
        state[key] = n
        counts.append(str(n))
    return Result(list(keys), counts)
