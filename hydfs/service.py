"""The HyDFS replica service: the node's I/O shell around its `ReplicaStore`.

It answers other nodes' requests about the copies this node holds (summaries, manifests,
gets, views, watches, state transfers, replica appends, merge steps; `routes()` is its
dispatch table, the types are in messages.py) and runs the re-replicator: a thread that
wakes at every membership change (`on_membership`) and every `resync` seconds, collects
every live member's manifest, and carries out `replication.plan` (pull what this node should
hold and lacks; drop copies it no longer needs). Coordinated operations (create, append,
merge) live in `coordinator.py`; the client side in `client.py`.

The node's server runs each connection in a thread of its own (cluster/server.py), so a
watch, which waits up to messages.MAX_WATCH seconds for a new append, ties up only the
thread of its own connection (and no file lock, store.py), never this service's pool.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from cluster import wire
from cluster.chunks import drain
from cluster.config import Config
from cluster.errors import BAD_REQUEST, HandlerError
from cluster.messages import OK
from cluster.metrics import Registry
from cluster.rpc import Peers, RemoteError, Unreachable
from hydfs import messages as m
from hydfs import replication, transfer
from hydfs.checked_read import BLOCK
from hydfs.idset import IdSet
from hydfs.metrics import HydfsMetrics
from hydfs.read_ahead import CheckedRanges
from hydfs.read_rules import is_behind
from hydfs.ring import Ring
from hydfs.fences import Fences
from hydfs.store import (CorruptReplica, Fenced, FileExists, LacksAppends, LostCreateRace,
                         NoSuchFile, ReplicaStore)
from hydfs.summary import fences_of, held_ids
from membership.service import MembershipService

log = logging.getLogger("hydfs")

PARALLEL_TIMEOUT = 120.0     # no fan-out waits forever on one stuck peer


class HydfsService:
    def __init__(self, config: Config, vm: str, membership: MembershipService,
                 metrics: Registry | None = None):
        self.config = config
        self.vm = vm
        self.membership = membership
        self.replicas = config.hydfs.replicas
        self.bits = config.hydfs.ring_bits
        self.home_ring = Ring(sorted(config.nodes), self.bits)   # every node up: names' homes
        self.store = ReplicaStore(os.path.join(config.node_data_dir(vm), "hydfs"))
        self.metrics = HydfsMetrics(metrics or Registry())
        self.peers = Peers(config)
        self.resync_interval = max(1.0, config.membership.protocol_period)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="hydfs-rpc")
        self.last_resync = 0.0
        # Files in flight: being created here (not offered to others until every replica
        # has them) or arriving here by push (not pulled a second time meanwhile).
        self.in_flight = InFlight()
        self._ring: tuple[tuple, Ring] | None = None     # (members, their ring)
        # Copies held at our start or join, not yet compared with the others (on_membership).
        self._unchecked: set[str] = set(self.store.names())
        self._unchecked_since = time.monotonic()
        self._unchecked_lock = threading.Lock()
        self._thread = threading.Thread(target=self._replicate_loop, name="hydfs-replicator",
                                        daemon=True)

    def routes(self) -> dict:
        return {m.SUMMARY: self.handle_summary, m.MANIFEST: self.handle_manifest,
                m.GET: self.handle_get, m.FETCH: self.handle_fetch, m.STATE: self.handle_state,
                m.CREATE_REPLICA: self.handle_create_replica,
                m.APPEND_REPLICA: self.handle_append_replica,
                m.APPLY_MERGE: self.handle_apply_merge, m.FENCE_BEGIN: self.handle_fence_begin,
                m.FENCE_SEAL: self.handle_fence_seal, m.READ_VIEW: self.handle_read_view,
                m.WATCH: self.handle_watch}

    def on_membership(self, events) -> None:
        """A membership change: re-replicate now (a membership listener). When this node
        joins (at its start, or again after the group declared it failed), the copies it
        holds may lack appends made while it was away: they serve no whole read until an
        anti-entropy round has compared them with every other replica (`unchecked`)."""
        if any(e.kind == "joined" for e in events):
            with self._unchecked_lock:
                self._unchecked = set(self.store.names())
                self._unchecked_since = time.monotonic()
        self._wake.set()

    def checked(self, name: str) -> bool:
        """May this node's copy of `name` answer a read that names no appends (a get, a
        byte range)? Not while it may be stale: see `on_membership`. (A view names its
        appends, so a stale copy refuses it by itself.)"""
        return name not in self._unchecked

    def _mark_checked(self, names, round_started: float) -> None:
        with self._unchecked_lock:
            if round_started > self._unchecked_since:
                self._unchecked.difference_update(names)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._pool.shutdown(wait=False)

    # -- views ------------------------------------------------------------------------------

    def ring(self) -> Ring:
        """The ring of the live members; built again only when they change (a Ring is
        immutable, and hashing every member on every request cost 0.1 ms of a 1 ms get)."""
        members = tuple(sorted(m.vm for m in self.membership.members()))
        built = self._ring
        if built is None or built[0] != members:
            built = self._ring = (members, Ring(members, self.bits))
        return built[1]

    def is_live(self, vm: str) -> bool:
        """Is `vm` in the membership list (not declared failed, not departed)?"""
        return any(member.vm == vm for member in self.membership.members())

    def owners(self, name: str) -> list[str]:
        return self.ring().replicas(name, self.replicas)

    def parallel(self, fn, items) -> list:
        """fn(item) for every item at once; each result or the exception it raised."""
        futures = [self._pool.submit(fn, item) for item in items]
        results = []
        for future in futures:
            try:
                results.append(future.result(timeout=PARALLEL_TIMEOUT))
            except Exception as exc:      # reported to the caller per item
                results.append(exc)
        return results

    # -- replica-side handlers ----------------------------------------------------------------

    def handle_summary(self, conn, msg: dict) -> None:
        st = self.store.get_state(m.file_name(msg))
        conn.send({"t": OK, "summary": st.summary() if st else None})

    def handle_manifest(self, conn, msg: dict) -> None:
        files = {}
        for name in self.store.names():
            st = self.store.get_state(name)
            if st is not None and name not in self.in_flight:
                files[name] = st.summary()
        conn.send({"t": OK, "files": files})

    def _held(self, msg: dict):
        """The request's file name and our copy of it; a clear error if we have none."""
        name = m.file_name(msg)
        st = self.store.get_state(name)
        if st is None:
            raise HandlerError(m.NO_SUCH_FILE, f"no such file {name} in HyDFS")
        return name, st

    def check_get(self, name: str, must_hold) -> None:
        """May our copy answer a get of a client whose last append to `name` is `must_hold`
        (or None)? HandlerError (no_such_file, behind, bad_request) if not. The replica's
        rule, for requests from elsewhere and for this node's own client alike."""
        st = self.store.get_state(name)
        if st is None:
            raise HandlerError(m.NO_SUCH_FILE, f"no such file {name} in HyDFS")
        if not self.checked(name):
            raise HandlerError(m.BEHIND, f"behind: vm{self.vm} rejoined and has not yet "
                                         f"compared its copy of {name} with the others")
        try:
            behind = is_behind(must_hold, st.holds)
        except (TypeError, ValueError, IndexError):
            raise HandlerError(BAD_REQUEST, "bad must_hold append id") from None
        if behind:
            raise HandlerError(m.BEHIND, f"behind: vm{self.vm} does not hold your last append "
                                         f"to {name} yet")

    def handle_get(self, conn, msg: dict) -> None:
        name = m.file_name(msg)
        self.check_get(name, msg.get("must_hold"))
        snap = self.store.snapshot(name)
        try:
            if msg.get("if_version") == snap.state_version:
                conn.send({"t": m.NOT_MODIFIED, "version": snap.state_version})
                return
            header = {"t": m.DATA, "version": snap.state_version, "replica": self.vm,
                      "size": snap.size, "merged_size": snap.merged_size}
            start, length, whole = 0, snap.size, "offset" not in msg
            if not whole:                    # a byte range (RainStorm sources read these)
                start, length = m.byte_range(msg, snap.size)
            # A whole get is written to a file renamed into place once it is all there, so
            # its blocks can go out as they are checked (checked_read.py, `early`); a range
            # may be used as it arrives, so each of its blocks goes out once checked.
            self._send_checked(conn, name, header, length,
                               self.store.spans(snap, start, length, window=BLOCK,
                                                early=whole))
        finally:
            snap.close()

    def handle_read_view(self, conn, msg: dict) -> None:
        """A byte range of a view (view.py): the same bytes from every replica that holds
        the view's appends, whether merged or pending here."""
        name, _ = self._held(msg)
        ids, create = m.id_set(msg, "ids"), m.flag(msg, "create")
        try:
            snap = self.store.snapshot(name)
        except NoSuchFile:
            raise HandlerError(m.NO_SUCH_FILE, f"no such file {name} in HyDFS") from None
        try:
            try:
                v = self.store.view(snap, ids, create)
            except LacksAppends as exc:
                raise HandlerError(m.MISSING, f"vm{self.vm} does not hold every append of "
                                              f"the view of {name} ({exc})") from None
            start, length = m.byte_range(msg, v.size)
            header = {"t": m.DATA, "version": snap.state_version, "replica": self.vm,
                      "size": v.size}
            self._send_checked(conn, name, header, length,
                               self.store.view_spans(snap, v, start, length, window=BLOCK))
        finally:
            snap.close()

    def _send_checked(self, conn, name: str, header: dict, length: int, spans) -> None:
        """Send `header` and the `length` bytes of the checked `spans` after it. A copy
        that fails its checksum is quarantined and the transfer cut short."""
        try:
            with CheckedRanges(spans, length) as ranges:
                conn.send_bulk_ranges(header, length, ranges)
        except CorruptReplica as exc:
            self.quarantine(name, exc)
            raise OSError("corrupt replica: transfer aborted") from None
        except (OSError, wire.ProtocolError, HandlerError):
            raise
        except Exception as exc:    # mid-payload, an error reply would be read as data
            log.exception("read of %s failed", name)
            raise OSError(f"read of {name} failed: {exc}") from None

    def handle_watch(self, conn, msg: dict) -> None:
        """A long poll: answer with our summary once our copy holds an append not in
        `known` (at once if it does already, or if we hold no copy), or at the timeout."""
        name = m.file_name(msg)
        known, timeout = m.id_set(msg, "known"), m.watch_timeout(msg)
        conn.send({"t": OK, "summary": self.store.wait_for_new(name, known, timeout)})

    def handle_fetch(self, conn, msg: dict) -> None:
        name, st = self._held(msg)
        have = msg.get("have")
        full = have is None or have["file_id"] != st.file_id
        exclude = None if full else held_ids(have)
        try:
            transfer.send_state(conn, self.store, name, full, exclude)
        except CorruptReplica as exc:
            self.quarantine(name, exc)
            raise OSError("corrupt replica: transfer aborted") from None

    def handle_state(self, conn, msg: dict) -> None:
        """A pushed state transfer (create forwarding, merge and append catch-up).

        We install the pushed base unless ours is the same file at the same or a newer
        generation; either way we add the pushed records we lack, and keep our own.
        """
        name = m.file_name(msg)
        size = wire.bulk_length(msg)
        summary = msg.get("summary")
        mine = self.store.get_state(name)
        if summary is not None and mine is not None and mine.file_id != summary["file_id"]:
            _drain_state(conn, size)
            raise HandlerError(m.FILE_EXISTS, f"file {name} already exists")
        if summary is None and mine is None:
            _drain_state(conn, size)
            raise HandlerError(m.NO_SUCH_FILE, f"no such file {name}")
        if summary is None or (mine is not None and
                               mine.held().covers(IdSet(summary["merged"]))):
            drain(conn.recv_bulk_chunks(size))   # we hold all its base has: records suffice
            self.store.learn_fences(name, Fences.from_wire(
                msg.get("fences") if summary is None else summary.get("fences")))
        else:
            base_size, index = transfer.state_layout(msg, size)
            with self.in_flight.holding(name):
                self.store.install(name, summary, conn.recv_bulk_chunks(size), base_size, [],
                                   int(msg.get("create_size", 0)), index)
        self.store.add_records(name, transfer.recv_records(conn))
        conn.send({"t": OK})

    def handle_create_replica(self, conn, msg: dict) -> None:
        """Our copy of a create, streamed by its coordinator while the client sends it."""
        name = m.file_name(msg)
        size = wire.bulk_length(msg)
        file_id = str(msg["file_id"])
        with self.in_flight.holding(name):      # not offered to, or pulled by, re-replication
            try:
                self.store.create(name, file_id, conn.recv_bulk_chunks(size), size)
            except FileExists as exc:
                if not isinstance(exc, LostCreateRace):
                    conn.discard_bulk(size)    # refused before a byte was read
                if getattr(self.store.get_state(name), "file_id", None) != file_id:
                    raise HandlerError(m.FILE_EXISTS, f"file {name} already exists") from None
        conn.send({"t": OK})

    def handle_append_replica(self, conn, msg: dict) -> None:
        """One append, streamed by its coordinator. "ok" only once we hold it: a file we do
        not hold yet answers "missing" (the coordinator then sends the whole file)."""
        name = m.file_name(msg)
        client, seq, ts = m.append_id(msg)
        size = m.append_size(msg)
        chunks = conn.recv_bulk_chunks(size)
        try:
            if self.store.get_state(name) is not None:
                self.store.append_stream(name, client, seq, ts, size, chunks)
        except NoSuchFile:
            pass
        except Fenced as exc:
            drain(chunks)
            raise HandlerError(m.FENCED, str(exc)) from None
        drain(chunks)                     # not stored (missing file, or a retry)
        st = self.store.get_state(name)
        if st is None or not st.holds((client, seq)):
            raise HandlerError(m.MISSING, f"vm{self.vm} does not hold {name}")
        conn.send({"t": OK})

    def handle_apply_merge(self, conn, msg: dict) -> None:
        name, _ = self._held(msg)
        try:
            missing = self.store.apply_merge(name, int(msg["gen"]), str(msg["merge_id"]),
                                             IdSet(msg["target"]),
                                             Fences.from_wire(msg.get("fences")))
        except (KeyError, TypeError, ValueError) as exc:
            raise HandlerError(BAD_REQUEST, f"bad apply_merge request: {exc}") from None
        conn.send({"t": OK, "missing": missing})

    def handle_fence_begin(self, conn, msg: dict) -> None:
        name, _ = self._held(msg)
        key, epoch, rnd = m.fence_of(msg)
        try:
            prior, held = self.store.begin_fence(name, key, epoch, rnd)
        except Fenced as exc:
            raise HandlerError(m.FENCED, str(exc)) from None
        conn.send({"t": OK, "prior": prior.to_wire() if prior else None,
                   "held": held.to_wire()})

    def handle_fence_seal(self, conn, msg: dict) -> None:
        name, _ = self._held(msg)
        key, epoch, rnd = m.fence_of(msg)
        try:
            lacking = self.store.seal_fence(name, key, epoch, IdSet(msg["sealed"]), rnd)
        except Fenced as exc:
            raise HandlerError(m.FENCED, str(exc)) from None
        except (TypeError, ValueError) as exc:
            raise HandlerError(BAD_REQUEST, f"bad sealed set: {exc}") from None
        conn.send({"t": OK, "lacking": lacking,
                   "summary": self.store.state(name).summary()})

    def learn_fences_from(self, vm: str, name: str) -> None:
        """Adopt the fences node `vm` knows for `name` (it refused a write of ours as fenced:
        our copy is behind on them)."""
        try:
            summary = self.peers.call(vm, {"t": m.SUMMARY, "name": name}, 5)["summary"]
        except (Unreachable, RemoteError):
            return
        if summary:
            self.store.learn_fences(name, fences_of(summary))

    # -- pulling and pushing state ----------------------------------------------------------

    def pull(self, name: str, vm: str) -> str:
        """Bring our copy of `name` up to what node `vm` holds."""
        st = self.store.get_state(name)
        with self.peers.open(vm) as conn:
            conn.send({"t": m.FETCH, "name": name, "have": st.summary() if st else None})
            return transfer.recv_state(conn, self.store, name)

    def push(self, name: str, vm: str, exclude: IdSet | None = None) -> None:
        """Send our copy of `name` to node `vm`: all of it, or the appends not in `exclude`
        (what it holds already). It keeps appends it has that we lack."""
        with self.peers.open(vm) as conn:
            try:
                transfer.send_state(conn, self.store, name, exclude is None, exclude)
            except (OSError, wire.ProtocolError) as exc:
                raise Unreachable(f"node {vm}: {exc}") from None
            self.peers.reply_to(vm, conn)

    def quarantine(self, name: str, exc: Exception) -> None:
        log.error("CORRUPT replica of %s: %s; setting it aside, re-replication will restore it",
                  name, exc)
        try:
            self.store.remove(name, reason="corrupt")
        except OSError as err:
            log.error("could not set aside %s: %s", name, err)
        self._wake.set()

    # -- the re-replicator ------------------------------------------------------------------

    def _replicate_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.resync_interval)
            self._wake.clear()
            if self._stop.is_set() or not self.membership.is_joined():
                continue
            try:
                self.resync()
            except Exception:      # keep replicating whatever one round hit
                log.exception("re-replication round failed")

    def resync(self) -> dict:
        """One anti-entropy round; returns counts of what it did. A round that heard every
        other member marks the copies it found complete, or completed, `checked`."""
        started = time.monotonic()
        ring = self.ring()
        others = [vm for vm in ring.nodes_in_order() if vm != self.vm]
        manifests = {}
        for vm, reply in zip(others, self.parallel(
                lambda vm: self.peers.call(vm, {"t": m.MANIFEST}, timeout=5), others)):
            if isinstance(reply, dict):
                manifests[vm] = reply["files"]
        local = {n: st.summary() for n in self.store.names()
                 if (st := self.store.get_state(n)) is not None}
        plan = replication.plan(self.vm, ring, self.replicas, local, manifests)
        done = {"pulled": 0, "dropped": 0}
        unsure = {name for name, _ in plan.pulls}     # checked once pulled
        for name, vm in plan.pulls:
            if name in self.in_flight:
                continue                  # a push of it is arriving right now
            try:
                how = self.pull(name, vm)
                unsure.discard(name)
                done["pulled"] += 1
                self.metrics.rereplications.inc()
                log.info("REPLICATE %s from vm%s (%s)", name, vm, how)
            except (Unreachable, RemoteError, OSError, wire.ProtocolError, CorruptReplica,
                    ValueError) as exc:      # ValueError: a state that does not check out
                log.warning("REPLICATE %s from vm%s failed: %s", name, vm, exc)
                self._wake.set()
        for name in plan.drops:
            with self.store.lock(name):
                st = self.store.get_state(name)
                if st is None or st.summary() != local[name]:
                    continue      # it changed since the plan (an append arrived): next round
                self.store.remove(name)
            done["dropped"] += 1
            self.metrics.dropped_copies.inc()
            if name in plan.lost:
                log.warning("DROP %s: every replica holds an earlier create of the name; "
                            "this copy (file %s, %d appends) lost to it", name,
                            local[name]["file_id"], len(held_ids(local[name])))
            else:
                log.info("DROP %s: no longer a replica, and every replica holds its %d "
                         "appends", name, len(held_ids(local[name])))
        if len(manifests) == len(others):
            self._mark_checked(set(local) - unsure, started)
        self.last_resync = time.monotonic()
        return done


class InFlight:
    """Names whose copy on this node is being written by a transfer right now (a create, an
    install): the manifest leaves them out and the re-replicator does not pull them. A
    count per name, since two transfers of one name may overlap."""

    def __init__(self):
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def holding(self, name: str):
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._counts[name] -= 1
                if not self._counts[name]:
                    del self._counts[name]

    def __contains__(self, name: str) -> bool:
        with self._lock:
            return name in self._counts


def _drain_state(conn, size: int) -> None:
    """Read and discard a refused state transfer (its base, then its records), so the
    connection can carry the error reply."""
    conn.discard_bulk(size)
    for _, chunks in transfer.recv_records(conn):
        drain(chunks)
