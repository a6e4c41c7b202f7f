"""The shipped operators, and the traffic-signs record parsing they share.

Each shipped operator is a module here named as users name it (`grep`, `signs_select`,
`signs_by_category`, `count`) that defines `KIND` and `apply(keys, values, arg, state) -> Result`,
working on a whole batch at once; `stream.operators.load_operator` imports it by name. It
may also define `apply_lines(data, first_line, src, arg) -> Result` for a raw block of a
source's lines (the first stage), and `READS_VALUES = False` if it never looks at values
(then the stage before it sends keys only).

Record rule (the oracle's, bench/reference_apps.py): a line is a record when `csv.reader` with
`strict=True` reads it, after stripping a trailing CR/LF, as exactly NUM_FIELDS fields; any other
line is unparsable. A line that starts with HEADER_PREFIX is the header, which the signs operators
drop without counting it.

Speed (the engine's hot loop): `pick_fields` answers for a whole batch. A line holding none of
the characters csv treats specially (quote, CR, LF, NUL) and within csv's field size limit reads
exactly as `line.split(",")`; one with exactly two quotes that enclose one whole field reads as
its three pieces split at the quotes (most quoted lines of the traffic-signs data); only the
other lines go through `csv.reader`, in one call per batch. A malformed quoted line
either raises or swallows the line after it (fewer records than lines); either way the batch is
halved and retried, so one bad line costs a few re-reads and never spoils its neighbours.
"""

from __future__ import annotations

import csv
from operator import itemgetter

SHIPPED = ("grep", "signs_select", "signs_by_category", "count")

HEADER_PREFIX = "X,Y,OBJECTID,"
NUM_FIELDS = 20
OBJECTID, SIGN_TYPE, SIGN_POST, CATEGORY = 2, 3, 6, 8   # field indexes in a record


def without_header(values: list[str]) -> list[str]:
    """The values that are not the header line."""
    return [v for v in values if not v.startswith(HEADER_PREFIX)]


def pick_fields(lines: list[str], indexes: tuple[int, ...]) -> list[tuple[str, ...] | None]:
    """For each line, its record's fields at `indexes` (two or more), or None if unparsable."""
    pick = itemgetter(*indexes)
    limit = csv.field_size_limit()
    joined = "\n".join(lines)         # one scan for what makes a line special to csv
    if max(map(len, lines), default=0) <= limit and joined.count("\n") == len(lines) - 1 \
            and "\r" not in joined and "\0" not in joined:
        kinds = [v.count('"') for v in lines]     # 0: plain, 2: maybe one quoted field
    else:                                         # -1: csv decides
        kinds = [v.count('"') if len(v) <= limit and "\r" not in v and "\n" not in v
                 and "\0" not in v else -1 for v in lines]   # csv: NUL is text since 3.11
    one = [_one_quoted(v, indexes) if k == 2 else MISSING for v, k in zip(lines, kinds)]
    rest = [v for v, k, o in zip(lines, kinds, one) if k and o is MISSING]
    next_quoted = iter(_csv_fields(rest, pick)).__next__
    cut = max(indexes) + 1      # split no further than the last field picked
    return [(pick(v.split(",", cut)) if v.count(",") == NUM_FIELDS - 1 else None) if not k
            else (o if o is not MISSING else next_quoted())
            for v, k, o in zip(lines, kinds, one)]


MISSING = object()


def _one_quoted(line: str, indexes: tuple[int, ...]):
    """The fields at `indexes` of a line with exactly two quotes, when they enclose one
    field (at a field's start, a delimiter or the end after it): read as csv reads it,
    without csv. None if it is not NUM_FIELDS fields; MISSING when csv must decide."""
    pre, mid, post = line.split('"')
    if pre and pre[-1] != "," or post and post[0] != ",":
        return MISSING
    before = pre.count(",")                  # fields before the quoted one
    if before + 1 + post.count(",") != NUM_FIELDS:
        return None
    head, tail = pre.split(","), post.split(",")
    return tuple(head[i] if i < before else mid if i == before else tail[i - before]
                 for i in indexes)


def _csv_fields(lines: list[str], pick) -> list:
    """pick(record) or None for each line, reading the batch with one csv.reader if it can."""
    try:
        picked = [pick(r) if len(r) == NUM_FIELDS else None
                  for r in csv.reader(lines, strict=True)]
        if len(picked) == len(lines):   # every line was one record: all aligned
            return picked
    except csv.Error:
        pass
    if len(lines) == 1:
        return [None]
    half = len(lines) // 2
    return _csv_fields(lines[:half], pick) + _csv_fields(lines[half:], pick)

