"""How tuples find their task in the next stage.

Tuples are partitioned by a stable hash of their key (CRC-32, the same in every process;
Python's `hash` is salted per process), so every key of an aggregate lives in exactly one
task. Two cases let whole blocks move without touching each tuple:

- source tuples are keyed `SRC:LINE`, unique per tuple, so any function of the key is a
  valid partitioning; a source block goes whole to `route_block(block_id)`;
- a stateless operator (transform, filter) does not care which keys it sees, so a block
  bound for one is routed whole too.

Only a block bound for an aggregate is split tuple by tuple (`split_by_key`).
"""

from __future__ import annotations

import zlib


def stable_hash(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def stage_salt(stage: int, bid: str) -> str:
    """What block `bid` is routed by on its way into `stage`: each hop draws afresh."""
    return f"{bid}/{stage}"


def route_block(block_id: str, num_tasks: int) -> int:
    return stable_hash(block_id) % num_tasks


def split_by_key(keys: list[str], values: list[str], num_tasks: int) -> list[tuple[list, list]]:
    """One (keys, values) part per destination task, each in input order. A key repeats
    (an aggregate's keys are few): it is hashed once per call."""
    parts = [([], []) for _ in range(num_tasks)]
    part_of: dict[str, tuple[list, list]] = {}
    for key, value in zip(keys, values):
        part = part_of.get(key)
        if part is None:
            part = part_of[key] = parts[zlib.crc32(key.encode("utf-8")) % num_tasks]
        part[0].append(key)
        part[1].append(value)
    return parts
