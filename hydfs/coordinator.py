"""Coordinated HyDFS writes: create, append and merge, run by one of the file's replicas.

A client sends a write to the file's first reachable replica (the primary, in ring order).
That node coordinates, holding a per-file lock so that racing writes are serialized:

- create: refused if any replica already holds the name (so of racing creates exactly one
  wins); otherwise stored here and, chunk by chunk as it arrives, streamed on to every other
  replica (fanout.py), and successful only when all of them hold it; a failed create is
  rolled back.
- append: applied here and, streamed while it arrives, on every other replica; successful
  only when all hold it, so an append that returned success survives any `replicas - 1`
  failures. Each append carries its id (client, seq), so a retried append is stored once.
  A replica that does not hold the file yet (it just became a replica) is sent the whole
  file first.
- merge: `merge.plan_merge` over every replica's summary; the coordinator gathers every
  append any replica holds, sends each replica what it lacks, and every replica merges the
  same set, which gives the same bytes (merge.py). The primary of a file also merges it on
  its own once its copy holds many pending appends (`merge.merge_due`, `[hydfs]
  merge_after_appends`), which one thread checks every MERGE_CHECK seconds.

A node that is not among the file's replicas (its ring view differs from the client's)
answers `not_owner`, and the client retries with fresh membership.

The decisions (who wins a create, when an append is acknowledged) are pure functions in
write_rules.py; this module gathers the facts they need, asks, and acts. It is built on a
`HydfsService` (the node's replica: its store, its peers, the ring) and serves `routes()`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from cluster import wire
from cluster.chunks import drain
from cluster.errors import HandlerError
from cluster.logs import Occasional
from cluster.messages import OK
from cluster.rpc import RemoteError, Unreachable
from hydfs import fences
from hydfs import messages as m
from hydfs import write_rules
from hydfs.fences import Fence
from hydfs.fanout import Fanout
from hydfs.idset import IdSet
from hydfs.merge import automatic_plan, merge_due, plan_merge
from hydfs.service import HydfsService
from hydfs.store import CorruptReplica, Fenced, FileExists, LostCreateRace
from hydfs.summary import held_ids

log = logging.getLogger("hydfs")

MERGE_CHECK = 2.0        # seconds between looks for files due a merge (merge.merge_due)


def not_enough_replicas(name: str, reachable: int, needed: int) -> HandlerError:
    return HandlerError(m.NOT_ENOUGH_REPLICAS,
                        f"not enough live replicas for {name}: {reachable} of {needed} "
                        f"reachable (retry once failed nodes are detected)")


def too_small(name: str, live: int, needed: int) -> str:
    """The reason a write fails when the cluster itself has fewer live nodes than replicas."""
    nodes = "node" if live == 1 else "nodes"
    return (f"not enough live replicas for {name}: only {live} {nodes} in the cluster, "
            f"a write needs {needed}")


def no_quorum(name: str, live: int, configured: int) -> str:
    """The reason a write fails on a node that sees no majority of the cluster."""
    return (f"no write to {name} here: this node sees {live} of the {configured} nodes of "
            f"[nodes] live, and a write needs a majority ({configured // 2 + 1}), so that "
            f"the minority side of a partition writes nothing; start more of them, or list "
            f"in [nodes] only the nodes you run")


def already_exists(name: str) -> HandlerError:
    return HandlerError(m.FILE_EXISTS, f"file {name} already exists in HyDFS")


class Coordinator:
    def __init__(self, service: HydfsService):
        self.service = service
        self.store = service.store
        self.peers = service.peers
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._merges_failed = Occasional(first=3)
        self._merger = threading.Thread(target=self._merge_loop, name="hydfs-merger",
                                        daemon=True)

    def start(self) -> None:
        self._merger.start()

    def stop(self) -> None:
        self._stop.set()

    def routes(self) -> dict:
        return {m.CREATE: self.handle_create, m.APPEND: self.handle_append,
                m.MERGE: self.handle_merge, m.DISCARD: self.handle_discard,
                m.FENCE: self.handle_fence}

    def _lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def _owners_or_refuse(self, name: str) -> list[str]:
        ring = self.service.ring()                  # one view of the members for all checks
        owners = ring.replicas(name, self.service.replicas)
        if self.service.vm not in owners:
            raise HandlerError(m.NOT_OWNER,
                               f"not_owner: node {self.service.vm} is not a replica of {name}")
        if len(owners) < self.service.replicas:     # a write must survive replicas-1 failures
            # Retryable, unlike the client's own check: this node's view may lag.
            raise HandlerError(m.NOT_ENOUGH_REPLICAS,
                               too_small(name, len(owners), self.service.replicas))
        live, configured = len(ring.nodes_in_order()), len(self.service.config.nodes)
        if not write_rules.has_quorum(live, configured):
            raise HandlerError(m.NO_QUORUM, no_quorum(name, live, configured))
        return owners

    def _home_or_refuse(self, name: str) -> None:
        home = self.service.home_ring.replicas(name, self.service.replicas)
        live = self.service.ring().nodes_in_order()
        if not write_rules.may_create(home, live):
            raise HandlerError(m.HOME_UNREACHABLE, (
                f"cannot create {name} now: every node that holds such a name when all are "
                f"up ({', '.join(home)}) is down or cut off, and may hold it already"))

    # -- create -----------------------------------------------------------------------------

    def handle_create(self, conn, msg: dict) -> None:
        name = m.file_name(msg)
        size = wire.bulk_length(msg)
        file_id = str(msg["file_id"])
        try:
            owners = self._owners_or_refuse(name)
            self._home_or_refuse(name)
        except HandlerError:
            conn.discard_bulk(size)
            raise
        with self._lock(name):
            others = [vm for vm in owners if vm != self.service.vm]
            held, silent = self._held_file_ids(name, others)
            verdict = write_rules.arbitrate_create(file_id, held, silent)
            if verdict != write_rules.CREATE:
                conn.discard_bulk(size)
            if verdict == write_rules.ALREADY_CREATED:   # ours, retried after a lost reply
                conn.send({"t": OK, "replicas": owners})
                return
            if verdict == write_rules.EXISTS:
                raise already_exists(name)
            if verdict == write_rules.NOT_ENOUGH:
                raise not_enough_replicas(name, len(owners) - len(silent), len(owners))
            with self.service.in_flight.holding(name):    # re-replication keeps off it
                failed = self._store_and_forward(conn, name, file_id, size, others)
                if failed:
                    self._roll_back_create(name, file_id, others)
            if failed:
                raise not_enough_replicas(name, len(owners) - len(failed), len(owners))
        log.info("CREATE %s (%d bytes) on %s", name, size, ",".join(owners))
        conn.send({"t": OK, "replicas": owners})

    def _held_file_ids(self, name: str, others: list[str]) -> tuple[dict, list]:
        """Which create's copy each replica holds (None: no copy), and the replicas that did
        not answer: the facts create arbitration needs."""
        mine = self.store.get_state(name)
        held = {self.service.vm: mine.file_id if mine is not None else None}
        replies = self.service.parallel(
            lambda vm: self.peers.call(vm, {"t": m.SUMMARY, "name": name}, 5), others)
        silent = []
        for vm, reply in zip(others, replies):
            if isinstance(reply, Exception):
                silent.append(vm)
            else:
                held[vm] = (reply.get("summary") or {}).get("file_id")
        return held, silent

    def _store_and_forward(self, conn, name: str, file_id: str, size: int,
                           others: list[str]) -> list[str]:
        """Store the create's bytes here as they arrive, streaming each chunk on to the
        other replicas at the same time; the replicas that failed to store it."""
        header = {"t": m.CREATE_REPLICA, "name": name, "file_id": file_id}
        with Fanout(self.peers, others, header, size, self.service.is_live) as fanout:
            if fanout.failed:      # a replica is unreachable already: refuse before storing
                conn.discard_bulk(size)
                return list(fanout.failed)
            try:
                self.store.create(name, file_id, fanout.tee(conn.recv_bulk_chunks(size)), size)
            except LostCreateRace:  # another create won here while ours streamed: undo ours
                fanout.finish()
                self._roll_back_create(name, file_id, others)
                raise already_exists(name) from None
            except FileExists:     # raised before a byte was read; the replicas got none
                conn.discard_bulk(size)
                raise already_exists(name) from None
            except BaseException:  # e.g. the client left, or our disk failed after the last
                fanout.finish()    # chunk: replicas with every byte have it; wait, then undo
                self._roll_back_create(name, file_id, others)
                raise
            failed = fanout.finish()
        for vm, reason in failed.items():
            log.warning("CREATE %s: replica vm%s failed: %s", name, vm, reason)
        return list(failed)

    def _roll_back_create(self, name: str, file_id: str, others: list[str]) -> None:
        self._discard(name, file_id)
        self.service.parallel(lambda vm: self.peers.call(
            vm, {"t": m.DISCARD, "name": name, "file_id": file_id}, 5), others)

    def handle_discard(self, conn, msg: dict) -> None:
        self._discard(m.file_name(msg), msg["file_id"])
        conn.send({"t": OK})

    def _discard(self, name: str, file_id) -> None:
        """Remove our copy of a failed create: only that create's, and only untouched."""
        with self.store.lock(name):
            st = self.store.get_state(name)
            if st is not None and st.file_id == file_id and st.gen == 0 and not st.pending:
                self.store.remove(name)

    # -- append -----------------------------------------------------------------------------

    def handle_append(self, conn, msg: dict) -> None:
        """Store the append as it streams in, streaming it on to every other replica at the
        same time (so the replicas' fsyncs overlap ours); a replica that missed it (it does
        not hold the file yet, or failed) gets it again from our copy."""
        name = m.file_name(msg)
        client, seq, ts = m.append_id(msg)
        size = m.append_size(msg)
        try:
            owners = self._owners_or_refuse(name)
            self._ensure_local_copy(name, owners)
        except HandlerError:
            conn.discard_bulk(size)
            raise
        if not self.store.state(name).fences.accepts(client):    # refused before a byte
            conn.discard_bulk(size)                                # goes to the replicas
            raise HandlerError(m.FENCED, f"{name}: {client} was replaced by a newer writer")
        others = [vm for vm in owners if vm != self.service.vm]
        header = {"t": m.APPEND_REPLICA, "name": name, "id": [client, seq], "ts": ts}
        with Fanout(self.peers, others, header, size, self.service.is_live) as fanout:
            chunks = fanout.tee(conn.recv_bulk_chunks(size))
            try:
                new = self.store.append_stream(name, client, seq, ts, size, chunks)
            except Fenced as exc:
                drain(chunks)
                raise HandlerError(m.FENCED, str(exc)) from None
            if not new:
                drain(chunks)      # a retry of an append we hold: the replicas dedupe it too
            fanout.finish()
        fenced_by = write_rules.fenced_by(fanout.codes)
        if fenced_by:              # our copy missed a fence: learn it (it drops the append)
            self.service.learn_fences_from(fenced_by[0], name)
            raise HandlerError(m.FENCED, f"{name}: {client} was replaced by a newer writer")
        catch_up = write_rules.to_catch_up(fanout.codes)
        results = self.service.parallel(
            lambda vm: self._catch_up(vm, name, header, (client, seq)), catch_up)
        caught_up = [vm for vm, result in zip(catch_up, results) if result is True]
        acked = write_rules.append_acknowledged(owners, fanout.codes, caught_up)
        if acked < len(owners):
            raise not_enough_replicas(name, acked, len(owners))
        conn.send({"t": OK, "new": new, "replicas": owners})

    def _catch_up(self, vm: str, name: str, header: dict, append_id) -> bool:
        """Send the append again to a replica that lacked the file (re-replication may have
        brought it meanwhile); if it still lacks it, give it the whole file first."""
        try:
            self._send_append(vm, name, header, append_id)
        except RemoteError as exc:
            if exc.code != m.MISSING:
                raise
            self.service.push(name, vm)
            self._send_append(vm, name, header, append_id)
        return True

    def _send_append(self, vm: str, name: str, header: dict, append_id) -> None:
        size, _, chunks = self.store.append_chunks(name, append_id)
        with self.peers.open(vm, timeout=30) as conn:
            try:
                conn.send_bulk_chunks(header, size, chunks)
            except (OSError, wire.ProtocolError) as exc:
                raise Unreachable(f"node {vm}: {exc}") from None
            self.peers.reply_to(vm, conn)

    def _ensure_local_copy(self, name: str, owners: list[str]) -> None:
        """A replica that does not hold the file yet pulls it before coordinating."""
        if self.store.get_state(name) is not None:
            return
        with self._lock(name):
            if self.store.get_state(name) is not None:
                return
            ring_order = self.service.ring().nodes_in_order()
            candidates = [vm for vm in owners + ring_order if vm != self.service.vm]
            for vm in dict.fromkeys(candidates):
                try:
                    self.service.pull(name, vm)
                    return
                except (Unreachable, RemoteError, OSError, wire.ProtocolError):
                    continue
        raise HandlerError(m.NO_SUCH_FILE, f"no such file {name} in HyDFS")

    # -- merge ------------------------------------------------------------------------------

    def handle_merge(self, conn, msg: dict) -> None:
        name = m.file_name(msg)
        owners = self._owners_or_refuse(name)
        self._ensure_local_copy(name, owners)
        started = time.monotonic()
        with self._lock(name):
            result = self._merge(name, owners)
        result["seconds"] = round(time.monotonic() - started, 4)
        conn.send(dict(result, t=OK))

    def _merge(self, name: str, owners: list[str], automatic: bool = False) -> dict:
        """Every replica ends with all appends any of them holds, merged (merge.py); an
        `automatic` merge takes only those stamped a grace ago (merge.automatic_plan)."""
        me = self.service.vm
        others = [vm for vm in owners if vm != me]
        summaries = {me: self.store.state(name).summary()}
        for vm, reply in zip(others, self.service.parallel(lambda vm: self._summary(vm, name),
                                                           others)):
            if isinstance(reply, Exception):
                raise not_enough_replicas(name, len(owners) - 1, len(owners))
            if reply is None:
                self.service.push(name, vm)      # a new replica: give it the file first
                reply = self._summary(vm, name)
            summaries[vm] = reply
        plan = plan_merge(summaries)
        if plan is not None and automatic:
            plan = automatic_plan(plan, summaries, self.store.state(name).pending, time.time())
        if plan is None:
            return {"merged": 0, "gen": summaries[me]["gen"], "already": True}
        self.store.learn_fences(name, plan.fences)    # before gathering: it filters by them
        for vm in others:                         # gather every append we lack
            if self.store.state(name).held().covers(plan.target):
                break
            self.service.pull(name, vm)
        merge_id = f"{me}-{uuid.uuid4().hex[:8]}"
        request = {"t": m.APPLY_MERGE, "name": name, "gen": plan.gen,
                   "merge_id": merge_id, "target": plan.target.to_wire(),
                   "fences": plan.fences.to_wire()}
        self._apply_everywhere(name, request, others, summaries, plan, merge_id)
        log.info("MERGE %s: %d appends, generation %d on %s", name, len(plan.target),
                 plan.gen, ",".join(owners))
        return {"merged": len(plan.target) - len(IdSet(summaries[me]["merged"])),
                "gen": plan.gen, "already": False}

    def _merge_loop(self) -> None:
        while not self._stop.wait(MERGE_CHECK):
            if not self.service.membership.is_joined():
                continue
            try:
                due = self.due_merges()
            except Exception:               # a bug here must not end automatic merges
                log.exception("looking for files due a merge failed")
                continue
            for name in due:
                if self._stop.is_set():
                    return
                try:
                    with self._lock(name):
                        self._merge(name, self._owners_or_refuse(name), automatic=True)
                except Exception as exc:    # replicas down, no quorum: the next look retries
                    if (n := self._merges_failed.due()) is not None:
                        log.warning("automatic merge of %s not done (%d so far): %s",
                                    name, n, exc)

    def due_merges(self) -> list[str]:
        """The files this node is the primary of whose copy here is due a merge."""
        due = []
        for name in self.store.names():
            st = self.store.get_state(name)
            if st is not None and merge_due(len(st.pending), st.size - st.base_size,
                                            self.service.config.hydfs.merge_after_appends) and \
                    self.service.owners(name)[:1] == [self.service.vm]:
                due.append(name)
        return due

    def _summary(self, vm: str, name: str):
        return self.peers.call(vm, {"t": m.SUMMARY, "name": name}, 10)["summary"]

    def _apply_everywhere(self, name: str, request: dict, others: list[str], summaries,
                          plan, merge_id: str) -> None:
        """Apply the merge here and on every other replica at once (each result depends
        only on the set of appends, so the order does not matter); a replica that lacks
        appends is sent them first."""
        def apply(vm):
            if vm == self.service.vm:
                if self.store.apply_merge(name, plan.gen, merge_id, plan.target, plan.fences):
                    raise HandlerError(m.MERGE_FAILED,
                                       f"merge of {name}: could not gather every append")
                return True
            if self.peers.call(vm, request, 60)["missing"]:
                self.service.push(name, vm, exclude=held_ids(summaries[vm]))
                if self.peers.call(vm, request, 60)["missing"]:
                    raise RemoteError(m.MERGE_FAILED, f"node {vm} could not apply the merge")
            return True
        results = self.service.parallel(apply, [self.service.vm] + others)
        if any(isinstance(r, Exception) for r in results):
            ok = sum(1 for r in results if r is True)
            raise not_enough_replicas(name, ok, len(others) + 1)

    # -- fence ------------------------------------------------------------------------------

    def handle_fence(self, conn, msg: dict) -> None:
        """Fence `name` against writer `key`'s epochs below `epoch` (fences.py): begin on
        every replica, seal with what they held, and make each hold exactly that."""
        name = m.file_name(msg)
        key, epoch, rnd = m.fence_of(msg)
        owners = self._owners_or_refuse(name)
        self._ensure_local_copy(name, owners)
        with self._lock(name):
            try:
                sealed = self._fence(name, owners, key, epoch, rnd)
            except Fenced as exc:           # a higher epoch (or try) began meanwhile
                raise HandlerError(m.FENCED, str(exc)) from None
        log.info("FENCE %s: %s below epoch %d sealed with %d appends", name, key, epoch,
                 len(sealed))
        conn.send({"t": OK, "sealed": sealed.to_wire()})

    def _fence(self, name: str, owners: list[str], key: str, epoch: int, rnd: int) -> IdSet:
        me = self.service.vm
        others = [vm for vm in owners if vm != me]
        fields = {"name": name, "key": key, "epoch": epoch, "round": rnd}

        def begin(vm):
            if vm == me:
                return self.store.begin_fence(name, key, epoch, rnd)
            reply = self.peers.call(vm, dict(fields, t=m.FENCE_BEGIN), 30)
            prior = Fence.from_wire(reply["prior"]) if reply.get("prior") else None
            return prior, IdSet(reply["held"])
        begun = self._everywhere(name, begin, owners)
        sealed = fences.seal({vm: held for vm, (_, held) in begun.items()},
                             [prior for prior, _ in begun.values()], key, epoch, rnd)
        lacking = self.store.seal_fence(name, key, epoch, sealed, rnd)
        for vm in others:                       # gather what we lack of the sealed set
            if not lacking:
                break
            try:
                self.service.pull(name, vm)
            except (Unreachable, RemoteError, OSError, wire.ProtocolError, CorruptReplica):
                continue
            lacking = [i for i in lacking if not self.store.state(name).holds(tuple(i))]
        if lacking:
            raise not_enough_replicas(name, len(owners) - 1, len(owners))

        def seal(vm):
            reply = self.peers.call(vm, dict(fields, t=m.FENCE_SEAL, sealed=sealed.to_wire()), 30)
            if reply["lacking"]:
                self.service.push(name, vm, exclude=held_ids(reply["summary"]))
            return True
        self._everywhere(name, seal, others)
        return sealed

    def _everywhere(self, name: str, step, vms: list[str]) -> dict:
        """step(vm) on every replica at once; their results, or the refusal: fenced if any
        replica is, not enough replicas if any failed otherwise."""
        results = dict(zip(vms, self.service.parallel(step, vms)))
        failed = {vm: r for vm, r in results.items() if isinstance(r, Exception)}
        if any(isinstance(r, Fenced) or getattr(r, "code", None) == m.FENCED
               for r in failed.values()):
            raise HandlerError(m.FENCED, f"{name}: fenced by a newer epoch already")
        if failed:
            raise not_enough_replicas(name, len(vms) - len(failed), len(vms))
        return results
