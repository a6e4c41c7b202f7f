"""Task logs: what a replacement task rebuilds from its predecessor's log."""

from __future__ import annotations

import csv
import io
import random

import pytest

from stream import task_log
from stream.forwarding import csv_rows
from stream.task_core import upstream_of

pytestmark = pytest.mark.timeout(30)


def test_recover_rebuilds_finished_blocks_state_outputs_and_stats():
    log = b"".join(task_log.encode(r) for r in [
        {"seq": 1, "blocks": ["0:0", "1:0"], "state": {"A": 2}, "stats": {"in": 5},
         "out": {"0:0": {"dest": [["A"], ["1"]]}, "1:0": {"dest": [["A"], ["2"]]}}},
        {"seq": 2, "done": task_log.ids_of(["0:0", "1:0"]).to_wire(), "stats": {"in": 5}},
        {"seq": 3, "blocks": ["0:1"], "state": {"A": 3, "B": 1}, "stats": {"in": 9},
         "out": {"0:1": {"dest": [["A", "B"], ["3", "1"]]}}},
    ]) + b'{"seq": 4, "done": {"0": [[3'          # torn by a crash mid-append
    rec = task_log.recover(log)
    assert rec.state == {"A": 3, "B": 1} and rec.stats == {"in": 9}
    assert task_log.block_key("0:0") in rec.completed and task_log.block_key("1:0") in rec.completed
    assert task_log.block_key("0:1") not in rec.completed
    assert rec.unfinished_commits() == [3] and rec.next_seq == 4
    assert rec.outputs["0:1"]["dest"] == [["A", "B"], ["3", "1"]]


def test_an_empty_log_is_a_fresh_start():
    rec = task_log.recover(b"")
    assert rec.next_seq == 1 and rec.state == {} and len(rec.completed) == 0
    assert rec.stats == {"in": 0, "out": 0, "dropped": 0, "errors": 0}


def test_blocks_are_acked_to_the_task_that_sent_them():
    assert upstream_of("2:7", 1, 3).index == 2 and upstream_of("2:7", 1, 3).stage == 0
    assert upstream_of("2:7", 2, 3).stage == 1


def test_output_rows_are_csv_quoted_only_where_needed():
    assert csv_rows(["Warning", "a,b", 'say "hi"'], ["1", "2", "3"]) == \
        b'Warning,1\n"a,b",2\n"say ""hi""",3\n'


def test_output_rows_joined_directly_are_what_csv_writes():
    """csv_rows joins rows itself when nothing needs quoting: byte for byte csv.writer's."""
    rng = random.Random(7)
    pieces = ["a", " ", "é", "", "\x1f", "1", ",", '"', "\r", "\n"]
    for _ in range(2000):
        plain = rng.random() < 0.5          # half of them with nothing to quote
        field = lambda: "".join(rng.choice(pieces[:6] if plain else pieces)
                                for _ in range(rng.randrange(4)))
        n = rng.randrange(6)
        keys, values = [field() for _ in range(n)], [field() for _ in range(n)]
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(zip(keys, values))
        assert csv_rows(keys, values) == out.getvalue().encode("utf-8"), (keys, values)
