"""Tests for stream.operators: the shipped operators against the oracle (bench/reference_apps.py),
user Python operators, executable operators, and the errors bad operator specs give."""

from __future__ import annotations

import csv
import os
import random
import textwrap
from collections import Counter

import pytest

from bench import reference_apps as ref
from bench.gen_traffic_signs import HEADER, iter_lines
from stream.operators import (AGGREGATE, FILTER, TRANSFORM, OperatorError, Result, describe,
                              load_operator)
from stream.ops import pick_fields

pytestmark = pytest.mark.timeout(60)

GOOD = list(iter_lines(1, seed=3))[1]       # one well-formed record
BAD_LINES = [                               # each unparsable by the oracle's rule
    'a,"b',                                 # unterminated quote: must not swallow the next line
    GOOD.replace(",", ',"x"y,', 1),         # text after a closing quote (strict)
    ",".join(["f"] * 19),                   # well-formed CSV, 19 fields
    ",".join(["f"] * 21),
    "",
    "a\rb,c",                               # a line break inside an unquoted field
    '"' + GOOD,                             # the quote swallows commas up to the end
]
ODD_GOOD_LINES = [                          # well-formed despite appearances
    GOOD + "\r",                            # CRLF file: the CR is stripped, as the oracle does
    ",".join(['"a\nb"'] + ["No Outlet"] * 19),   # a line break inside quotes
    ",".join(['a"b'] + ["f"] * 19),         # a quote inside an unquoted field is text
    ",".join(['"a,""b"""'] + ["Punched Telespar"] * 19),
]


def unparsable(line: str) -> bool:
    try:
        return len(ref.parse(line)) != ref.NUM_FIELDS
    except ValueError:
        return True


def mixed_lines(n: int, seed: int) -> list[str]:
    """Generated lines (header first) with the hand-made ones and a second header scattered in."""
    lines = list(iter_lines(n, seed))
    rng = random.Random(seed)
    for extra in BAD_LINES + ODD_GOOD_LINES + [HEADER, "X,Y,OBJECTID,short"]:
        for _ in range(3):
            lines.insert(rng.randrange(1, len(lines) + 1), extra)
    lines.append('a,"b')                    # a malformed last line of the batch
    return lines


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return mixed_lines(3000, seed=11)


def keys_for(values: list[str]) -> list[str]:
    return [f"src:{i}" for i in range(1, len(values) + 1)]


def run(spec: str, arg: str, values: list[str], state: dict | None = None) -> Result:
    return load_operator(spec, arg).apply(keys_for(values), values, state)


def dropped_by_oracle(values: list[str]) -> int:
    return sum(1 for v in values if not v.startswith(ref.HEADER_PREFIX) and unparsable(v))


def write(tmp_path, name: str, text: str, executable: bool = False) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    if executable:
        path.chmod(0o755)
    return str(path)


# --- the record rule -----------------------------------------------------------------------

def test_hand_made_lines_are_classified_as_the_oracle_does():
    assert all(unparsable(line) for line in BAD_LINES)
    assert not any(unparsable(line) for line in ODD_GOOD_LINES)


def test_pick_fields_matches_the_oracle_line_by_line(lines):
    expected = [None if unparsable(v) else tuple(ref.parse(v)[i] for i in (2, 3, 8))
                for v in lines]
    assert pick_fields(lines, (2, 3, 8)) == expected


def test_pick_fields_matches_the_oracle_on_random_near_csv_lines():
    rng = random.Random(5)
    pieces = ["a", "b c", ",", '"', '""', "\r", "\n", "\0", ""]
    fields = [rng.choice(['""', '"x,y"', '"q""q"', "p", ""]) for _ in range(20)]
    cases = []
    for _ in range(3000):
        line = ",".join(rng.choice(fields) for _ in range(rng.choice([19, 20, 20, 20, 21])))
        for _ in range(rng.randrange(3)):
            at = rng.randrange(len(line) + 1)
            line = line[:at] + rng.choice(pieces) + line[at:]
        cases.append(line)
    expected = [None if unparsable(v) else tuple(ref.parse(v)[i] for i in (0, 19))
                for v in cases]
    assert pick_fields(cases, (0, 19)) == expected
    assert 0 < expected.count(None) < len(cases)


def test_a_value_with_a_newline_inside_is_unparsable_as_for_the_oracle():
    """Regression (review of issue 14's fast path): a value holding a newline (a tuple from
    an upstream operator) with 19 commas and no quote was split as a record, in a block
    short enough for the block-wide check, and in a long one, whose check dropped the
    newline test; csv, and the oracle, refuse it."""
    line = ",".join(["a"] * 10) + ",\n" + ",".join(["b"] * 10)
    assert line.count(",") == ref.NUM_FIELDS - 1 and unparsable(line)
    assert pick_fields([line], (0, 19)) == [None]
    assert pick_fields(["x" * (csv.field_size_limit() + 1), line], (0, 19)) == [None, None]


@pytest.mark.parametrize("indexes", [(0, 19), (5, 6), (6, 8), (2, 3), (8, 9, 16)])
def test_lines_with_one_quoted_field_are_read_as_csv_reads_them(indexes):
    """The two-quote fast path (stream/ops, most quoted traffic-signs lines): the same
    fields as csv, or None, wherever the quotes fall, and csv decides the odd cases."""
    rng = random.Random(sum(indexes))
    inside = ["x,y", "", " a ", "a,b,c", "é,\u2028"]
    cases = []
    for _ in range(3000):
        fields = [rng.choice(["p", "", "q r"]) for _ in range(rng.choice([19, 20, 20, 21]))]
        at = rng.randrange(len(fields))
        fields[at] = '"' + rng.choice(inside) + '"'
        line = ",".join(fields)
        if rng.random() < 0.3:              # a quote off a field's edge, or text after it
            i = line.index('"')
            j = rng.choice([i, line.index('"', i + 1) + 1])
            line = line[:j] + rng.choice([" ", "z", ""]) + line[j:]
        cases.append(line)
    expected = [None if unparsable(v) else tuple(ref.parse(v)[i] for i in indexes)
                for v in cases]
    assert pick_fields(cases, indexes) == expected
    assert 0 < expected.count(None) < len(cases)


# --- shipped operators against the oracle --------------------------------------------------

def test_grep_passes_matching_tuples_unchanged_header_included(lines):
    keys = keys_for(lines)
    result = load_operator("grep", "OBJECTID").apply(keys, lines)
    expected = [(k, v) for k, v in zip(keys, lines) if "OBJECTID" in v]
    assert list(zip(result.keys, result.values)) == expected
    assert result.values[0] == HEADER and result.dropped == 0


def test_grep_is_a_case_sensitive_substring_filter():
    result = run("grep", "No Outlet", ["a No Outlet b", "no outlet", "No Outle"])
    assert result.keys == ["src:1"] and result.values == ["a No Outlet b"]


def test_signs_select_gives_objectid_and_sign_type_and_counts_unparsable_lines(lines):
    result = run("signs_select", "", lines)
    expected = [(r[ref.I_OBJECTID], r[ref.I_SIGN_TYPE]) for r in ref.records(lines)]
    assert list(zip(result.keys, result.values)) == expected
    assert result.dropped == dropped_by_oracle(lines) == 3 * len(BAD_LINES) + 1
    assert result.errors == 0


def test_signs_select_drops_the_header_without_counting_it():
    result = run("signs_select", "", [HEADER, GOOD])
    assert result.keys == [ref.parse(GOOD)[2]] and result.dropped == 0


def test_app1_grep_then_signs_select_equals_the_oracle(lines):
    grep = run("grep", "No Outlet", lines)
    select = load_operator("signs_select", "").apply(grep.keys, grep.values)
    rows = Counter(ref.format_row(k, v) for k, v in zip(select.keys, select.values))
    assert rows == ref.app1_lines(lines, "No Outlet") and rows


def test_signs_by_category_keeps_exact_sign_post_matches_keyed_by_category(lines):
    post = "Punched Telespar"
    result = run("signs_by_category", post, lines)
    expected = [(ref.parse(v)[ref.I_CATEGORY], v) for v in lines
                if not v.startswith(ref.HEADER_PREFIX) and not unparsable(v)
                and ref.parse(v)[ref.I_SIGN_POST] == post]
    assert list(zip(result.keys, result.values)) == expected
    assert result.dropped == dropped_by_oracle(lines)
    assert not any("Breakaway" in v for v in result.values)


def test_app2_signs_by_category_then_count_equals_the_oracle(lines):
    post = "Punched Telespar"
    selected = run("signs_by_category", post, lines)
    count = load_operator("count", "")
    state: dict = {}
    half = len(selected.keys) // 2      # two batches share the state
    rows = Counter()
    for lo, hi in ((0, half), (half, len(selected.keys))):
        out = count.apply(selected.keys[lo:hi], selected.values[lo:hi], state)
        rows.update(ref.format_row(k, v) for k, v in zip(out.keys, out.values))
    assert rows == ref.app2_expected_rows(lines, post)
    assert state == ref.app2_counts(lines, post)


def test_count_updates_state_in_place_and_emits_running_counts():
    count = load_operator("count", "")
    state = {"a": 5}
    result = count.apply(["a", "b", "a"], ["x", "y", "z"], state)
    assert (result.keys, result.values) == (["a", "b", "a"], ["6", "1", "7"])
    assert state == {"a": 7, "b": 1}
    assert count.stateful and count.kind == AGGREGATE


def test_shipped_kinds_and_descriptions():
    kinds = {name: load_operator(name, "").kind
             for name in ("grep", "signs_select", "signs_by_category", "count")}
    assert kinds == {"grep": FILTER, "signs_select": TRANSFORM, "signs_by_category": FILTER,
                     "count": AGGREGATE}
    assert describe("grep") == "grep (shipped filter)"


def test_apply_checks_its_call():
    with pytest.raises(ValueError, match="state"):
        load_operator("count", "").apply(["a"], ["x"])
    with pytest.raises(ValueError, match="state"):
        load_operator("grep", "").apply(["a"], ["x"], {})
    with pytest.raises(ValueError, match="keys"):
        load_operator("grep", "").apply(["a"], [])
    assert load_operator("count", "").apply([], [], {}) == Result([], [])


# --- user Python operators -----------------------------------------------------------------

def test_python_transform_counts_errors_and_processes_the_rest(tmp_path):
    path = write(tmp_path, "swap.py", """
        KIND = "transform"

        def process(key, value, arg):
            if value == "boom":
                raise ValueError("no boom\\nplease")
            return value, len(key + arg)
    """)
    op = load_operator(path, "!")
    result = op.apply(["k1", "k2", "k3", "k4"], ["a", "boom", "c", "boom"])
    assert (result.keys, result.values) == (["a", "c"], ["3", "3"])
    assert result.errors == 2
    assert result.first_error == "on key 'k2': ValueError: no boom please"
    assert op.kind == TRANSFORM and not op.stateful


def test_python_transform_returning_none_is_an_error(tmp_path):
    path = write(tmp_path, "none.py", 'KIND = "transform"\ndef process(k, v, a):\n  return None\n')
    result = load_operator(path, "").apply(["k"], ["v"])
    assert result.keys == [] and result.errors == 1
    assert "expected (key, value)" in result.first_error


def test_python_filter_drops_on_none(tmp_path):
    path = write(tmp_path, "keep.py", """
        KIND = "filter"

        def process(key, value, arg):
            return (key, value.upper()) if arg in value else None
    """)
    result = load_operator(path, "x").apply(["1", "2", "3"], ["ax", "b", "x"])
    assert (result.keys, result.values, result.errors) == (["1", "3"], ["AX", "X"], 0)
    assert describe(path) == f"{path} (Python filter)"


def test_python_aggregate_owns_nothing_but_its_returned_state(tmp_path):
    path = write(tmp_path, "total.py", """
        KIND = "aggregate"

        def process(key, value, arg, state):
            total = (state or 0) + int(value)
            return total, f"{arg}{total}"
    """)
    op = load_operator(path, "=")
    state = {"a": 10}
    result = op.apply(["a", "b", "a", "b"], ["1", "2", "oops", "3"], state)
    assert (result.keys, result.values) == (["a", "b", "b"], ["=11", "=2", "=5"])
    assert state == {"a": 11, "b": 5}
    assert result.errors == 1 and result.first_error.startswith("on key 'a': ValueError")
    assert op.stateful


BATCHED = """
    KIND = "{kind}"

    def process(key, value, arg):
        return key, "each:" + value

    def process_batch(keys, values, arg):
        if "bad" in values:
            raise RuntimeError("batch failed")
        out = [(k, "batch:" + v) if v else None for k, v in zip(keys, values)]
        return out[:-1] if "short" in values else out
"""


def test_process_batch_is_used_when_it_answers(tmp_path):
    op = load_operator(write(tmp_path, "b.py", BATCHED.format(kind="filter")), "")
    result = op.apply(["1", "2", "3"], ["a", "", "c"])
    assert (result.keys, result.values) == (["1", "3"], ["batch:a", "batch:c"])


@pytest.mark.parametrize("poison", ["bad", "short"])
def test_a_failed_process_batch_is_redone_with_process(tmp_path, poison):
    op = load_operator(write(tmp_path, "b.py", BATCHED.format(kind="filter")), "")
    result = op.apply(["1", "2"], ["a", poison])
    assert (result.keys, result.values) == (["1", "2"], ["each:a", "each:" + poison])
    assert result.errors == 0


def test_a_transform_batch_answering_none_is_redone_with_process(tmp_path):
    op = load_operator(write(tmp_path, "b.py", BATCHED.format(kind="transform")), "")
    result = op.apply(["1", "2"], ["a", ""])
    assert result.values == ["each:a", "each:"]


def test_relative_paths_resolve_against_cwd_and_modules_are_per_load(tmp_path):
    write(tmp_path, "n.py", """
        KIND = "transform"
        calls = []

        def process(key, value, arg):
            calls.append(value)
            return key, str(len(calls))
    """)
    first, second = (load_operator("n.py", "", cwd=str(tmp_path)) for _ in range(2))
    assert first.apply(["k"], ["v"]).values == ["1"]
    assert second.apply(["k"], ["v"]).values == ["1"]     # its own module state


# --- bad specs -----------------------------------------------------------------------------

BAD_SPECS = [
    ("nosuch", None, "unknown operator 'nosuch': not one of grep, signs_select"),
    ("missing.py", None, "no such file"),
    ("kind.py", 'KIND = "map"\ndef process(k, v, a):\n  return k, v\n',
     "KIND must be one of transform, filter, aggregate .not 'map'."),
    ("nokind.py", "def process(k, v, a):\n  return k, v\n", "KIND must be one of .* has none"),
    ("noproc.py", 'KIND = "filter"\n', r"no process\(key, value, arg\) function"),
    ("arity.py", 'KIND = "aggregate"\ndef process(k, v, a):\n  return 0, v\n',
     r"process must accept \(key, value, arg, state\)"),
    ("aggbatch.py", 'KIND = "aggregate"\ndef process(k, v, a, s):\n  return 0, v\n'
                    "def process_batch(ks, vs, a):\n  return []\n", "not aggregates"),
    ("syntax.py", "KIND = (\n", "failed to load: SyntaxError"),
    ("raises.py", "import no_such_module_here\n", "failed to load: ModuleNotFoundError"),
    ("plain.txt", "not a program\n", r"neither a Python file \(\*\.py\) nor executable"),
]


@pytest.mark.parametrize("name, text, reason", BAD_SPECS, ids=[s[0] for s in BAD_SPECS])
def test_bad_specs_give_a_clear_operator_error(tmp_path, name, text, reason):
    if text is not None:
        write(tmp_path, name, text)
    with pytest.raises(OperatorError, match=reason) as info:
        load_operator(name, "", cwd=str(tmp_path))
    assert "\n" not in str(info.value)


# --- executable operators ------------------------------------------------------------------

UPPER = """\
    #!/usr/bin/env python3
    import json, os, sys
    with open(sys.argv[0] + ".pid", "w") as f:
        f.write(str(os.getpid()))
    for line in sys.stdin:
        b = json.loads(line)
        out = [[k, v.upper() + sys.argv[1]] if v else None for k, v in zip(b["keys"], b["values"])]
        print(json.dumps({"out": out}), flush=True)
"""


def test_executable_filter_runs_one_process_until_closed(tmp_path):
    path = write(tmp_path, "upper", UPPER, executable=True)
    op = load_operator("upper", "!", cwd=str(tmp_path))
    assert (op.kind, op.description) == (FILTER, "upper (executable filter)")
    assert op.apply([], []) == Result([], [])      # no batch, no process
    assert not os.path.exists(path + ".pid")
    first = op.apply(["1", "2", "3"], ["a,b", "", "ü"])
    assert (first.keys, first.values) == (["1", "3"], ["A,B!", "Ü!"])
    pid = int(open(path + ".pid").read())
    assert op.apply(["4"], ["d"]).values == ["D!"]
    assert int(open(path + ".pid").read()) == pid   # the same process
    op.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    op.close()                                       # closing twice is harmless


@pytest.mark.parametrize("script, reason", [
    ("#!/bin/sh\necho cannot work >&2\nexit 3\n", "exited with status 3; stderr: cannot work"),
    ("#!/bin/sh\nread line\necho hello\n", "answered garbage .not JSON: 'hello"),
    ("#!/bin/sh\nread line\necho '{\"out\": []}'\n", "answered garbage .expected"),
    ("#!/bin/sh\nread line\necho '{\"out\": [[1, 2]]}'\n", "neither .key, value. strings"),
], ids=["exits", "not-json", "wrong-count", "not-strings"])
def test_a_failing_executable_gives_operator_error(tmp_path, script, reason):
    write(tmp_path, "bad", script, executable=True)
    op = load_operator("bad", "", cwd=str(tmp_path))
    with pytest.raises(OperatorError, match=reason) as info:
        op.apply(["k"], ["v"])
    assert str(info.value).startswith("operator bad: ") and "\n" not in str(info.value)
    op.close()


@pytest.mark.parametrize("pattern", ["Stop", "No Outlet", "\u00e9", "", "a\nb", "X,Y,OBJECTID"])
def test_grep_on_a_raw_block_equals_grep_on_its_lines(pattern):
    from bench.gen_traffic_signs import iter_lines
    lines = list(iter_lines(3000)) + ["caf\u00e9 Stop", "", "last line without newline Stop"]
    data = ("\n".join(lines)).encode("utf-8")
    op = load_operator("grep", pattern)
    keys = [f"src:{100 + i}" for i in range(len(lines))]
    slow = op.apply(keys, lines)
    fast = op.apply_lines(data, 100, "src")
    assert (fast.keys, fast.values) == (slow.keys, slow.values)
    assert load_operator("count", "").apply_lines(data, 1, "src") is None
