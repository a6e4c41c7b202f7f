"""Tests for bench.gen_traffic_signs (the data generator) and bench.reference_apps (the oracle)."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench import gen_traffic_signs as gen
from bench import reference_apps as ref

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]
HEADER = ("X,Y,OBJECTID,Sign_Type,Size_,Supplement,Sign_Post,Year_Insta,Category,Notes,"
          "MUTCD,Ownership,FACILITYID,Schools,Location_Adjusted,Replacement_Zone,"
          "Sign_Text,Set_ID,FieldVerifiedDate,GlobalID")
N = 10_000


@pytest.fixture(scope="module")
def records_10k() -> list[str]:
    """The 10k-record lines (header excluded) for the default seed."""
    return list(gen.iter_lines(N))[1:]


@pytest.fixture(scope="module")
def parsed_10k(records_10k) -> list[list[str]]:
    return [ref.parse(line) for line in records_10k]


def share(count: int) -> float:
    return count / N


def make_line(**fields) -> str:
    """A traffic-signs line with the given fields set by name and the others empty."""
    names = HEADER.split(",")
    values = [fields.pop(name, "") for name in names]
    assert not fields, f"unknown fields {fields}"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(values)
    return buf.getvalue()


# ---------------------------------------------------------------- generator


def test_header_is_the_interface_header(tmp_path):
    path = tmp_path / "t.csv"
    gen.write_csv(3, path)
    assert gen.HEADER == HEADER
    assert path.read_text().splitlines()[0] == HEADER
    assert next(gen.iter_lines(0)) == HEADER


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    gen.write_csv(500, a, seed=7)
    gen.write_csv(500, b, seed=7)
    gen.write_csv(500, c, seed=8)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_smaller_file_is_a_prefix_of_larger_file(tmp_path):
    small, large = tmp_path / "s.csv", tmp_path / "l.csv"
    gen.write_csv(300, small)
    gen.write_csv(1000, large)
    small_bytes = small.read_bytes()
    assert large.read_bytes().startswith(small_bytes)
    assert small_bytes.count(b"\n") == 301


def test_iter_lines_matches_file_bytes(tmp_path):
    path = tmp_path / "t.csv"
    gen.write_csv(1000, path, seed=3)
    text = "\n".join(gen.iter_lines(1000, seed=3)) + "\n"
    assert path.read_bytes() == text.encode("utf-8")


def test_cli_writes_the_same_file(tmp_path):
    via_cli, via_api = tmp_path / "cli.csv", tmp_path / "api.csv"
    subprocess.run([sys.executable, "bench/gen_traffic_signs.py", "200", str(via_cli),
                    "--seed", "5"], cwd=ROOT, check=True)
    gen.write_csv(200, via_api, seed=5)
    assert via_cli.read_bytes() == via_api.read_bytes()


def test_every_record_parses_to_20_fields(records_10k, parsed_10k):
    assert all(line and "\r" not in line for line in records_10k)
    assert {len(r) for r in parsed_10k} == {20}
    assert [r[ref.I_OBJECTID] for r in parsed_10k] == [str(i) for i in range(1, N + 1)]


def test_key_fields_never_empty_nor_quoted(parsed_10k):
    for r in parsed_10k:
        for value in (r[ref.I_OBJECTID], r[ref.I_SIGN_TYPE], r[ref.I_CATEGORY]):
            assert value and "," not in value and '"' not in value


def test_expected_sign_types_and_categories_occur(parsed_10k):
    types = {r[ref.I_SIGN_TYPE] for r in parsed_10k}
    categories = {r[ref.I_CATEGORY] for r in parsed_10k}
    assert {"Stop", "Stop Ahead", "Bus Stop", "No Outlet"} <= types
    assert {"Regulatory", "Warning", "Guide", "Parking", "School", "Custom"} <= categories


def test_quoted_commas_and_doubled_quotes_occur(records_10k, parsed_10k):
    assert share(sum('""' in line for line in records_10k)) > 0.02
    supplements_with_comma = sum("," in r[5] for r in parsed_10k)
    notes_with_quote = sum('"' in r[9] for r in parsed_10k)
    assert share(supplements_with_comma) > 0.02
    assert notes_with_quote > 0


def test_naive_split_is_wrong_on_a_good_share(records_10k, parsed_10k):
    too_many = sum(len(line.split(",")) != 20 for line in records_10k)
    wrong_post = sum(line.split(",")[ref.I_SIGN_POST] != r[ref.I_SIGN_POST]
                     for line, r in zip(records_10k, parsed_10k))
    assert 0.15 < share(too_many) < 0.5
    assert 0.02 < share(wrong_post) < 0.2


@pytest.mark.parametrize("pattern, low, high", [("Stop", 0.10, 0.30), ("No Outlet", 0.01, 0.08)])
def test_grep_patterns_select_a_plausible_share(records_10k, pattern, low, high):
    assert low < share(sum(pattern in line for line in records_10k)) < high


def test_punched_telespar_selects_a_plausible_share(records_10k, parsed_10k):
    post = "Punched Telespar"
    exact = sum(r[ref.I_SIGN_POST] == post for r in parsed_10k)
    raw = sum(post in line for line in records_10k)
    assert 0.35 < share(exact) < 0.5
    assert raw > exact, "raw-text matching must over-count, so the exact test matters"


def test_global_ids_are_unique_guids(parsed_10k):
    ids = [r[19] for r in parsed_10k]
    assert len(set(ids)) == N
    assert all(len(g) == 38 and g[0] == "{" and g[-1] == "}" for g in ids)


# ---------------------------------------------------------------- oracle


def test_parse_handles_quotes_and_rejects_malformed_lines():
    assert ref.parse('1,"a, b","say ""hi"""\n') == ["1", "a, b", 'say "hi"']
    with pytest.raises(ValueError):
        ref.parse('1,"unterminated')
    with pytest.raises(ValueError):
        ref.parse('1,"a"b,2')


def test_format_row_quotes_only_where_needed():
    assert ref.format_row("17", "Stop") == "17,Stop"
    assert ref.format_row("18", 'Odd, "sign"') == '18,"Odd, ""sign"""'
    assert ref.format_row("Guide", 3) == "Guide,3"


def test_app1_drops_header_and_unparsable_lines():
    lines = [
        HEADER,
        make_line(OBJECTID="1", Sign_Type="Stop", Category="Regulatory"),
        make_line(OBJECTID="2", Sign_Type="Yield", Notes="Near Stop bar, moved"),
        make_line(OBJECTID="3", Sign_Type="Yield", Sign_Text="STOP"),
        '4,"Stop,unterminated',
        "5,Stop,too,few,fields",
    ]
    assert ref.app1_lines(lines, "Stop") == Counter({"1,Stop": 1, "2,Yield": 1})
    assert ref.app1_lines(lines, "OBJECTID") == Counter()


def test_app1_counts_duplicate_rows():
    line = make_line(OBJECTID="9", Sign_Type="Bus Stop")
    assert ref.app1_lines([line, line + "\n"], "Stop") == Counter({"9,Bus Stop": 2})


def test_app2_uses_the_parsed_sign_post():
    post = "Punched Telespar"
    lines = [
        HEADER + "\n",
        make_line(OBJECTID="1", Sign_Post=post, Category="Regulatory"),
        make_line(OBJECTID="2", Supplement="MON-FRI, 7AM-6PM", Sign_Post=post, Category="Parking"),
        make_line(OBJECTID="3", Sign_Post=post, Category="Parking"),
        make_line(OBJECTID="4", Sign_Post="Wood", Notes="Moved to Punched Telespar",
                  Category="Guide"),
        make_line(OBJECTID="5", Sign_Post=post + " (Breakaway)", Category="Guide"),
        '6,"Punched Telespar',
    ]
    assert ref.app2_counts(lines, post) == {"Regulatory": 1, "Parking": 2}
    assert ref.app2_expected_rows(lines, post) == Counter(
        {"Regulatory,1": 1, "Parking,1": 1, "Parking,2": 1})


def test_oracle_agrees_with_hand_computation_on_generated_data(records_10k, parsed_10k):
    post = "Punched Telespar"
    expected = Counter(r[ref.I_CATEGORY] for r in parsed_10k if r[ref.I_SIGN_POST] == post)
    assert ref.app2_counts([HEADER, *records_10k], post) == dict(expected)
    app1 = ref.app1_lines([HEADER, *records_10k], "No Outlet")
    assert sum(app1.values()) == sum("No Outlet" in line for line in records_10k)


# ---------------------------------------------------------------- check CLI


def run_ref(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "bench/reference_apps.py", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True)


@pytest.fixture(scope="module")
def signs_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("signs") / "signs.csv"
    gen.write_csv(2000, path)
    return path


@pytest.mark.parametrize("app, arg", [(1, "Stop"), (1, "No Outlet"), (2, "Punched Telespar")])
def test_check_accepts_correct_and_rejects_missing_or_doubled_rows(signs_csv, tmp_path, app, arg):
    expected = run_ref("expected", app, signs_csv, arg)
    assert expected.returncode == 0, expected.stderr
    rows = expected.stdout.splitlines()
    assert rows
    variants = {
        "correct": list(reversed(rows)),
        "missing": rows[1:],
        "doubled": rows + rows[-1:],
    }
    for name, content in variants.items():
        out = tmp_path / f"{name}.txt"
        out.write_text("".join(row + "\n" for row in content))
        result = run_ref("check", app, signs_csv, arg, out)
        assert result.stdout.count("\n") == 1, result.stdout
        assert result.returncode == (0 if name == "correct" else 1), (name, result.stdout)


def test_expected_app2_lists_every_count_once(signs_csv):
    post = "Punched Telespar"
    rows = run_ref("expected", 2, signs_csv, post).stdout.splitlines()
    with open(signs_csv, newline="") as f:
        counts = ref.app2_counts(f, post)
    assert len(rows) == len(set(rows)) == sum(counts.values())
    assert {f"{cat},{n}" for cat, n in counts.items()} <= set(rows)


def test_cli_usage_errors_exit_2(signs_csv):
    assert run_ref("check", 1, signs_csv, "Stop").returncode == 2
    assert run_ref("expected", 3, signs_csv, "Stop").returncode == 2
