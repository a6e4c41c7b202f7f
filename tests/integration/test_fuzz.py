"""The fuzzer (tests/fuzz.py) in the suite: 10,000 frames, over the UDP, TCP and HTTP ports
of two nodes of a cluster with a secret; afterwards every node is up and answers, lists the
same members, holds the HyDFS file made before byte for byte on every replica, and logged
its rejections, rate-limited. `make fuzz` is the full run (100,000 per node and port)."""

from __future__ import annotations

import pytest

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
