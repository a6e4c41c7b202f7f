"""The stream engine's exactly-once property, checked by the simulator (tests/stream_sim.py).

Over thousands of seeded schedules (crashes at any effect, workers declared failed, paused
workers whose attempts resume as zombies and finish their writes late, lost, duplicated and
reordered messages, refused starts, the leader failing and a successor taking the job over
while the old one acts on, deposed), both classic applications give exactly the oracle's
output and every job ends. A failing seed prints its transcript; replay it with
`python -m tests.stream_sim SEED`.

The simulator has teeth: with fencing, the DEST check of a replacement's redo, a sink's
DEST reach, or resends taken out, or a sink that logs blocks done before their DEST append,
it finds failing seeds (the last tests), so a pass means something.
"""

from __future__ import annotations

import os
import random

import pytest

from hydfs.fences import Fences
from stream import delivery, operator_core, source_core, task_log
from stream.effects import AppendDest
from tests import stream_sim

SEEDS = int(os.environ.get("RAINSTORM_SIM_SEEDS", "10000"))


@pytest.mark.timeout(300)
def test_both_apps_are_exactly_once_over_thousands_of_seeded_schedules():
    assert_exact(range(SEEDS), follow=False)


def assert_exact(seeds, follow: bool) -> None:
    """Every seed's job gives exactly the oracle's output (the first three failures shown,
    with their transcripts)."""
    failures = []
    for seed in seeds:
        outcome = stream_sim.run(seed, follow)
        if not outcome.exact:
            failures.append(outcome)
            if len(failures) == 3:
                break
    assert not failures, "\n\n".join(o.explain() for o in failures)


def failing_seeds(count: int) -> list[int]:
    """The first seed below `count` whose job is not exact (a mutant must be caught; one
    seed shows it, and a hanging job costs its whole simulated time)."""
    return next(([seed] for seed in range(count) if not stream_sim.run(seed).exact), [])


@pytest.mark.timeout(120)
def test_without_fences_zombies_double_the_output(monkeypatch):
    monkeypatch.setattr(Fences, "accepts", lambda self, client: True)
    assert failing_seeds(1000)


@pytest.mark.timeout(120)
def test_without_the_dest_check_a_replacement_appends_a_commit_twice(monkeypatch):
    monkeypatch.setattr(operator_core, "_sealed_seqs", lambda sealed, key: set())
    assert failing_seeds(1000)


@pytest.mark.timeout(120)
def test_without_its_dest_reach_a_replaced_sink_appends_its_predecessors_blocks_twice(
        monkeypatch):
    monkeypatch.setattr(source_core, "dest_reach", lambda sealed, key: 0)
    assert failing_seeds(1000)


@pytest.mark.timeout(120)
def test_a_sink_that_logs_blocks_done_before_their_dest_append_loses_them(monkeypatch):
    """A crash between the done record and the DEST append: the replacement skips blocks
    whose rows never landed."""
    def done_first(self):
        bids, rows = list(self.to_dest_blocks), b"".join(self.to_dest)
        self.newly_acked += bids
        self._commit()
        if rows:
            self.emit(AppendDest(task_log.block_key(bids[-1])[1], rows))
        self.to_dest, self.to_dest_blocks, self.to_dest_bytes = [], [], 0
    monkeypatch.setattr(source_core.SourceCore, "_append_dest", done_first)
    assert failing_seeds(1500)


@pytest.mark.timeout(120)
def test_without_resends_lost_messages_hang_the_job(monkeypatch):
    monkeypatch.setattr(delivery, "resend_due", lambda *args: False)
    assert failing_seeds(300)


FOLLOW_SEEDS = int(os.environ.get("RAINSTORM_SIM_FOLLOW_SEEDS", "3000"))


@pytest.mark.timeout(300)
def test_following_jobs_are_exactly_once_with_appends_during_faults_and_a_stop():
    """SRC grows while the job runs and faults strike; after `stop`, DEST is the oracle's
    over the snapshot and every line the follower took, and it took every append settled
    before the stop."""
    assert_exact(range(FOLLOW_SEEDS), follow=True)


def failing_follow_seeds(count: int) -> list[int]:
    return next(([seed] for seed in range(count)
                 if not stream_sim.run(seed, follow=True).exact), [])


@pytest.mark.timeout(120)
def test_without_the_poll_after_the_stop_appends_made_before_it_are_lost(monkeypatch):
    def end_at_once(self, now):
        self.stopping = True
        if self.follower and self.partition_read and not self.fed_all:
            self._end(final_line=True)
    monkeypatch.setattr(source_core.SourceCore, "on_stopping", end_at_once)
    assert failing_follow_seeds(300)


@pytest.mark.timeout(120)
def test_without_logging_its_batches_a_replaced_follower_reads_other_lines(monkeypatch):
    real_log = source_core.SourceCore.log

    def log_no_tail(self, record):
        if "tail" in record:
            record = {"done": {}}
        return real_log(self, record)
    monkeypatch.setattr(source_core.SourceCore, "log", log_no_tail)
    assert failing_follow_seeds(300)


@pytest.mark.timeout(120)
def test_replaced_followers_resume_from_checkpoints_in_the_simulated_schedules(monkeypatch):
    """The checkpoint path (a replacement that skips its partition and first batches) is
    exercised by the schedules above, not only written."""
    resumed = []
    real = source_core.SourceCore._resume
    monkeypatch.setattr(source_core.SourceCore, "_resume",
                        lambda self, at: resumed.append(at) or real(self, at))
    assert not failing_follow_seeds(300)
    assert resumed


@pytest.mark.timeout(120)
def test_leader_failovers_mid_job_are_among_the_simulated_schedules_and_stay_exact():
    """The thousands of schedules above include the leader's failure: a successor takes
    the job over from its record while the old leader acts on, deposed. This pins that they
    do (and often), so that the exactness checked above covers them."""
    taken_over = deposed_acted = 0
    for seed in range(600):
        outcome = stream_sim.run(seed)
        assert outcome.exact, outcome.explain()
        text = "\n".join(outcome.transcript)
        taken_over += "takes over" in text
        deposed_acted += "deposed leader" in text
    assert taken_over >= 100 and deposed_acted >= 10, (taken_over, deposed_acted)


@pytest.mark.timeout(120)
def test_a_chained_source_that_takes_one_ack_for_all_its_destinations_loses_output(monkeypatch):
    """About half of the schedules chain OP1 into the sources, whose output split by key
    waits for an ack from every destination: a block marked done on the first one's is
    lost when another destination fails before it has the block safe."""
    from stream import in_flight
    acked = in_flight.InFlight.acked

    def first_ack_for_all(self, now, sender, bids):
        for bid in bids:
            entry = self.entries.get(bid)
            if entry is not None and sender in entry.waiting:
                entry.waiting = {sender}
        return acked(self, now, sender, bids)

    monkeypatch.setattr(in_flight.InFlight, "acked", first_ack_for_all)
    assert failing_seeds(1000)


@pytest.mark.timeout(30)
def test_chained_jobs_are_half_of_the_simulated_schedules():
    chained = sum(stream_sim.knobs_for(random.Random(seed)).chained for seed in range(200))
    assert 60 <= chained <= 140, chained


@pytest.mark.timeout(30)
def test_sinks_are_most_of_the_chained_app1_schedules():
    """App 1's OP2 is stateless: chained, its sources usually run it too (a sink)."""
    worlds = [stream_sim.World(seed) for seed in range(400)]
    chained_app1 = [w for w in worlds if w.k.chained and w.k.app == 1]
    sinks = sum(w.sinks for w in chained_app1)
    assert 0.6 * len(chained_app1) <= sinks < len(chained_app1), (sinks, len(chained_app1))


def stopped_early(seed: int) -> stream_sim.World:
    """A finite job stopped at a random time, under crashes and pauses."""
    rng = random.Random(seed)
    k = stream_sim.knobs_for(rng)
    k.stop_at, k.lines = rng.uniform(0.05, 1.0), rng.randint(30, 120)
    k.source_rate, k.crash_per_effect = rng.choice([20.0, 60.0]), rng.choice([0.01, 0.03])
    world = stream_sim.World(seed, knobs=k)
    world.at(k.stop_at, "stop")
    return world


@pytest.mark.timeout(300)
def test_the_counters_agree_with_the_input_and_dest_in_the_simulated_schedules():
    """Review regressions. A finite job's source replaced before or after `stop` ended at its
    own reach, behind what its predecessor had sent, whose output was in DEST: those lines
    were never counted. A source that died after reporting done, before logging its last
    done marks, was started again when its exit came first, and its log's counts replaced
    the report's."""
    problems = []
    for seed in range(1500):
        world = stream_sim.World(seed)
        outcome = world.run()
        problems += [(seed, e) for e in world.count_errors()] if outcome.exact else []
    for seed in range(600):
        world = stream_sim.World(seed, follow=True)
        outcome = world.run()
        problems += [(seed, "follow", e) for e in world.count_errors()] if outcome.exact else []
    for seed in range(400):
        world = stopped_early(seed)
        outcome = world.run()
        assert outcome.finished and not outcome.failed, outcome.explain()
        problems += [(seed, "stopped", e) for e in world.count_errors(stopped=True)]
    assert not problems, problems[:5]
