"""Oracle for RainStorm's two classic traffic-signs applications, and an output checker.

  python bench/reference_apps.py expected {1|2} IN.csv ARG            print the expected rows
  python bench/reference_apps.py check {1|2} IN.csv ARG OUT_FILE      exit 0 if OUT_FILE is right

App 1 (`grep signs_select`, ARG = pattern): lines whose raw text contains ARG become the row
`OBJECTID,Sign_Type`. App 2 (`signs_by_category count`, ARG = Sign_Post value): records whose
parsed Sign_Post equals ARG are counted per Category; a Category with N such records yields the
rows `Category,1` .. `Category,N`, each exactly once. Both drop the header (any line starting
with HEADER_PREFIX) and lines that are not one well-formed 20-field CSV record. Rows are
formatted by csv.writer, quoted only where needed, as the engine writes them. Stdlib only.
"""
import csv
import io
import sys
from collections import Counter

HEADER_PREFIX = "X,Y,OBJECTID,"
NUM_FIELDS = 20
I_OBJECTID, I_SIGN_TYPE, I_SIGN_POST, I_CATEGORY = 2, 3, 6, 8


def parse(line: str) -> list:
    """One CSV record from one line (RFC 4180 quoting); ValueError if it is malformed."""
    try:
        return next(csv.reader([line.rstrip("\r\n")], strict=True))
    except csv.Error as e:
        raise ValueError(f"unparsable CSV line: {line[:60]!r}") from e


def format_row(key, value) -> str:
    """The CSV row `key,value`, quoted only where needed."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([key, value])
    return buf.getvalue()


def records(lines):
    """Parsed records of lines, skipping the header and unparsable or wrong-width lines."""
    for line in lines:
        record = _record(line)
        if record is not None:
            yield record


def _record(line: str):
    if line.startswith(HEADER_PREFIX):
        return None
    try:
        record = parse(line)
    except ValueError:
        return None
    return record if len(record) == NUM_FIELDS else None


def app1_lines(lines, pattern: str) -> Counter:
    """Multiset of App 1 output rows `OBJECTID,Sign_Type`."""
    kept = (line for line in lines if pattern in line)
    return Counter(format_row(r[I_OBJECTID], r[I_SIGN_TYPE]) for r in records(kept))


def app2_counts(lines, post: str) -> dict:
    """Category -> number of records whose Sign_Post equals post exactly."""
    return dict(Counter(r[I_CATEGORY] for r in records(lines) if r[I_SIGN_POST] == post))


def app2_expected_rows(lines, post: str) -> Counter:
    """Multiset of App 2 output rows: `Category,1` .. `Category,N` for each Category."""
    counts = app2_counts(lines, post)
    return Counter(format_row(cat, k) for cat, n in counts.items() for k in range(1, n + 1))


def expected_rows(app: int, in_path: str, arg: str) -> Counter:
    """The expected output multiset of App 1 or App 2 over the lines of in_path."""
    compute = {1: app1_lines, 2: app2_expected_rows}[app]
    with open(in_path, newline="", encoding="utf-8") as f:
        return compute(f, arg)


def output_rows(path: str) -> Counter:
    """Multiset of the non-empty lines of an output file."""
    with open(path, newline="", encoding="utf-8") as f:
        return Counter(line.rstrip("\r\n") for line in f if line.strip())


def verdict(expected: Counter, observed: Counter):
    """(ok, one line): OK, or MISMATCH with counts and an example of what differs."""
    missing, extra = expected - observed, observed - expected
    total_exp, total_obs = sum(expected.values()), sum(observed.values())
    if not missing and not extra:
        return True, f"OK {total_exp} rows"
    examples = ", ".join(f"{tag} {row!r}" for tag, diff in (("missing", missing), ("extra", extra))
                         for row in list(diff)[:1])
    return False, (f"MISMATCH expected {total_exp} rows, got {total_obs}: "
            f"{sum(missing.values())} missing, {sum(extra.values())} extra (e.g. {examples})")


USAGE = ("usage: reference_apps.py expected {1|2} IN.csv ARG\n"
         "       reference_apps.py check {1|2} IN.csv ARG OUT_FILE")
ARITY = {"expected": 4, "check": 5}


def main(argv) -> int:
    if not argv or ARITY.get(argv[0]) != len(argv) or argv[1] not in ("1", "2"):
        print(USAGE, file=sys.stderr)
        return 2
    cmd, app, in_path, arg, *out_path = argv
    expected = expected_rows(int(app), in_path, arg)
    if cmd == "expected":
        for row in sorted(expected.elements()):
            print(row)
        return 0
    ok, line = verdict(expected, output_rows(out_path[0]))
    print(f"app{app} {line}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
