"""Fences (hydfs/fences.py, the store's part in hydfs/store.py): once a writer is replaced,
nothing it appends lands any more, on any path, and what stood before is sealed."""

from __future__ import annotations

import pytest

from hydfs.fences import Fence, Fences, seal, stronger, writer_client, writer_of
from hydfs.idset import IdSet
from hydfs.store import Fenced, ReplicaStore

pytestmark = pytest.mark.timeout(30)

K = "job/op2-0"


def ids(*pairs):
    return IdSet.of((writer_client(K, e), seq) for e, seq in pairs)


def test_writer_ids_carry_their_epoch_and_other_clients_are_not_writers():
    assert writer_of(writer_client(K, 7)) == (K, 7)
    assert writer_of("03@127.0.0.1:7003@1700000000000") is None
    assert writer_of("x#") is None and writer_of("#3") is None


@pytest.mark.parametrize("fence, epoch, seq, accepted, kept", [
    (None, 1, 1, True, True),
    (Fence(2), 2, 5, True, True),                      # provisional: the new epoch writes
    (Fence(2), 3, 5, True, True),
    (Fence(2), 1, 5, False, True),                     # no new ones from below; what is
                                                       # stored stands till the seal decides
    (Fence(2, ids((1, 4))), 1, 4, False, True),        # sealed: what stood stands
    (Fence(2, ids((1, 4))), 1, 5, False, False),       # ... and nothing else from below
    (Fence(2, ids((1, 4))), 2, 5, True, True),
], ids=str)
def test_a_fence_refuses_new_appends_from_below_and_keeps_only_the_sealed_ones(
        fence, epoch, seq, accepted, kept):
    fences = Fences({K: fence}) if fence else Fences()
    assert fences.accepts(writer_client(K, epoch)) is accepted
    assert fences.admits(writer_client(K, epoch), seq) is kept
    assert fences.accepts("some-node-client") and fences.admits("some-node-client", seq)


@pytest.mark.parametrize("a, b, winner", [
    (Fence(1), Fence(2), Fence(2)),
    (Fence(3, ids((1, 1))), Fence(2), Fence(3, ids((1, 1)))),
    (Fence(2), Fence(2, ids((1, 1))), Fence(2, ids((1, 1)))),     # sealed beats provisional
    (Fence(2, ids((1, 1))), Fence(2), Fence(2, ids((1, 1)))),
    (Fence(2, ids((1, 1)), 1), Fence(2, ids((1, 2)), 2), Fence(2, ids((1, 2)), 2)),  # retry
    (Fence(2, ids((1, 1)), 1), Fence(2, None, 2), Fence(2, None, 2)),
    (None, Fence(1), Fence(1)),
])
def test_the_stronger_fence_governs(a, b, winner):
    assert stronger(a, b) == winner


def test_a_seal_keeps_what_any_replica_held_but_not_what_an_earlier_seal_refused():
    # Epoch 2 sealed (1,1)..(1,3). A replica cut off meanwhile (no fence) took (1,4) from
    # the old writer; the others refused it. Epoch 3's seal must not bring (1,4) back.
    prior = Fence(2, ids((1, 1), (1, 2), (1, 3)))
    held = {"01": ids((1, 1), (1, 2), (1, 3), (2, 4)),
            "02": ids((1, 1), (1, 2), (1, 3), (2, 4)),
            "03": ids((1, 1), (1, 2), (1, 3), (1, 4))}        # the stale one
    assert seal(held, [prior, prior, None], K, 3) == ids((1, 1), (1, 2), (1, 3), (2, 4))


def test_a_seal_replayed_keeps_its_set_and_a_provisional_prior_refuses_nothing_read():
    done = Fence(3, ids((2, 9)))
    assert seal({"01": ids((2, 9), (2, 10))}, [done, Fence(3)], K, 3) == ids((2, 9))
    # Epoch 2 began but never sealed (its attempt died): nobody read, nothing is refused.
    assert seal({"01": ids((1, 1)), "02": ids((1, 1), (1, 2))}, [Fence(2), Fence(2)],
                K, 3) == ids((1, 1), (1, 2))


def test_admissible_and_refused_split_a_held_set():
    fences = Fences({K: Fence(2, ids((1, 1)))})
    held = ids((1, 1), (1, 2), (2, 3)).union(IdSet.of([("other", 1)]))
    assert fences.admissible(held) == ids((1, 1), (2, 3)).union(IdSet.of([("other", 1)]))
    assert fences.refused(held) == [(writer_client(K, 1), 2)]


# -- the store --------------------------------------------------------------------------------

def store_with_appends(tmp_path, name="f", appends=((1, 1), (1, 2))) -> ReplicaStore:
    store = ReplicaStore(str(tmp_path))
    store.create(name, "F", [b"base\n"], 5)
    for epoch, seq in appends:
        store.append(name, writer_client(K, epoch), seq, float(seq), f"e{epoch}s{seq}\n".encode())
    return store


def content(store: ReplicaStore, name="f") -> bytes:
    snap = store.snapshot(name)
    try:
        return b"".join(store.read_chunks(snap))
    finally:
        snap.close()


def test_a_begun_fence_refuses_the_old_writer_and_survives_a_restart(tmp_path):
    store = store_with_appends(tmp_path)
    prior, held = store.begin_fence("f", K, 2)
    assert prior is None and held == ids((1, 1), (1, 2))
    with pytest.raises(Fenced):
        store.append("f", writer_client(K, 1), 3, 3.0, b"zombie\n")
    assert store.append("f", writer_client(K, 1), 2, 2.0, b"e1s2\n") is False   # a retry: held
    assert store.append("f", writer_client(K, 2), 3, 3.0, b"e2s3\n") is True
    restarted = ReplicaStore(str(tmp_path))
    with pytest.raises(Fenced):
        restarted.append("f", writer_client(K, 1), 3, 3.0, b"zombie\n")
    with pytest.raises(Fenced):
        restarted.begin_fence("f", K, 1)                # an older fence is itself refused


def test_sealing_drops_what_the_seal_left_out_pending_and_merged(tmp_path):
    store = store_with_appends(tmp_path, appends=((1, 1), (1, 2), (1, 3)))
    store.apply_merge("f", 1, "m", ids((1, 1), (1, 2)))        # two merged, one pending
    store.begin_fence("f", K, 2)
    lacking = store.seal_fence("f", K, 2, ids((1, 1), (1, 4)))  # (1,4) stood elsewhere
    assert lacking == [[writer_client(K, 1), 4]]
    assert content(store) == b"base\ne1s1\n"
    assert ReplicaStore(str(tmp_path)).get_state("f").held() == ids((1, 1))


def test_records_from_a_peer_are_filtered_by_our_fences(tmp_path):
    store = store_with_appends(tmp_path, appends=((1, 1),))
    store.begin_fence("f", K, 2)
    store.seal_fence("f", K, 2, ids((1, 1)))
    records = [({"id": [writer_client(K, 1), 2], "ts": 2.0, "size": 7}, [b"zombie\n"]),
               ({"id": [writer_client(K, 2), 2], "ts": 3.0, "size": 5}, [b"e2s2\n"])]
    store.add_records("f", records)
    assert content(store) == b"base\ne1s1\ne2s2\n"


def test_learning_a_stronger_fence_from_a_peer_drops_a_cut_off_replicas_extra_append(tmp_path):
    stale = store_with_appends(tmp_path, appends=((1, 1), (1, 2)))   # (1,2) came after the seal
    stale.learn_fences("f", Fences({K: Fence(2, ids((1, 1)))}))
    assert content(stale) == b"base\ne1s1\n"
    stale.learn_fences("f", Fences({K: Fence(1)}))                   # weaker: changes nothing
    assert stale.get_state("f").fences.get(K) == Fence(2, ids((1, 1)))


def test_a_fence_retried_after_a_partial_seal_is_sealed_anew_and_replaces_the_old_seal():
    """Review finding: try 1 sealed replica A with commit 3, which only A held, then failed;
    A was dropped from the replicas; try 2 seals {1, 2} on the others, and the attempt
    re-appends commit 3. When A comes back, try 2's seal must win there too."""
    try1 = Fence(2, ids((1, 1), (1, 2), (1, 3)), 1)
    held = {"02": ids((1, 1), (1, 2)), "03": ids((1, 1), (1, 2))}
    assert seal(held, [Fence(2, None, 1), None], K, 2, 2) == ids((1, 1), (1, 2))
    try2 = Fence(2, ids((1, 1), (1, 2)), 2)
    assert stronger(try1, try2) == try2
    assert not Fences({K: try2}).admits(writer_client(K, 1), 3)


def test_a_fence_that_began_and_never_sealed_drops_nothing_anywhere(tmp_path):
    """Review finding: a provisional fence (its attempt died mid-fence) used to make every
    copy that learned it drop the writer's acknowledged appends."""
    store = store_with_appends(tmp_path, appends=((1, 1), (1, 2)))
    store.learn_fences("f", Fences({K: Fence(2)}))
    assert content(store) == b"base\ne1s1\ne1s2\n"
    records = [({"id": [writer_client(K, 1), 3], "ts": 3.0, "size": 5}, [b"e1s3\n"])]
    store.add_records("f", records)                  # re-replication still carries them
    assert content(store) == b"base\ne1s1\ne1s2\ne1s3\n"
    with pytest.raises(Fenced):                      # but a new one is refused
        store.append("f", writer_client(K, 1), 4, 4.0, b"e1s4\n")


def test_an_older_try_of_a_fence_is_refused_once_a_later_one_began(tmp_path):
    store = store_with_appends(tmp_path)
    store.begin_fence("f", K, 2, rnd=2)
    with pytest.raises(Fenced):
        store.begin_fence("f", K, 2, rnd=1)
    with pytest.raises(Fenced):
        store.seal_fence("f", K, 2, ids((1, 1)), rnd=1)


def test_a_second_fence_at_one_epoch_tries_higher_rounds_than_the_first():
    """Chaos seed 9114 (make test, under load): a leader's take-over fenced a job's record
    at its epoch in many tries while a replica caught up; its on-demand take-over of the same
    job then fenced again starting at round 1, was refused as `fenced` ('a newer leader
    fenced...') and the caller gave up. Rounds now rise across a client's fence calls."""
    from types import SimpleNamespace

    from cluster.metrics import Registry
    from hydfs.client import HydfsClient
    from hydfs.metrics import HydfsMetrics
    rounds = []

    def call(vm, message, timeout=None):
        rounds.append(message["round"])
        return {"sealed": {}}
    service = SimpleNamespace(
        peers=SimpleNamespace(call=call), metrics=HydfsMetrics(Registry()), store=None,
        membership=SimpleNamespace(me=lambda: SimpleNamespace(id="c")))
    client = HydfsClient(service, 0, 5)
    client._write = lambda name, attempt: [attempt("01") for _ in range(5)][-1]
    client._invalidate = lambda name: None
    client.fence("f", "leader", 7)
    first = list(rounds)
    client.fence("f", "leader", 7)
    assert min(rounds[len(first):]) > max(first)
