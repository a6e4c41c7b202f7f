"""The stream engine's pure cores, rule by rule: delivery (delivery.py), the leader's job
control (job_core.py), a source (source_core.py) and an operator (operator_core.py)."""

from __future__ import annotations

import pytest

from hydfs.fences import writer_client
from hydfs.idset import IdSet
from stream import delivery as d
from stream import task_log, tuple_codec
from stream.effects import AppendDest, AppendLog, Report, Route, Send, Stop
from stream.job_core import (MAX_TASK_RESTARTS, Done, Fail, JobCore, Say, SendSchedule,
                             StartTask, StopAttempt)
from stream.messages import ACK, BLOCK, SCHEDULE
from stream.operator_core import OperatorCore
from stream.operators import load_operator
from stream.scheduler import TaskId
from stream.source_core import SourceCore
from stream.source_plan import Partition
from stream.task_spec import TaskSpec

pytestmark = pytest.mark.timeout(30)


# -- delivery rules ---------------------------------------------------------------------------

@pytest.mark.parametrize("sender, scheduled, finished, in_progress, verdict", [
    (1, 2, False, False, d.DROP),         # from a replaced attempt
    (1, 2, True, False, d.DROP),
    (2, 2, True, False, d.ACK_AGAIN),     # a resend of a finished block: ack it again
    (2, 2, False, True, d.IGNORE),        # being processed: its ack comes when it is done
    (2, 2, False, False, d.PROCESS),
    (3, 2, False, False, d.PROCESS),      # newer than the schedule knows: believed
    (1, None, False, False, d.PROCESS),   # no schedule yet
])
def test_what_a_task_does_with_an_arriving_block(sender, scheduled, finished, in_progress,
                                                 verdict):
    assert d.on_block(sender, scheduled, finished, in_progress) == verdict


@pytest.mark.parametrize("sender, scheduled, waits, verdict", [
    (1, 2, True, d.DROP), (2, 2, True, d.TAKE), (2, 2, False, d.IGNORE), (3, 2, True, d.TAKE),
])
def test_what_a_task_does_with_an_arriving_ack(sender, scheduled, waits, verdict):
    assert d.on_ack(sender, scheduled, waits) == verdict


@pytest.mark.parametrize("sent, heard, now, due", [
    (0.0, 0.0, 1.9, False), (0.0, 0.0, 2.0, True),
    (0.0, 1.5, 2.5, False),               # the destination acks others: alive and busy
    (0.0, 0.4, 2.5, True),
])
def test_an_unacked_block_is_resent_only_to_a_silent_destination(sent, heard, now, due):
    assert d.resend_due(sent, heard, now, resend_after=2.0) is due


def test_schedule_entries_move_tasks_and_a_newer_own_entry_means_replaced():
    assert d.moves(None, 1) and d.moves(2, 2) and d.moves(2, 3) and not d.moves(3, 2)
    assert d.replaced(own_epoch=2, entry_epoch=3) and not d.replaced(2, 2)


# -- the leader's job control ------------------------------------------------------------------

def started_job(workers=("02", "03", "04"), num_tasks=1, now=0.0):
    core = JobCore(num_tasks, list(workers), now, stall_timeout=30.0)
    starts = [e for e in core.tick(now) if isinstance(e, StartTask)]
    return core, starts


def of(effects, kind):
    return [e for e in effects if isinstance(e, kind)]


def test_the_first_tick_starts_every_task_as_attempt_one():
    core, starts = started_job(num_tasks=2)
    assert len(starts) == 6 and {s.epoch for s in starts} == {1}
    assert core.not_running() == sorted(core.tasks)


def test_a_failed_start_goes_elsewhere_as_a_new_attempt_and_a_late_outcome_is_ignored():
    core, starts = started_job()
    first = starts[0]
    core.start_failed(1.0, first.task, first.epoch, "node unreachable")
    retry = of(core.tick(1.2), StartTask)
    assert [(s.task, s.epoch) for s in retry] == [(first.task, 2)] and retry[0].vm != first.vm
    late = core.started(1.3, first.task, 1, "h:1")       # attempt 1 answered after all
    assert of(late, StopAttempt) == [StopAttempt("h:1", first.task, 1)]
    assert first.task in core.not_running()


def test_tasks_of_a_failed_worker_restart_elsewhere_and_everyone_gets_the_schedule():
    core, starts = started_job()
    for s in starts:
        core.started(0.5, s.task, s.epoch, f"{s.vm}:{s.task.stage}")
    victim = starts[0].vm
    lost = [s.task for s in starts if s.vm == victim]
    core.members(1.0, [vm for vm in ("02", "03", "04") if vm != victim])
    effects = core.tick(1.2)
    moved = of(effects, StartTask)
    assert sorted(s.task for s in moved) == sorted(lost)
    assert all(s.vm != victim and s.epoch == 2 for s in moved)
    assert any(isinstance(e, Say) and "moves from" in e.text for e in effects)
    schedule = of(core.started(1.5, moved[0].task, 2, "new:1"), SendSchedule)[0]
    assert [moved[0].task.stage, moved[0].task.index, "new:1", 2] in schedule.entries
    assert core.failures_recovered == 1


def test_two_workers_lost_in_one_membership_change_are_two_failures_recovered():
    # `make demo` kills two workers at once: its summary said "1 failures recovered"
    core, starts = started_job()
    for s in starts:
        core.started(0.5, s.task, s.epoch, f"{s.vm}:{s.task.stage}")
    victims = {s.vm for s in starts[:1]} | {next(s.vm for s in starts if s.vm != starts[0].vm)}
    core.members(1.0, [vm for vm in ("02", "03", "04") if vm not in victims])
    assert core.failures_recovered == 2


def test_a_crashed_process_restarts_in_place_and_one_that_keeps_crashing_fails_the_job():
    core, starts = started_job()
    s = starts[0]
    core.started(0.1, s.task, 1, "a:1")
    epoch = 1
    for i in range(MAX_TASK_RESTARTS):
        core.exited(1.0 + i, s.task, epoch, 1)
        (restart,) = of(core.tick(1.1 + i), StartTask)
        assert restart.vm == s.vm and restart.epoch == epoch + 1
        epoch = restart.epoch
        core.started(1.2 + i, s.task, epoch, f"a:{epoch}")
    failed = core.exited(9.0, s.task, epoch, 1)
    assert of(failed, Fail) and "failed 4 times" in of(failed, Fail)[0].reason


def test_progress_between_crashes_means_the_operator_is_not_broken():
    core, starts = started_job()
    s = starts[0]
    epoch = 1
    for i in range(MAX_TASK_RESTARTS + 2):
        core.started(i + 0.1, s.task, epoch, f"a:{epoch}")
        core.report(i + 0.2, s.task, epoch, {"in": i + 1})
        assert not of(core.exited(i + 0.3, s.task, epoch, 1), Fail)
        epoch = of(core.tick(i + 0.4), StartTask)[0].epoch


def test_a_replaced_attempts_reports_are_not_believed_and_done_needs_every_source():
    core, starts = started_job(num_tasks=2)
    sources = [s for s in starts if s.task.stage == 0]
    assert core.report(1.0, sources[0].task, 7, {"in": 99}, source_done=True) == []
    assert core.totals()["in"] == 0
    assert core.report(1.0, sources[0].task, 1, {"in": 5}, source_done=True) == []
    assert of(core.report(1.1, sources[1].task, 1, {"in": 6}, source_done=True), Done)
    assert core.totals()["in"] == 11


def test_a_job_without_progress_fails_saying_which_tasks_are_not_running_and_why():
    core, starts = started_job(workers=("02",))
    for s in starts:
        core.start_failed(0.5, s.task, s.epoch, "node 02 unreachable")
    core.members(0.6, [])                     # and then no worker at all
    assert not of(core.tick(20.0), StartTask)
    (fail,) = of(core.tick(31.0), Fail)
    assert "3 tasks are not running" in fail.reason and "node 02 unreachable" in fail.reason


def test_tasks_wait_for_a_worker_and_start_when_one_joins():
    core, starts = started_job(workers=("02",))
    for s in starts:
        core.start_failed(0.5, s.task, s.epoch, "refused")
    core.members(0.6, [])
    assert of(core.tick(1.0), StartTask) == []
    core.members(2.0, ["05"])
    assert {s.vm for s in of(core.tick(2.1), StartTask)} == {"05"}


# -- a source -------------------------------------------------------------------------------

LINES = b"".join(b"line %d\n" % i for i in range(1, 41))       # 40 lines of 8-9 bytes


def spec(stage: int, index: int = 0, epoch: int = 1, **kw) -> TaskSpec:
    part = Partition(0, 0, len(LINES), 1) if stage == 0 else None
    return TaskSpec("j", TaskId(stage, index), 1, "src", "dest", 0.1, 0.1, partition=part,
                    block_bytes=90, epoch=epoch, resend_after=2.0, **kw)


def schedule(*entries) -> dict:
    return {"t": SCHEDULE, "job": "j", "tasks": [list(e) for e in entries]}


def test_a_source_sends_blocks_resends_to_a_silent_task_and_is_done_when_all_are_acked():
    core = SourceCore(spec(0), task_log.recover(b""), 0.0)
    core.step(0.0, schedule((1, 0, "op1:1", 1)))
    sends = of(core.feed(0.0, LINES, last=True), Send)
    bids = [s.message["id"] for s in sends]
    assert len(bids) >= 4 and all(s.to == TaskId(1, 0) for s in sends)
    assert core.stats["in"] == 40
    assert of(core.tick(1.0), Send) == []
    assert len(of(core.tick(2.5), Send)) == len(bids)             # silent for 2 s: again
    ack = {"t": ACK, "job": "j", "from": [1, 0], "to": [0, 0], "ids": bids, "epoch": 1}
    core.step(2.6, ack)
    effects = core.tick(2.7)
    (log,) = of(effects, AppendLog)
    assert task_log.ids_of(bids).to_wire() == log.record["done"]
    assert any(isinstance(e, Report) and e.fields.get("source_done") for e in effects)


def test_under_a_rate_the_lines_read_count_what_was_sent_not_what_was_read_ahead():
    """Regression (new-user trial): with --rate the source reads its partition ahead, and
    `records_in` showed every line read at once while the lines left at the rate."""
    core = SourceCore(spec(0, source_rate=10.0), task_log.recover(b""), 0.0)
    core.step(0.0, schedule((1, 0, "op1:1", 1)))
    sent = len(of(core.feed(0.0, LINES, last=True), Send))
    assert sent == 1 and core.stats["in"] < 40           # the first block only: it is due
    later = core.stats["in"]
    core.tick(2.0)
    assert later < core.stats["in"] < 40                  # 2 s at 10 lines/s: about 20
    core.tick(5.0)
    assert core.stats["in"] == 40


def test_under_a_rate_a_replacement_catches_up_on_the_lines_due_while_none_ran():
    """Regression (recovery benchmark): a replacement source paced itself from its own
    start, so it waited again for the lines its predecessor had sent, and then sent the
    rest no faster than the rate: killing a source's worker cost 5.9 s more than a
    failure-free run of 5 s (an OP2's, 1.1 s)."""
    core = SourceCore(spec(0), task_log.recover(b""), 0.0)
    core.step(0.0, schedule((1, 0, "op1:1", 1)))
    bids = [s.message["id"] for s in of(core.feed(0.0, LINES, last=True), Send)]
    done = task_log.encode({"seq": 1, "done": task_log.ids_of(bids[:1]).to_wire()})
    again = SourceCore(spec(0, epoch=2, source_rate=10.0), task_log.recover(done), 3.0,
                       rate_origin=0.0)
    again.step(3.0, schedule((1, 0, "op1:2", 2)))
    sent = [s.message["id"] for s in of(again.feed(3.0, LINES, last=True), Send)]
    assert sent and sent[0] == bids[1] and bids[-1] not in sent   # 30 lines due by t=3
    assert 30 <= again.stats["in"] < 40       # in blocks: those whose first line is due


def test_a_source_drops_acks_of_a_replaced_attempt_and_a_replacement_skips_done_blocks():
    core = SourceCore(spec(0), task_log.recover(b""), 0.0)
    core.step(0.0, schedule((1, 0, "op1:2", 2)))
    bids = [s.message["id"] for s in of(core.feed(0.0, LINES, last=True), Send)]
    core.step(0.1, {"t": ACK, "job": "j", "from": [1, 0], "to": [0, 0], "ids": bids,
                    "epoch": 1})
    assert len(core.unacked) == len(bids) and core.dropped_stale == 1
    done = task_log.encode({"seq": 1, "done": task_log.ids_of(bids[:2]).to_wire()})
    again = SourceCore(spec(0, epoch=2), task_log.recover(done), 5.0)
    again.step(5.0, schedule((1, 0, "op1:2", 2)))
    resent = [s.message["id"] for s in of(again.feed(5.0, LINES, last=True), Send)]
    assert resent == bids[2:] and again.stats["in"] == 40


def test_a_finite_jobs_source_replaced_after_the_stop_without_an_end_reads_its_partition():
    """Regression (review): such a replacement ended at its predecessor's last block logged
    done, but that one may have sent later blocks whose output stage 2 put in DEST: their
    lines were never counted in `in` (nor, chained, OP1's counts)."""
    core = SourceCore(spec(0), task_log.recover(b""), 0.0)
    core.step(0.0, schedule((1, 0, "op1:1", 1)))
    bids = [s.message["id"] for s in of(core.feed(0.0, LINES, last=True), Send)]
    done = task_log.encode({"seq": 1, "done": task_log.ids_of(bids[:1]).to_wire()})
    again = SourceCore(spec(0, epoch=2, stopping=True), task_log.recover(done), 5.0)
    again.step(5.0, schedule((1, 0, "op1:2", 1)))
    resent = [s.message["id"] for s in of(again.feed(5.0, LINES, last=True), Send)]
    assert resent == bids[1:]
    again.step(5.1, {"t": ACK, "job": "j", "from": [1, 0], "to": [0, 0], "ids": resent,
                     "epoch": 1})
    effects = again.tick(5.2)
    assert any(isinstance(e, Report) and e.fields.get("source_done") for e in effects)
    assert again.stats["in"] == 40


def test_a_schedule_naming_a_newer_attempt_of_this_task_stops_it():
    core = SourceCore(spec(0, epoch=1), task_log.recover(b""), 0.0)
    effects = core.step(1.0, schedule((0, 0, "src:9", 2), (1, 0, "op1:1", 1)))
    assert of(effects, Stop) and core.stopped and not of(effects, Route)


def test_an_attempt_that_hears_from_no_one_for_its_lease_stops_itself():
    core = SourceCore(spec(0, lease=5.0), task_log.recover(b""), 0.0)
    core.contact(3.0)
    assert not of(core.tick(7.9), Stop)
    (stop,) = of(core.tick(8.1), Stop)
    assert stop.lost


# -- a source that runs OP1 itself (chained) -------------------------------------------------

def chained_source(op1: str, arg: str, num_tasks: int = 1, epoch: int = 1, log: bytes = b"",
                   **kw) -> SourceCore:
    part = Partition(0, 0, len(LINES), 1)
    s = TaskSpec("j", TaskId(0, 0), num_tasks, "src", "dest", 0.1, 0.1, op1, arg,
                 partition=part, block_bytes=90, epoch=epoch, resend_after=2.0, chained=True,
                 **kw)
    core = SourceCore(s, task_log.recover(log), 0.0, load_operator(op1, arg))
    core.step(0.0, schedule(*[(2, i, f"op2:{i}", 1) for i in range(num_tasks)]))
    return core


def ack_from(task: TaskId, ids: list, epoch: int = 1) -> dict:
    return {"t": ACK, "job": "j", "from": task.to_wire(), "to": [0, 0], "ids": ids,
            "epoch": epoch}


def test_a_chained_source_runs_op1_and_sends_its_output_to_stage_two():
    core = chained_source("grep", "line 1")       # line 1, 10..19: 11 of 40 lines
    sends = of(core.feed(0.0, LINES, last=True), Send)
    assert sends and all(s.to == TaskId(2, 0) for s in sends)
    tuples = [tuple_codec.decode(s.message, s.payload) for s in sends]
    assert [k for keys, _ in tuples for k in keys] == \
        ["src:1"] + [f"src:{i}" for i in range(10, 20)]
    assert [v for _, values in tuples for v in values][:2] == ["line 1", "line 10"]


def test_a_chained_block_without_output_is_done_at_once_and_counted_with_its_done_mark():
    core = chained_source("grep", "line 4")       # line 4 and 40: two blocks put something out
    sends = of(core.feed(0.0, LINES, last=True), Send)
    assert len(sends) == 2
    (log,) = of(core.tick(0.6), AppendLog)             # done marks go out every 0.5 s
    done = IdSet(log.record["done"])
    assert len(done) >= 2 and not any(task_log.block_key(s.message["id"]) in done
                                      for s in sends)
    assert log.record["stats"]["op1_in"] < 40 and log.record["stats"]["out"] == 0
    core.step(0.7, ack_from(TaskId(2, 0), [s.message["id"] for s in sends]))
    effects = core.tick(0.8)                           # all acked: the last one at once
    (log,) = of(effects, AppendLog)
    assert log.record["stats"] == {"in": 40, "op1_in": 40, "out": 2, "dropped": 0,
                                   "errors": 0}
    assert any(isinstance(e, Report) and e.fields.get("source_done") for e in effects)


def test_a_chained_source_split_by_key_waits_for_every_destination_and_resends_to_the_silent():
    core = chained_source("grep", "line", num_tasks=3, next_stateful=True)
    sends = of(core.feed(0.0, LINES, last=True), Send)
    first = sends[0].message["id"]
    dests = {s.to for s in sends if s.message["id"] == first}
    assert len(dests) > 1                           # one block's keys go to several tasks
    one, *others = sorted(dests)
    core.step(0.5, ack_from(one, [first]))
    assert first in core.unacked
    again = of(core.tick(2.6), Send)               # `one` acked 2.1 s ago, the others never
    assert {s.to for s in again if s.message["id"] == first} == set(others)
    for task in others:
        core.step(2.7, ack_from(task, [first]))
    assert first not in core.unacked


def test_a_chained_replacement_skips_done_blocks_and_keeps_the_counts_it_inherits():
    core = chained_source("grep", "line")
    bids = [s.message["id"] for s in of(core.feed(0.0, LINES, last=True), Send)]
    core.step(0.1, ack_from(TaskId(2, 0), bids[:2]))
    assert not of(core.tick(0.2), AppendLog)           # done marks go out every 0.5 s
    (log,) = of(core.tick(0.6), AppendLog)
    inherited = log.record["stats"]["out"]
    again = chained_source("grep", "line", epoch=2, log=task_log.encode(log.record))
    resent = [s.message["id"] for s in of(again.feed(5.0, LINES, last=True), Send)]
    assert resent == bids[2:]
    again.step(5.1, ack_from(TaskId(2, 0), resent))
    (log,) = of(again.tick(5.2), AppendLog)
    assert log.record["stats"]["out"] == 40 and inherited < 40


def test_a_stage_two_task_of_a_chained_job_acks_the_source():
    core = OperatorCore(spec(2, chained=True), task_log.recover(b""), 0.0,
                        load_operator("signs_select", ""))
    core.step(0.0, schedule((0, 0, "src:1", 1)))
    how, payload = tuple_codec.encode(["src:1"], ["a,b"])
    core.step(0.01, dict({"t": BLOCK, "job": "j", "from": [0, 0], "to": [2, 0], "id": "0:0",
                          "epoch": 1}, **how), payload)
    acks = [e for e in core.tick(0.2) if isinstance(e, Send) and e.message["t"] == ACK]
    assert [a.to for a in acks] == [TaskId(0, 0)]


def test_a_chained_job_has_no_op1_tasks_and_counts_op1_at_the_sources():
    core = JobCore(2, ["02", "03"], 0.0, stall_timeout=30.0, stages=(0, 2))
    assert sorted(core.tasks) == [TaskId(0, 0), TaskId(0, 1), TaskId(2, 0), TaskId(2, 1)]
    for task in core.tasks:
        core.tasks[task].stats = {"in": 10, "out": 3} if task.stage == 0 else {"out": 2}
    assert core.totals() == {"in": 20, "op1_out": 6, "out": 4, "dropped": 0, "errors": 0}


# -- a source that runs OP2 too, appending to DEST (a sink) ------------------------------------

UPPER = 'KIND = "transform"\n\ndef process(key, value, arg):\n    return key, value.upper()\n'


def sink_source(tmp_path, op1: str = "grep", arg: str = "line", epoch: int = 1,
                log: bytes = b"", sealed: IdSet | None = None) -> SourceCore:
    (tmp_path / "upper.py").write_text(UPPER)
    op2 = str(tmp_path / "upper.py")
    s = TaskSpec("j", TaskId(0, 0), 1, "src", "dest", 0.1, 0.1, op1, arg,
                 partition=Partition(0, 0, len(LINES), 1), block_bytes=90, epoch=epoch,
                 chained=True, sink=True, last_operator=op2)
    return SourceCore(s, task_log.recover(log), 0.0, load_operator(op1, arg),
                      last_operator=load_operator(op2, ""), dest_sealed=sealed or IdSet())


def dest_rows(effects) -> list[str]:
    return [row for e in of(effects, AppendDest) for row in e.rows.decode().splitlines()]


def test_a_sink_runs_both_operators_and_appends_to_dest_named_by_its_last_block(tmp_path):
    core = sink_source(tmp_path, arg="line 1")       # line 1, 10..19: 11 of 40 lines
    effects = core.feed(0.0, LINES, last=True)
    assert not of(effects, Send)
    (append,) = of(effects, AppendDest)              # nothing more due: one append, at once
    assert dest_rows(effects) == ["src:1,LINE 1"] + [f"src:{i},LINE {i}" for i in range(10, 20)]
    assert append.seq == core.block_no               # the key of the last block it holds
    effects = core.tick(0.1)                         # every block is in DEST: done
    kinds = [type(e) for e in effects if isinstance(e, AppendLog) or
             (isinstance(e, Report) and e.fields.get("source_done"))]
    assert kinds[:2] == [Report, AppendLog]          # the leader hears first, then the log
    (log,) = of(effects, AppendLog)
    assert len(IdSet(log.record["done"])) == core.block_no
    assert log.record["stats"] == {"in": 40, "op1_in": 40, "out": 11, "dropped": 0,
                                   "errors": 0, "op2_out": 11, "op2_dropped": 0,
                                   "op2_errors": 0}


def test_a_sinks_done_marks_follow_the_dest_append_that_holds_their_rows(tmp_path):
    core = sink_source(tmp_path)
    effects = core.feed(0.0, LINES[:200], last=False) + core.tick(0.6)
    order = [type(e) for e in effects if isinstance(e, (AppendDest, AppendLog))]
    assert order == [AppendDest, AppendLog]
    (log,) = of(effects, AppendLog)
    (append,) = of(effects, AppendDest)
    assert max(n for _, spans in IdSet(log.record["done"]).to_wire().items()
               for _, n in spans) == append.seq


def test_a_replaced_sink_counts_the_blocks_its_predecessors_appended_and_appends_the_rest(
        tmp_path):
    """Attempt 1 appended the rows of its first blocks and logged nothing: attempt 2 finds
    how far they reached in DEST's seal, appends only the blocks after, and counts all."""
    first = sink_source(tmp_path)
    first.spec.block_bytes = 90
    rows1 = dest_rows(first.feed(0.0, LINES[:100], last=False))
    reach = first.block_no
    sealed = IdSet.of([(writer_client("j/source-0", 1), reach),
                       (writer_client("j/op2-0", 1), 99)])     # another writer: not counted
    again = sink_source(tmp_path, epoch=2, sealed=sealed)
    effects = again.feed(1.0, LINES, last=True) + again.tick(1.1)
    rows2 = dest_rows(effects)
    assert sorted(rows1 + rows2) == sorted(f"src:{i},LINE {i}" for i in range(1, 41))
    assert all(e.seq > reach for e in of(effects, AppendDest))
    (log,) = of(effects, AppendLog)
    assert log.record["stats"]["in"] == 40 and log.record["stats"]["op2_out"] == 40


def test_a_sink_job_has_only_source_tasks_and_counts_op2_at_them():
    core = JobCore(2, ["02", "03"], 0.0, stall_timeout=30.0, stages=(0,))
    assert sorted(core.tasks) == [TaskId(0, 0), TaskId(0, 1)]
    for task in core.tasks:
        core.tasks[task].stats = {"in": 10, "op1_in": 10, "out": 3, "op2_out": 2,
                                  "op2_errors": 1}
    assert core.totals() == {"in": 20, "op1_out": 6, "out": 4, "dropped": 0, "errors": 2}


# -- an operator ----------------------------------------------------------------------------

def block(bid: str, lines: list[str], epoch: int = 1) -> tuple[dict, bytes]:
    payload = "".join(line + "\n" for line in lines).encode()
    return ({"t": BLOCK, "job": "j", "from": [1, 0], "to": [2, 0], "id": bid, "enc": "lines",
             "first_line": 1, "lines": len(lines), "epoch": epoch}, payload)


def test_the_last_stage_logs_then_appends_to_dest_then_acks():
    """Its done marks ride in the next commit: a commit whose rows are in DEST is finished
    (DEST's fence tells a replacement), so no log append of its own holds up the ack."""
    core = OperatorCore(spec(2), task_log.recover(b""), 0.0, load_operator("grep", "a"))
    core.step(0.0, schedule((1, 0, "op1:1", 1)))
    core.step(0.01, *block("0:0", ["a1", "b2", "a3"]))
    effects = [e for e in core.tick(0.2) if not isinstance(e, Report)]
    kinds = [type(e) for e in effects]
    assert kinds == [AppendLog, AppendDest, Send]
    commit, dest, ack = effects
    assert commit.record["blocks"] == ["0:0"] and dest.seq == commit.record["seq"]
    assert dest.rows == b"src:1,a1\nsrc:3,a3\n" and ack.message["ids"] == ["0:0"]
    assert core.stats["out"] == 2 and core.stats["in"] == 3
    assert core.idle(1.0) == [] and not of(core.tick(1.0), AppendLog)   # nothing to log
    core.step(1.1, *block("0:1", ["a4"]))
    (second, *_), = [of(core.tick(1.3), AppendLog)]
    assert second.record["done"] == task_log.ids_of(["0:0"]).to_wire()


@pytest.mark.parametrize("appended_before, appends_again", [(False, True), (True, False)])
def test_a_replacement_redoes_a_logged_commit_unless_dests_seal_shows_it_landed(
        appended_before, appends_again):
    commit = {"seq": 4, "epoch": 1, "blocks": ["0:0"], "state": {},
              "out": {"0:0": {"dest": [["k"], ["v"]]}},
              "stats": {"in": 1, "out": 1, "dropped": 0, "errors": 0}}
    sealed = IdSet.of([(writer_client("j/op2-0", 1), 4)]) if appended_before else IdSet()
    core = OperatorCore(spec(2, epoch=2), task_log.recover(task_log.encode(commit)), 0.0,
                        load_operator("grep", "a"), sealed)
    effects = core.start(0.0)
    assert bool(of(effects, AppendDest)) is appends_again
    assert task_log.block_key("0:0") in core.completed and core.stats["out"] == 1


def test_tasks_of_a_node_that_restarted_before_anyone_noticed_are_restarted():
    """Regression (chaos seed 517): a node killed and restarted within the detection time
    rejoins as a new member; the set of live workers is the same, but its tasks are gone."""
    core, starts = started_job()
    for s in starts:
        core.started(0.5, s.task, s.epoch, f"{s.vm}:{s.task.stage}")
    victim = starts[0].vm
    core.members(1.0, ["02", "03", "04"], failed=[victim])
    restarted = of(core.tick(1.2), StartTask)
    assert sorted(s.task for s in restarted) == sorted(s.task for s in starts if s.vm == victim)


def test_a_running_attempt_that_stops_reporting_is_taken_for_dead():
    """Regression (simulator hunt): the node's word that a task exited was lost, and the job
    waited for it for ever."""
    core = JobCore(1, ["02", "03"], 0.0, stall_timeout=60.0, silence=5.0)
    starts = of(core.tick(0.0), StartTask)
    for s in starts:
        core.started(0.1, s.task, 1, f"{s.vm}:{s.task.stage}")
    for s in starts[1:]:
        core.report(4.0, s.task, 1, {"in": 1})
    restarted = of(core.tick(5.5), StartTask)
    assert [(r.task, r.epoch) for r in restarted] == [(starts[0].task, 2)]


def test_the_schedule_goes_out_again_now_and_then():
    """Regression (simulator hunt): a schedule lost on its way left a source sending to a
    dead attempt for ever."""
    core, starts = started_job()
    for s in starts:
        core.started(0.1, s.task, 1, f"{s.vm}:{s.task.stage}")
    assert not of(core.tick(1.0), SendSchedule)
    assert of(core.tick(2.2), SendSchedule)


def test_a_source_that_finished_is_not_started_again_when_its_worker_fails():
    core, starts = started_job(num_tasks=2)
    for s in starts:
        core.started(0.1, s.task, 1, f"{s.vm}:{s.task.stage}")
    source = next(s for s in starts if s.task.stage == 0)
    core.report(1.0, source.task, 1, {"in": 9}, source_done=True)
    core.members(2.0, [vm for vm in ("02", "03", "04") if vm != source.vm])
    assert source.task not in [s.task for s in of(core.tick(2.1), StartTask)]
    assert source.task not in core.not_running()


def test_messages_for_another_task_or_attempt_are_ignored():
    """Regression (simulator hunt): a new attempt listening on the port of another task's
    dead attempt took that task's blocks, and its stop, for its own."""
    core = OperatorCore(spec(2), task_log.recover(b""), 0.0, load_operator("grep", "a"))
    message, payload = block("0:0", ["a1"])
    assert core.step(0.0, dict(message, to=[2, 1]), payload) == [] and not core.pending
    assert core.step(0.0, {"t": "stream.stop", "job": "j", "task": [2, 0], "attempt": 7}) == []
    assert core.step(0.0, {"t": "stream.stop", "job": "j", "task": [2, 1], "attempt": 1}) == []
    assert core.step(0.0, dict(message, job="other"), payload) == [] and not core.stopped
    assert of(core.step(0.0, {"t": "stream.stop", "job": "j", "task": [2, 0], "attempt": 1}),
              Stop)


@pytest.mark.timeout(10)
def test_an_inbox_holds_one_copy_of_a_resent_block():
    """Regression (review): a task busy with a long batch got its upstream's resends of the
    whole window every resend_after, and they piled up in its inbox queue."""
    from stream.task_io import InboxQueue
    q = InboxQueue()
    block = {"t": "stream.block", "from": [0, 1], "epoch": 2, "id": "1:7"}
    for _ in range(5):
        q.put((dict(block), b"x" * 10))
    q.put((dict(block, epoch=3), b"y"))             # a newer attempt's: its own copy
    q.put(({"t": "stream.ack", "ids": ["1:7"]}, b""))
    q.put(({"t": "stream.ack", "ids": ["1:7"]}, b""))
    assert q.qsize() == 4 and q.duplicates == 4
    q.get()
    q.put((dict(block), b"x" * 10))                 # taken: a later resend is queued again
    assert q.qsize() == 4


@pytest.mark.timeout(10)
def test_an_item_that_makes_the_tick_due_sooner_ends_the_wait_for_more():
    """Regression: the task loop waited for inbox items until the deadline it computed
    before them, so a source whose last ack had just arrived (done: due at once) slept
    until its next periodic commit, up to batch_interval, at the end of every job."""
    import queue
    import time
    from stream.task_io import drain
    items, due = queue.Queue(), [time.monotonic() + 5.0]
    items.put("the last ack")
    started = time.monotonic()
    for item in drain(items, lambda: due[0]):
        due[0] = time.monotonic()              # the core has something to do now
    assert time.monotonic() - started < 1.0


@pytest.mark.timeout(10)
def test_the_leader_keeps_only_the_newest_ended_jobs_in_memory():
    """Ended jobs stay listed from their HyDFS records; memory holds the newest few."""
    from stream.job_spec import parse_job
    from stream.job import Job, old_ended_jobs
    from stream.job_states import DONE
    spec = parse_job(["a", "b", "s", "d", "1"])
    jobs = [Job(f"j{i}", spec, created=float(i), state=DONE) for i in range(8)]
    jobs.append(Job("run", spec, created=0.0))              # running: never forgotten
    assert old_ended_jobs(jobs, 5) == ["j0", "j1", "j2"]
    assert old_ended_jobs(jobs, 10) == []


# -- batching, and what goes between operator stages (session 7, issue 14) --------------------

def test_an_idle_operator_flushes_its_batch_before_the_tick_but_not_more_often():
    """A trickle waits a fifth of an interval per stage, not a whole one: a 10k-line job
    took 0.4 s of 0.1 s ticks at three stages."""
    core = OperatorCore(spec(2), task_log.recover(b""), 0.0, load_operator("grep", "a"))
    core.step(0.0, schedule((1, 0, "op1:1", 1)))
    core.step(0.001, *block("0:0", ["a1"]))
    assert not of(core.idle(0.005), AppendDest)           # flushed at 0.0: too soon
    assert core.own_deadline(0.005) == pytest.approx(0.02)
    assert of(core.idle(0.021), AppendDest)               # 0.1 / 5 later: flushed now
    core.step(0.022, *block("0:1", ["a2"]))
    assert not of(core.idle(0.03), AppendDest)
    assert of(core.idle(0.042), AppendDest)
    assert core.idle(0.1) == []                           # nothing waits: nothing to do


def test_a_stage_sends_keys_only_to_an_operator_that_does_not_read_values():
    core = OperatorCore(spec(1, next_stateful=True, next_reads_values=False),
                        task_log.recover(b""), 0.0, load_operator("grep", "a"))
    core.step(0.0, schedule((2, 0, "op2:1", 1)))
    message, payload = block("0:0", ["a1", "b", "a2"])
    core.step(0.001, dict(message, **{"from": [0, 0], "to": [1, 0]}), payload)
    (send,) = of(core.tick(0.2), Send)
    assert tuple_codec.decode(send.message, send.payload) == (["src:1", "src:3"], ["", ""])
    assert not load_operator("count", "").reads_values
    assert load_operator("grep", "a").reads_values


@pytest.mark.parametrize("keys, values, enc", [
    ([], [], "text"),
    (["src:1", "k,2"], ['a,"b"', ""], "text"),
    (["k"], ["two\nlines"], "json"),               # a newline of its own: JSON
    (["k\n"], ["v"], "json"),
    (["é"], ["\r\x00\u2028"], "text"),
])
def test_tuples_between_stages_round_trip_as_text_or_json(keys, values, enc):
    how, payload = tuple_codec.encode(keys, values)
    assert how["enc"] == enc
    assert tuple_codec.decode(how, payload) == (keys, values)


@pytest.mark.parametrize("how, payload", [
    ({"enc": "text", "n": 2}, b"a\nb\nc\n"), ({"enc": "text", "n": 1}, b"a\nb"),
    ({"enc": "text"}, b"a\nb\n"), ({"enc": "yaml"}, b""), ({"enc": "json"}, b'[["a"], []]'),
])
def test_a_malformed_block_of_tuples_is_refused(how, payload):
    with pytest.raises(ValueError):
        tuple_codec.decode(how, payload)


def test_a_block_whose_timer_restarted_from_an_older_ack_is_still_resent_in_time():
    """Review: the in-flight table kept timers in order and stopped at the first not due,
    but a timer restarted from a busy destination's last ack is older than the ones after
    it, so its resend came late."""
    from stream.in_flight import InFlight
    table, a, b = InFlight(resend_after=2.0, started=0.0), TaskId(2, 0), TaskId(2, 1)
    table.add(0.0, "0:0", {a: ({"id": "0:0"}, b"")}, 1)
    table.add(1.5, "0:1", {b: ({"id": "0:1"}, b"")}, 1)
    table.acked(1.0, a, [])                    # a acks others: alive and busy
    assert table.due(2.5) == []                # 0:0's timer restarts from 1.0
    assert table.next_due() == 3.0
    assert sorted(m["id"] for _, m, _ in table.due(3.6)) == ["0:0", "0:1"]


def test_the_first_operator_error_reaches_the_report_and_the_summary(tmp_path):
    """Review: operators.py promised that the summary names the first error; nothing
    carried it past the operator."""
    from stream.commands import summary_text
    from stream.job import Job, summary
    from stream.job_spec import parse_job
    (tmp_path / "bad.py").write_text(
        'KIND = "filter"\n\ndef process(key, value, arg):\n'
        '    if value.endswith("7"):\n        raise ValueError("no sevens")\n'
        '    return key, value\n')
    core = chained_source(str(tmp_path / "bad.py"), "")
    core.feed(0.0, LINES, last=True)
    (report,) = [e for e in core.tick(0.6) if isinstance(e, Report)]
    assert report.fields["first_error"] == \
        "on key 'src:7': ValueError: no sevens"
    job = Job("j1", parse_job(["a", "b", "s", "d", "1"]), core=JobCore(1, ["02"], 0.0, 60.0))
    job.extras[TaskId(0, 0)] = {"first_error": report.fields["first_error"]}
    job.core.tasks[TaskId(0, 0)].stats = {"in": 40, "errors": 4}
    doc = summary(job)
    assert doc["first_error"] == "on key 'src:7': ValueError: no sevens"
    assert "4 operator errors (the first on key 'src:7'" in summary_text(doc)


def test_a_source_whose_done_report_comes_after_its_exit_is_not_started_again():
    """Regression (simulator, seed 1661 with chained sources): a source reports done before
    it logs its last done marks; when it died in between, the leader heard of the exit
    first, started it again, and the replacement's counts, from its log, replaced those
    of the done report."""
    core, starts = started_job()
    for s in starts:
        core.started(0.5, s.task, s.epoch, f"{s.vm}:{s.task.stage}")
    source = TaskId(0, 0)
    core.exited(1.0, source, 1, -9)
    core.report(1.01, source, 1, {"in": 30, "op1_in": 30}, source_done=True)
    assert source not in [s.task for s in of(core.tick(1.2), StartTask)]
    assert core.tasks[source].stats == {"in": 30, "op1_in": 30}
