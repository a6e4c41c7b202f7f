"""The fuzzer (tests/fuzz.py) in the suite: 10,000 frames, over the UDP, TCP and HTTP ports
of two nodes of a cluster with a secret; afterwards every node is up and answers, lists the
same members, holds the HyDFS file made before byte for byte on every replica, and logged
its rejections, rate-limited. `make fuzz` is the full run (100,000 per node and port)."""

from __future__ import annotations

import pytest

from hydfs.idset import IdSet
from tests import fuzz

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

FRAMES = 10_000
SEED = 425


@pytest.mark.parametrize("seed", [SEED])
def test_ten_thousand_fuzzed_frames_leave_every_node_up_and_correct(local_cluster, seed):
    cluster = local_cluster(4, secret=fuzz.SECRET)
    known, dead, captured, content, leader_epoch = fuzz.prepare(cluster)
    targets = ["01", "02"]             # the introducer and a node, each on all three ports
    per_port = FRAMES // (3 * len(targets))
    counts = fuzz.run(cluster, targets, per_port, seed,
                      fuzz.Frames(seed, known, dead, captured))
    assert counts.get("unsent", 0) <= per_port // 100, counts      # frames really went
    assert {k.split()[1] for k in counts if k.startswith("udp")} == set(fuzz.UDP_KINDS)
    assert fuzz.check(cluster, known, content, per_port, targets, leader_epoch) == []


def test_every_relay_of_a_task_refuses_a_bad_name_with_its_code(local_cluster):
    """`make fuzz` found it (seed 8128): stream.hydfs_watch let HyDFS's bad_name error out
    as an internal error with a traceback, where every other relay answers its code."""
    cluster = local_cluster(3, secret=fuzz.SECRET)
    none = IdSet().to_wire()
    relays = [{"t": "stream.hydfs_watch", "name": "../x", "known": none, "timeout": 0},
              {"t": "stream.hydfs_settled", "name": "../x"},
              {"t": "stream.hydfs_read", "name": "../x"},
              {"t": "stream.hydfs_read_view", "name": "../x", "ids": none, "create": True},
              {"t": "stream.hydfs_fence", "name": "../x", "key": "k", "epoch": 1}]
    frames = fuzz.Frames(0, [], [], [])
    for relay in relays:
        answer = fuzz._ask_raw(cluster.address("02"), frames.signed(frames.dumps(relay),
                                                                     fuzz.KEY))
        assert b'"bad_name"' in answer, (relay["t"], answer[:300])
    assert "Traceback" not in cluster.log("02")
