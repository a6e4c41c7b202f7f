"""Cutting a source file into partitions and blocks at line boundaries.

The leader splits HYDFS_SRC into NUM_TASKS byte ranges of about equal size, each starting at
the beginning of a line, and counts the lines before each so that a source task knows the
1-based line number of its first line. A source task cuts its range into blocks of about
`BLOCK_BYTES`, again at line ends. Block numbers are deterministic, so a block id
`"<partition>:<block number>"` names the same lines after any restart: the exactly-once
bookkeeping downstream is per block, and a block's tuples keep their `SRC:LINE` keys.
"""

from __future__ import annotations

from dataclasses import dataclass

BLOCK_BYTES = 1 << 20
MIN_BLOCK_BYTES = 64 << 10


def block_bytes_for(size: int, partitions: int) -> int:
    """Blocks of up to 1 MiB, but at least ~16 per partition for a small file, so that
    small jobs still stream (and show progress, and recover) block by block."""
    return max(MIN_BLOCK_BYTES, min(BLOCK_BYTES, size // (partitions * 16) + 1))


@dataclass(frozen=True)
class Partition:
    index: int
    offset: int          # byte offset of its first line in the file
    length: int          # bytes, ending after a newline (or at the end of the file)
    first_line: int      # 1-based number of its first line

    def to_wire(self) -> dict:
        return {"index": self.index, "offset": self.offset, "length": self.length,
                "first_line": self.first_line}

    @classmethod
    def from_wire(cls, d: dict) -> "Partition":
        return cls(int(d["index"]), int(d["offset"]), int(d["length"]), int(d["first_line"]))


def plan_partitions(chunks, size: int, count: int, follow: bool = False) -> list[Partition]:
    """Partitions of a file given as an iterable of byte chunks (read once, in order).

    Partition i starts after the first line end at or after byte size*i/count. With
    `follow`, a last line without a newline goes to the last partition whatever its length:
    its source follows SRC, and the next append may finish that line.
    """
    targets = [size * i // count for i in range(1, count)]
    cuts, lines_before = [0], [0]
    pos = lines = last_end = 0
    for chunk in chunks:
        counted = 0                    # lines of this chunk are counted up to here
        while len(cuts) <= len(targets):
            target = targets[len(cuts) - 1]
            if target >= pos + len(chunk):
                break
            end = chunk.find(b"\n", max(counted, target - pos))
            if end < 0:
                break                  # that line ends in a later chunk
            lines += chunk.count(b"\n", counted, end + 1)
            counted = end + 1
            cuts.append(pos + counted)
            lines_before.append(lines)
        lines += chunk.count(b"\n", counted)
        if (nl := chunk.rfind(b"\n")) >= 0:
            last_end = pos + nl + 1
        pos += len(chunk)
    while len(cuts) < count:           # targets past the last line end
        cuts.append(size)
        lines_before.append(lines)
    if follow:          # the partitions cut at the end start at the unfinished line instead
        cuts = [min(c, last_end) for c in cuts]          # (their lines_before: all lines)
    cuts.append(size)
    return [Partition(i, cuts[i], cuts[i + 1] - cuts[i], lines_before[i] + 1)
            for i in range(count)]


@dataclass(frozen=True)
class Segment:
    """One partition's bounds and (if counted) its lines, cut on its own (`cut_segment`)."""
    start: int
    end: int
    lines: int


def segment_target(size: int, count: int, index: int) -> int:
    """Where partition `index` of `count` is aimed to start in a `size`-byte file."""
    return size * index // count


def cut_segment(chunks, size: int, count: int, index: int, count_lines: bool) -> Segment:
    """Partition `index` of `count`, cut from the file's bytes from its target on (`chunks`,
    read in order and no further than its end), on its own, so that the partitions of a big
    file are cut in parallel: it starts after the first line end at or after its target (at
    0 for the first), and ends after the first at or after the next one's (at `size` for
    the last). `count_lines`: count its lines (the last partition's are never needed).
    `join_segments` checks that these are plan_partitions' cuts."""
    offset = segment_target(size, count, index)
    start = 0 if index == 0 else None
    end = size if index == count - 1 else None
    ends_at = segment_target(size, count, index + 1)
    lines = 0
    for chunk in chunks:
        at = 0
        if start is None:
            nl = chunk.find(b"\n")
            if nl >= 0:
                start, at = offset + nl + 1, nl + 1
        if start is not None and end is not None:
            break                                  # the last partition: its start is all
        if start is not None:
            nl = chunk.find(b"\n", max(ends_at - offset, at))
            if nl >= 0:
                end = offset + nl + 1
                lines += chunk.count(b"\n", at, nl + 1) if count_lines else 0
                break
            lines += chunk.count(b"\n", at) if count_lines else 0
        offset += len(chunk)
    return Segment(size if start is None else start, size if end is None else end, lines)


def join_segments(segments: list[Segment], size: int) -> list[Partition] | None:
    """The partitions from their segments, or None where they are not plan_partitions'
    (a line that spans a partition's target: only the sequential cut decides there)."""
    count = len(segments)
    for i in range(count - 1):
        if segments[i].end != segments[i + 1].start or \
                segments[i].start > segment_target(size, count, i + 1):
            return None
    parts, line = [], 1
    for i, seg in enumerate(segments):
        parts.append(Partition(i, seg.start, seg.end - seg.start, line))
        line += seg.lines
    return parts


def cut_blocks(data: bytes, final: bool, limit: int = BLOCK_BYTES,
               flush: bool = False) -> tuple[list[bytes], bytes]:
    """Whole-line blocks of about `limit` bytes from `data`; returns (blocks, leftover).

    A block is cut only once `limit` bytes are there, so the cuts depend on the bytes alone,
    not on the pieces they arrive in. With `flush` (the end of a batch a following source
    logged), the complete lines left over become a block too; with `final` also a last
    line without a newline.
    """
    blocks, start = [], 0
    while len(data) - start >= limit:
        end = data.rfind(b"\n", start, start + limit)
        if end < 0:
            end = data.find(b"\n", start + limit)
            if end < 0:
                break
        blocks.append(data[start:end + 1])
        start = end + 1
    rest = data[start:]
    if final and rest:
        blocks.append(rest)
        rest = b""
    elif flush and (end := rest.rfind(b"\n")) >= 0:
        blocks.append(rest[:end + 1])
        rest = rest[end + 1:]
    return blocks, rest


def block_lines(block: bytes) -> list[str]:
    """The lines of a block, without line ends."""
    text = block.decode("utf-8", errors="replace")
    if text.endswith("\n"):
        text = text[:-1]
    return text.split("\n") if text else []
