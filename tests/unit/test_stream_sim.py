"""The stream engine's exactly-once property, checked by the simulator (tests/stream_sim.py).

Over thousands of seeded schedules (crashes at any effect, workers declared failed, paused
workers whose attempts resume as zombies and finish their writes late, lost, duplicated and
reordered messages, refused starts), both classic applications give exactly the oracle's
output and every job ends. A failing seed prints its transcript; replay it with
`python -m tests.stream_sim SEED`.

The simulator has teeth: with fencing, the DEST check of a replacement's redo, or resends
taken out, it finds failing seeds (the last tests), so a pass means something.
"""

from __future__ import annotations

import os

import pytest

from hydfs.fences import Fences
from stream import delivery, operator_core
from tests import stream_sim

SEEDS = int(os.environ.get("RAINSTORM_SIM_SEEDS", "10000"))


@pytest.mark.timeout(300)
def test_both_apps_are_exactly_once_over_thousands_of_seeded_schedules():
    failures = []
    for seed in range(SEEDS):
        outcome = stream_sim.run(seed)
        if not outcome.exact:
            failures.append(outcome)
            if len(failures) == 3:
                break
    assert not failures, "\n\n".join(o.explain() for o in failures)


def failing_seeds(count: int) -> list[int]:
    return [seed for seed in range(count) if not stream_sim.run(seed).exact]


@pytest.mark.timeout(120)
def test_without_fences_zombies_double_the_output(monkeypatch):
    monkeypatch.setattr(Fences, "accepts", lambda self, client: True)
    assert failing_seeds(1000)


@pytest.mark.timeout(120)
def test_without_the_dest_check_a_replacement_appends_a_commit_twice(monkeypatch):
    monkeypatch.setattr(operator_core, "_sealed_seqs", lambda sealed, key: set())
    assert failing_seeds(1000)


@pytest.mark.timeout(120)
def test_without_resends_lost_messages_hang_the_job(monkeypatch):
    monkeypatch.setattr(delivery, "resend_due", lambda *args: False)
    assert failing_seeds(300)
