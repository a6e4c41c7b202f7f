"""Pure stream planning: source partitions and blocks, partitioning, task placement."""

from __future__ import annotations

import random

import pytest

from stream.partition import route_block, split_by_key, stable_hash
from stream.scheduler import TaskId, assign, reassign, workers_for
from stream.source_plan import BLOCK_BYTES, block_lines, cut_blocks, plan_partitions

pytestmark = pytest.mark.timeout(30)


def chunked(data: bytes, size: int):
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


@pytest.mark.parametrize("count", [1, 2, 3, 7])
@pytest.mark.parametrize("chunk", [1, 5, 64, 100000])
def test_partitions_cover_the_file_at_line_starts_with_right_line_numbers(count, chunk):
    rng = random.Random(count * 1000 + chunk)
    lines = [("x" * rng.randint(0, 30)) + str(i) for i in range(1, 301)]
    data = ("\n".join(lines) + "\n").encode()
    parts = plan_partitions(chunked(data, chunk), len(data), count)
    assert [p.index for p in parts] == list(range(count))
    assert parts[0].offset == 0 and sum(p.length for p in parts) == len(data)
    for p, q in zip(parts, parts[1:]):
        assert p.offset + p.length == q.offset
    for p in parts:
        text = data[p.offset:p.offset + p.length].decode()
        if text:
            assert p.offset == 0 or data[p.offset - 1:p.offset] == b"\n"
            assert text.split("\n")[0] == lines[p.first_line - 1]
    sizes = [p.length for p in parts]
    assert max(sizes) - min(sizes) <= 2 * 40 + len(data) // 100 or count == 1


def test_partitions_of_tiny_and_unterminated_files():
    parts = plan_partitions([b"a\nb"], 3, 3)
    assert sum(p.length for p in parts) == 3 and parts[0].first_line == 1
    assert plan_partitions([b""], 0, 2)[1].length == 0


def test_blocks_are_whole_lines_of_about_the_block_size():
    line = b"y" * 99 + b"\n"
    data = line * (3 * BLOCK_BYTES // 100 + 7) + b"tail"
    blocks, rest = cut_blocks(data, final=False)
    assert rest.endswith(b"tail") and all(b.endswith(b"\n") for b in blocks)
    assert all(len(b) <= BLOCK_BYTES for b in blocks) and len(blocks) == 3
    blocks2, rest2 = cut_blocks(data, final=True)
    assert rest2 == b"" and b"".join(blocks2) == data
    assert block_lines(b"a\nb\n") == ["a", "b"] and block_lines(b"") == []
    assert block_lines(b"a\n\nc") == ["a", "", "c"]


def test_key_partitioning_is_stable_and_total():
    keys = [f"k{i % 17}" for i in range(1000)]
    parts = split_by_key(keys, list(map(str, range(1000))), 3)
    assert sum(len(k) for k, _ in parts) == 1000
    for i, (ks, _) in enumerate(parts):
        assert all(stable_hash(k) % 3 == i for k in ks)
    assert route_block("0:5", 3) == route_block("0:5", 3) == stable_hash("0:5") % 3


def test_assignment_spreads_tasks_evenly_and_avoids_the_leader():
    workers = workers_for([f"{i:02d}" for i in range(1, 11)], leader="01")
    assert "01" not in workers and len(workers) == 9
    schedule = assign(workers, 3)
    assert len(schedule) == 9 and len(set(schedule.values())) == 9
    schedule = assign(["02", "03"], 3)
    loads = [list(schedule.values()).count(vm) for vm in ("02", "03")]
    assert sorted(loads) == [4, 5]
    assert workers_for(["01"], leader="01") == ["01"]


def test_reassignment_moves_only_the_failed_workers_tasks_to_the_least_loaded():
    schedule = assign(["02", "03", "04", "05"], 3)
    moved_away = {t for t, vm in schedule.items() if vm == "03"}
    moves = reassign(schedule, ["02", "04", "05"])
    assert set(moves) == moved_away and "03" not in moves.values()
    after = {**schedule, **moves}
    loads = sorted(list(after.values()).count(vm) for vm in ("02", "04", "05"))
    assert loads == [3, 3, 3]
    assert TaskId.from_wire([1, 2]) == TaskId(1, 2) and str(TaskId(0, 1)) == "source-1"


def test_sources_go_to_the_workers_that_hold_the_source_file():
    workers = [f"{i:02d}" for i in range(2, 11)]
    schedule = assign(workers, 3, source_hosts=["07", "04", "01"])     # 01 is no worker
    sources = {vm for t, vm in schedule.items() if t.stage == 0}
    assert {"07", "04"} <= sources and len(sources) == 3
    assert len(set(schedule.values())) == 9


@pytest.mark.timeout(10)
@pytest.mark.parametrize("data, count", [(b"a\nb", 3), (b"a\nbbbbbbbbbbbbbbbb", 2),
                                         (b"aaaa", 3), (b"a\nb\n", 3), (b"x\nyy\nzzzzzzzz", 2)])
def test_a_following_jobs_unfinished_last_line_is_the_followers(data, count):
    """Regression: with "a\\nb" and 3 tasks, "b" fell in partition 1 while the follower
    (partition 2) numbered the next append's first line 2 as well."""
    parts = plan_partitions([data], len(data), count, follow=True)
    last_end = data.rfind(b"\n") + 1
    tail = parts[-1]
    assert tail.offset + tail.length == len(data)
    assert tail.offset <= last_end and data[:tail.offset].count(b"\n") == tail.first_line - 1
    for p in parts[:-1]:
        assert p.offset + p.length <= last_end      # no other partition has it
    assert sum(p.length for p in parts) == len(data)


def test_partitions_cut_one_by_one_are_those_of_one_pass_or_refused():
    """A big SRC's partitions are cut in parallel, each by one replica (job_setup.py);
    joined, they must be plan_partitions' exactly, or be refused (then one pass cuts)."""
    from stream.source_plan import cut_segment, join_segments
    rng = random.Random(7)
    joined = 0
    for _ in range(3000):
        data = b"".join(rng.choice([b"a", b"bb", b"\n", b"ccc\n", b"\n\n", b"dddddddd"])
                        for _ in range(rng.randint(0, 60)))
        count, chunk = rng.randint(1, 6), rng.randint(1, 20)
        want = plan_partitions(chunked(data, chunk) or [b""], len(data), count)
        segments = [cut_segment(chunked(data[len(data) * i // count:], chunk), len(data),
                                count, i, i < count - 1) for i in range(count)]
        got = join_segments(segments, len(data))
        assert got is None or got == want, (data, count)
        joined += got is not None
    assert joined > 2000
    lines = b"".join(b"line %d,with,fields\n" % i for i in range(5000))
    segments = [cut_segment(chunked(lines[len(lines) * i // 4:], 4096), len(lines), 4, i,
                            i < 3) for i in range(4)]
    assert join_segments(segments, len(lines)) == plan_partitions([lines], len(lines), 4)
