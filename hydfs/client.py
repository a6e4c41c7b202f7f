"""The HyDFS client inside every node: what the REPL commands and RainStorm call.

- Routing: a file's writes go to its primary (first replica on the ring of live members),
  falling over to the next replica if it is unreachable; reads go to the primary too, so a
  client keeps reading the replica it wrote to, as the seed describes.
- Quorum: a write needs a majority of the configured nodes live (write_rules.has_quorum),
  so of two sides of a partition only one writes.
- Retries: while a failed node is not yet detected, writes cannot reach every replica; the
  client retries (same append id, so nothing doubles) until `write_deadline` has passed, then
  reports "not enough live replicas".
- Appends: each carries (client id, seq) and a client timestamp that strictly increases; one
  client's appends to a file are sent one at a time, which keeps their order (merge.py).
- Cache: whole files up to the `cache_mb` budget, LRU. A cached copy is served without asking
  anyone for `cache_ttl` seconds, then revalidated with the replica (which answers "not
  modified" without resending). This client's own append or merge drops the entry, so a get
  always reflects this client's writes (read-my-writes).

- Following a growing file (a RainStorm source): `settled` says which appends at least two
  replicas hold, `read_view` reads a view of such a set of appends (view.py: the same bytes
  from every replica, whatever each has merged), and `watch` waits, without polling, until a
  replica holds an append beyond a known set.

Which replica to read, when to fail over, wait or give up, and which write refusals are worth
retrying are pure rules (read_rules.py, write_rules.py); this module does the I/O around
them. Every failure is a `HydfsError` with an error code (messages.py) and a one-line reason.
"""

from __future__ import annotations

import functools
import itertools
import os
import socket
import threading
import time
import uuid

from cluster import wire
from cluster.connection import Connection
from cluster.errors import BAD_REQUEST, UNREACHABLE, CodedError, HandlerError
from cluster.rpc import (CLOSED_UNDER_US, REPLY_TIMEOUT, Peers, RemoteError, Slow, Unreachable,
                         check_reply)
from hydfs import messages as m
from hydfs import read_rules, write_rules
from hydfs.cache import LruCache
from hydfs.checked_read import BLOCK, as_bytes
from hydfs.coordinator import no_quorum, too_small
from hydfs.idset import IdSet
from hydfs.names import BadName, check_name
from hydfs.ring import ring_position
from hydfs.service import HydfsService
from hydfs.store import CorruptReplica, LacksAppends, NoSuchFile
from hydfs.summary import held_ids

CACHE_TTL = 5.0
RETRY_PAUSE = 0.2
SUMMARY_TIMEOUT = 5.0
WATCH_MARGIN = 5.0       # a watch's network timeout exceeds its wait by this much
WATCH_PAUSE = 0.5        # when no replica answers a watch, it returns False after this


class HydfsError(CodedError):
    """A HyDFS operation failed: `code` says what (messages.py), the text is the one-line
    reason for the user."""

    @classmethod
    def of(cls, exc: CodedError) -> "HydfsError":
        return cls(exc.code, str(exc))


def measured(kind: str):
    """Count and time the decorated client operation as `kind` (hydfs/metrics.py)."""
    def wrap(fn):
        @functools.wraps(fn)
        def operation(self, *args, **kwargs):
            with self.metrics.op(kind):
                return fn(self, *args, **kwargs)
        return operation
    return wrap


def checked_name(name) -> str:
    """`name` if HyDFS accepts it, else HydfsError(bad_name)."""
    try:
        return check_name(name)
    except BadName as exc:
        raise HydfsError(m.BAD_NAME, str(exc)) from None


class HydfsClient:
    def __init__(self, service: HydfsService, cache_mb: float, write_deadline: float,
                 cache_ttl: float = CACHE_TTL):
        self.service = service
        self.peers: Peers = service.peers
        self.client_id = service.membership.me().id     # unique per process start
        self.cache = LruCache(int(cache_mb * 1024 * 1024))
        self.cache_ttl = cache_ttl
        self.write_deadline = write_deadline
        self._seq: dict[str, int] = {}
        self._last_write: dict[str, list] = {}        # name -> id of our last acked append
        self._epochs: dict[str, int] = {}             # name -> bumped by each of our writes
        self._cache_lock = threading.Lock()           # LruCache itself is not thread-safe
        self._file_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._last_ts = 0.0
        self._fence_rounds = itertools.count(int(time.time() * 1000))   # next() is atomic
        self.metrics = service.metrics
        self.metrics.watch(lambda: (self.cache, self._cache_lock), service.store)

    # -- helpers ----------------------------------------------------------------------------

    def _file_lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._file_locks.setdefault(name, threading.Lock())

    def _invalidate(self, name: str) -> None:
        with self._cache_lock:
            self._epochs[name] = self._epochs.get(name, 0) + 1
            self.cache.invalidate(name)

    def _cached(self, name: str):
        with self._cache_lock:
            return self._epochs.get(name, 0), self.cache.get(name)

    def _keep(self, name: str, epoch: int, version, vm: str, data: bytes) -> None:
        """Cache what a get fetched, unless one of our writes happened meanwhile."""
        with self._cache_lock:
            if self._epochs.get(name, 0) == epoch:
                self.cache.put(name, (version, time.monotonic(), vm), data)

    def _timestamp(self) -> float:
        with self._guard:
            self._last_ts = max(time.time(), self._last_ts + 1e-6)
            return self._last_ts

    def owners(self, name: str) -> list[str]:
        owners = self.service.owners(checked_name(name))
        if not owners:
            raise HydfsError(m.TOO_FEW_NODES,
                             "no live nodes in the membership list (is this node joined?)")
        return owners

    def _write(self, name: str, attempt) -> dict:
        """Run `attempt(vm)` on the primary (falling over), retrying until the deadline."""
        deadline = time.monotonic() + self.write_deadline
        last = HydfsError(m.NOT_ENOUGH_REPLICAS, "no replica reachable")    # replaced below
        while True:
            self._check_cluster_size(name)
            for vm in self.owners(name):
                try:
                    return attempt(vm)
                except Unreachable as exc:
                    last = HydfsError.of(exc)
                except RemoteError as exc:
                    if not write_rules.worth_retrying(exc.code):
                        raise HydfsError.of(exc) from None
                    last = HydfsError.of(exc)
                    break              # retry from the (possibly new) primary
            if time.monotonic() >= deadline:
                raise last
            time.sleep(RETRY_PAUSE)

    def _check_cluster_size(self, name: str) -> None:
        """With fewer live members than replicas no write can succeed, and waiting for
        failure detection will not change that: say so at once. Nor can one on a node that
        sees no majority of the configured nodes (the minority side of a partition)."""
        live = len(self.service.ring().nodes_in_order())
        if live < self.service.replicas:
            raise HydfsError(m.TOO_FEW_NODES, too_small(name, live, self.service.replicas))
        configured = len(self.service.config.nodes)
        if not write_rules.has_quorum(live, configured):
            raise HydfsError(m.NO_QUORUM, no_quorum(name, live, configured))

    # -- create and append ------------------------------------------------------------------

    @measured("create")
    def create(self, local_path: str, name: str) -> dict:
        checked_name(name)
        size = _local_size(local_path)
        file_id = f"{int(time.time() * 1000):013d}-{self.client_id}-{uuid.uuid4().hex[:6]}"

        def attempt(vm):
            with self.peers.open(vm) as conn:
                try:
                    conn.send_bulk_file({"t": m.CREATE, "name": name, "file_id": file_id},
                                        local_path, 0, size)
                except (OSError, wire.ProtocolError) as exc:
                    raise Unreachable(f"node {vm}: {exc}") from None
                return self.peers.reply_to(vm, conn)
        reply = self._write(name, attempt)
        self._invalidate(name)
        self.metrics.written_bytes.inc(size)
        return {"name": name, "size": size, "replicas": reply["replicas"]}

    def create_bytes(self, name: str, data: bytes) -> dict:
        return self._with_temp(data, lambda path: self.create(path, name))

    def append(self, local_path: str, name: str) -> dict:
        """Append a local file, streamed from disk (never whole in memory)."""
        size = _local_size(local_path)
        return self._append(name, size, None,
                            lambda conn, header: conn.send_bulk_file(header, local_path, 0, size))

    def append_bytes(self, name: str, data: bytes, append_id: tuple[str, int] | None = None) -> dict:
        """Append `data`. `append_id` (client, seq) lets a caller that survives this process
        (a RainStorm task and its replacement) retry an append so that it lands once."""
        return self._append(name, len(data), append_id,
                            lambda conn, header: conn.send_bulk_bytes(header, data))

    @measured("append")
    def _append(self, name: str, size: int, append_id, send) -> dict:
        checked_name(name)
        with self._file_lock(name):
            # A sequence number names one append's bytes forever: it is used up even if the
            # append fails (it may still have been applied), so new bytes never reuse it and
            # get mistaken for a retry.
            if append_id is None:
                seq = self._seq[name] = self._seq.get(name, 0) + 1
                append_id = (self.client_id, seq)
            header = {"t": m.APPEND, "name": name, "id": list(append_id),
                      "ts": self._timestamp()}

            def attempt(vm):
                with self.peers.pooled(vm) as conn:
                    try:
                        send(conn, header)
                    except (OSError, wire.ProtocolError) as exc:
                        raise Unreachable(f"node {vm}: {exc}") from None
                    return self.peers.reply_to(vm, conn)
            try:
                reply = self._write(name, attempt)
            finally:
                self._invalidate(name)
            self._last_write[name] = list(append_id)
        if reply["new"]:                  # not a retry of bytes the file holds already
            self.metrics.written_bytes.inc(size)
        return {"name": name, "size": size, "seq": append_id[1], "new": reply["new"],
                "replicas": reply["replicas"]}

    @measured("merge")
    def merge(self, name: str) -> dict:
        reply = self._write(name, lambda vm: self.peers.call(
            vm, {"t": m.MERGE, "name": name}, timeout=300))
        self._invalidate(name)
        return {k: reply[k] for k in ("merged", "gen", "already", "seconds")}

    @measured("fence")
    def fence(self, name: str, key: str, epoch: int) -> IdSet:
        """Fence `name` against writer `key`'s epochs below `epoch` (fences.py); the sealed
        set: the ids of its appends from lower epochs that stand. HydfsError `fenced` if a
        higher epoch fenced it already."""
        # Every try a higher round (fences.py), across calls too: a second fence at one
        # epoch (a leader taking a job over on demand after its take-over fenced it) must
        # not start below the rounds the first one used, or it is refused as `fenced`
        # (chaos seed 9114: the first had taken many tries while a replica caught up).
        reply = self._write(name, lambda vm: self.peers.call(
            vm, {"t": m.FENCE, "name": name, "key": key, "epoch": epoch,
                 "round": next(self._fence_rounds)}, timeout=120))
        self._invalidate(name)
        return IdSet(reply["sealed"])

    # -- reads ------------------------------------------------------------------------------

    def get(self, name: str, local_path: str) -> dict:
        with self.metrics.op("get"):
            got = self._get(name, local_path)
        self.metrics.read_bytes.inc(got["size"])
        (self.metrics.cache_hits if got["cached"] else self.metrics.cache_misses).inc()
        return got

    def _get(self, name: str, local_path: str) -> dict:
        """Copy `name` to `local_path`; from the cache when it is fresh.

        Read-my-writes: the request names our last acknowledged append to this file, and a
        replica that does not hold it yet (e.g. one just restarted with an old copy)
        answers "behind"; we then read another replica, or wait for re-replication.
        """
        checked_name(name)
        _check_local_target(local_path)
        epoch, cached = self._cached(name)
        version, fetched_at, cached_from = cached[0] if cached is not None else (None, 0, None)
        if cached is not None and read_rules.cache_verdict(
                time.monotonic() - fetched_at, self.cache_ttl) == read_rules.SERVE:
            data = cached[1]
            _write_local(local_path, [data])
            return {"name": name, "size": len(data), "replica": cached_from, "cached": True}
        here = self._get_here(name, local_path, cached, epoch)
        if here is not None:
            return here

        def request(vm):
            return {"t": m.GET, "name": name,
                    "if_version": read_rules.version_to_revalidate(version, cached_from, vm),
                    "must_hold": self._last_write.get(name)}
        return self._read_from_replicas(
            name, request, time.monotonic() + self.write_deadline,
            lambda vm, conn, reply: self._receive_get(vm, conn, reply, name, local_path,
                                                      cached, epoch))

    def _get_here(self, name: str, local_path: str, cached, epoch: int) -> dict | None:
        """A get answered from this node's own copy when this node is the replica a get
        asks first and its copy holds our last append: the bytes a request to ourselves
        would bring, checked the same way, without the round trip. None if it cannot be
        (no copy here, not the first replica, behind, or corrupt: then quarantined, and
        the other replicas answer)."""
        store, vm = self.service.store, self.service.vm
        if store.get_state(name) is None or read_rules.read_order(self.owners(name))[:1] != [vm]:
            return None
        try:
            self.service.check_get(name, self._last_write.get(name))
            snap = store.snapshot(name)
        except (HandlerError, NoSuchFile):
            return None
        try:
            version, _, cached_from = cached[0] if cached is not None else (None, 0, None)
            if version is not None and \
                    read_rules.version_to_revalidate(version, cached_from, vm) == snap.state_version:
                data = cached[1]
                self._keep(name, epoch, snap.state_version, vm, data)
                _write_local(local_path, [data])
                return {"name": name, "size": len(data), "replica": vm, "cached": True}
            chunks = (as_bytes(span) for span in store.spans(snap, 0, snap.size, BLOCK))
            if 0 < snap.size <= self.cache.capacity_bytes:     # small: kept in the cache too
                data = b"".join(chunks)
                _write_local(local_path, [data])
                self._keep(name, epoch, snap.state_version, vm, data)
            else:
                _write_local(local_path, chunks)
        except CorruptReplica as exc:
            self.service.quarantine(name, exc)
            return None
        except OSError:     # a read error here, or the local file: the network path says
            return None
        finally:
            snap.close()
        return {"name": name, "size": snap.size, "replica": vm, "cached": False}

    def get_from_replica(self, vm: str, name: str, local_path: str) -> dict:
        checked_name(name)
        _check_local_target(local_path)
        try:
            conn, reply = self._request_read(vm, {"t": m.GET, "name": name}, REPLY_TIMEOUT)
            return self._receive_get(vm, conn, reply, name, local_path, None, use_cache=False)
        except (OSError, wire.ProtocolError) as exc:
            raise HydfsError(UNREACHABLE, f"node {vm}: {exc}") from None
        except RemoteError as exc:
            if exc.code == m.NO_SUCH_FILE:
                raise HydfsError(m.NO_SUCH_FILE, f"node {vm} holds no copy of {name}") from None
            raise HydfsError.of(exc) from None
        except Unreachable as exc:
            raise HydfsError.of(exc) from None

    def read_range(self, name: str, offset: int, length: int):
        """Yield bytes [offset, offset + length) of `name` from its first reachable replica,
        in bounded chunks (never the whole file in memory)."""
        yield from self.metrics.streamed("read", self._read_range(name, offset, length))

    def _read_range(self, name: str, offset: int, length: int):
        checked_name(name)
        if self.service.store.get_state(name) is not None and self.service.checked(name) \
                and self.service.vm in self.owners(name):
            yield from self._read_local_range(name, offset, length)    # no network at all
            return
        vm, conn, reply = self._read_from_replicas(
            name, lambda vm: {"t": m.GET, "name": name, "offset": offset, "length": length},
            deadline=0.0, receive=lambda vm, conn, reply: (vm, conn, reply))
        yield from self._bulk_chunks(vm, conn, reply, name)

    def _read_from_replicas(self, name: str, request, deadline: float, receive,
                            tries_next=read_rules.tries_next_replica, failure=None):
        """`receive(vm, conn, reply)` of the first replica that answers `request(vm)` and
        whose answer arrives whole, trying them as read_rules says: in ring order, with
        growing patience, waiting for a replica that is behind until `deadline`. A replica
        that fails mid-answer (a truncated transfer: e.g. its copy failed its checksum)
        counts as unreachable, and the next one is tried. A failure with a code that
        `tries_next` refuses ends the read; once every replica failed, it fails with the
        code `failure(codes)` picks (default: the last replica's)."""
        patience = read_rules.FIRST_PATIENCE
        while True:
            codes, errors = [], {}
            for vm in read_rules.read_order(self.owners(name)):
                try:
                    conn, reply = self._request_read(vm, request(vm), patience)
                    try:
                        return receive(vm, conn, reply)
                    except (OSError, wire.ProtocolError) as exc:
                        conn.close()
                        raise Unreachable(f"node {vm}: {exc}") from None
                except (RemoteError, Unreachable) as exc:
                    if not tries_next(exc.code):
                        raise HydfsError.of(exc) from None
                    codes.append(exc.code)
                    errors[exc.code] = exc
            step = read_rules.after_round(codes, patience, REPLY_TIMEOUT, time.monotonic(),
                                          deadline)
            if step == read_rules.GIVE_UP:
                code = failure(codes) if failure else (codes[-1] if codes else None)
                raise HydfsError.of(errors[code]) if code in errors else \
                    HydfsError(m.NO_SUCH_FILE, f"no such file {name} in HyDFS")
            if step == read_rules.WAIT_LONGER:
                patience = REPLY_TIMEOUT    # every answering replica was slow: wait for one
            else:
                time.sleep(RETRY_PAUSE)

    def read_view(self, name: str, ids: IdSet, create: bool, offset: int, length: int):
        """(size, chunks): the total size of the view of `ids` (after the create's content
        if `create`; view.py) and the chunks of its bytes [offset, offset + length), clipped
        to it. The view is the same bytes on every replica that holds all of `ids`; it is
        read from the first such replica (read order), this node's own copy if it is one.
        The caller reads every chunk (or closes the iterator): that frees the connection.

        A replica that lacks some of `ids` (`missing`), holds no copy, or is unreachable
        or slow is passed over for the next; once every replica was tried, HydfsError
        `missing` (a replica has the file but none has every id: re-read `settled`),
        `unreachable`/`slow`, or `no_such_file` (read_rules.view_failure). Once bytes went
        to the caller a failure raises HydfsError(unreachable), as read_range does."""
        start = time.monotonic()
        try:
            size, chunks = self._read_view(name, ids, create, offset, length)
        except Exception:
            with self.metrics.op("read_view", start):
                raise
        return size, self.metrics.streamed("read_view", chunks, start)

    def _read_view(self, name: str, ids: IdSet, create: bool, offset: int, length: int):
        checked_name(name)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                   for v in (offset, length)):
            raise HydfsError(BAD_REQUEST, f"bad byte range {offset!r}, {length!r}")
        local = self._local_view(name, ids, create, offset, length)
        if local is not None:
            return local
        request = {"t": m.READ_VIEW, "name": name, "ids": ids.to_wire(), "create": create,
                   "offset": offset, "length": length}
        vm, conn, reply = self._read_from_replicas(    # a view never waits for one behind
            name, lambda vm: request, 0.0, lambda vm, conn, reply: (vm, conn, reply),
            read_rules.view_tries_next, read_rules.view_failure)
        return reply["size"], self._bulk_chunks(vm, conn, reply, name)

    def _bulk_chunks(self, vm: str, conn: Connection, reply: dict, name: str):
        """The reply's payload in chunks; the connection is kept once it was read whole,
        closed if the reader stops early. Once bytes went to the caller, a failure cannot
        move elsewhere."""
        try:
            yield from conn.recv_bulk_chunks(wire.bulk_length(reply))
        except (OSError, wire.ProtocolError) as exc:
            conn.close()
            raise HydfsError(UNREACHABLE, f"reading {name} from vm{vm}: {exc}") from None
        except BaseException:
            conn.close()
            raise
        self._done_reading(vm, conn)

    def _local_view(self, name: str, ids: IdSet, create: bool, offset: int, length: int):
        """read_view's answer from this node's own copy, if it is a replica holding every
        id of `ids` (no network at all); else None."""
        snap = self._own_replica_snapshot(name)
        if snap is None:
            return None
        try:
            v = self.service.store.view(snap, ids, create)
        except LacksAppends:
            snap.close()
            return None
        start = min(offset, v.size)
        return v.size, self._local_chunks(name, snap, v, start, min(length, v.size - start))

    def _own_replica_snapshot(self, name: str):
        """A snapshot of this node's copy of `name` if it is one of its replicas (the
        caller closes it); None if it holds none or is not a replica."""
        store = self.service.store
        if store.get_state(name) is None or self.service.vm not in self.owners(name):
            return None
        try:
            return store.snapshot(name)
        except NoSuchFile:
            return None

    def local_base_view(self, name: str, ids: IdSet, create: bool) -> dict | None:
        """Where this node's own copy holds the view of `ids` (and the create's content if
        `create`) wholly in its base file, for a process on this machine that reads it
        itself (store.py `where_in_base`); None if it does not (no copy here, not a
        replica, or some of the view's appends pending here)."""
        checked_name(name)
        snap = self._own_replica_snapshot(name)
        if snap is None:
            return None
        store = self.service.store
        try:
            return store.where_in_base(snap, store.view(snap, ids, create))
        except LacksAppends:
            return None
        finally:
            snap.close()

    def _local_chunks(self, name: str, snap, v, start: int, length: int):
        store = self.service.store
        try:
            for span in store.view_spans(snap, v, start, length):
                yield as_bytes(span)
        except CorruptReplica as exc:
            self.service.quarantine(name, exc)
            raise HydfsError(UNREACHABLE, f"reading {name} here: corrupt copy") from None
        finally:
            snap.close()

    @measured("settled")
    def settled(self, name: str) -> IdSet:
        """The ids of the appends to `name` that at least two replicas hold (one, if only
        the file has one replica; read_rules.settled_ids), asking every replica at once.

        An acknowledged append is on every replica (write_rules.append_acknowledged), so it
        is counted even after one replica failed or while a new one has not caught up; an
        append on one replica only (its fan-out still under way) is not counted yet, so
        whoever relies on a settled id can read it from a second replica if one fails.
        HydfsError `no_such_file` if every replica that answered holds no copy,
        `unreachable` if none answered."""
        checked_name(name)
        replies = self.service.parallel(
            lambda vm: self.peers.call(vm, {"t": m.SUMMARY, "name": name},
                                       SUMMARY_TIMEOUT)["summary"], self.owners(name))
        answered = [r for r in replies if not isinstance(r, Exception)]
        if not answered:
            raise HydfsError(UNREACHABLE, f"no replica of {name} answered: {replies[-1]}")
        copies = [s for s in answered if s]
        if not copies:
            raise HydfsError(m.NO_SUCH_FILE, f"no such file {name} in HyDFS")
        return read_rules.settled_ids(copies, len(self.owners(name)))

    def watch(self, name: str, known: IdSet, timeout: float) -> IdSet | None:
        """Wait up to `timeout` seconds (at most messages.MAX_WATCH) until a replica of
        `name` holds an append not in `known`: what that replica holds once it does, None
        at the timeout. A long poll at the first replica that answers (read order), which
        answers as soon as it holds one; nothing polls. If no replica answers with a copy,
        None after a short pause: the caller reads `settled` again as its fallback anyway.

        The news may be an append that one replica holds and is not settled yet (its
        fan-out under way): a caller watches again with what it was told added to
        `known`, so it is not told twice."""
        checked_name(name)
        deadline = time.monotonic() + min(max(timeout, 0.0), m.MAX_WATCH)
        for vm in read_rules.read_order(self.owners(name)):
            wait = max(deadline - time.monotonic(), 0.0)
            try:
                summary = self.peers.call(
                    vm, {"t": m.WATCH, "name": name, "known": known.to_wire(),
                         "timeout": wait}, wait + WATCH_MARGIN)["summary"]
            except (Unreachable, RemoteError):
                continue
            if summary:
                held = held_ids(summary)
                return None if known.covers(held) else held
        time.sleep(min(WATCH_PAUSE, max(deadline - time.monotonic(), 0.0)))
        return None

    def _read_local_range(self, name: str, offset: int, length: int):
        store = self.service.store
        snap = store.snapshot(name)
        try:
            start = min(offset, snap.size)
            yield from store.read_range(snap, start, min(length, snap.size - start))
        finally:
            snap.close()

    def size(self, name: str) -> int:
        """The file's size as its first answering replica holds it now. `no_such_file` only
        if every replica answered that it holds none: one that did not answer may."""
        silent = None
        for vm in self.owners(name):
            try:
                summary = self.peers.call(vm, {"t": m.SUMMARY, "name": name}, 5)["summary"]
            except (Unreachable, RemoteError) as exc:
                silent = exc
                continue
            if summary:
                return summary["size"]
        if silent is not None:
            raise HydfsError.of(silent)
        raise HydfsError(m.NO_SUCH_FILE, f"no such file {name} in HyDFS")

    def read_bytes(self, name: str) -> bytes:
        """The whole file in memory (for small files such as task logs)."""
        path = os.path.join(self.service.store.root, f".read-{uuid.uuid4().hex}")
        try:
            self.get(name, path)
            with open(path, "rb") as f:
                return f.read()
        finally:
            if os.path.exists(path):
                os.unlink(path)

    def _request_read(self, vm: str, request: dict, patience: float):
        """(connection, reply header) of a read request to `vm`, on a kept connection when
        there is one (give it back once its payload is read whole, or close it). Slow if
        it does not start answering within `patience` seconds (a paused or overloaded
        node: reads can go to another replica instead of waiting); after the header, the
        usual timeout applies. A kept connection that the node had closed just before is
        replaced by a new one, once."""
        conn, reused = self.peers.take_kept(vm, patience)
        while True:
            try:
                conn.send(request)
                reply = check_reply(conn.recv())
            except socket.timeout:
                conn.close()
                raise Slow(f"node {vm} did not answer within {patience:g} s") from None
            except CLOSED_UNDER_US:
                conn.close()
                if not reused:
                    raise Unreachable(f"node {vm}: connection closed") from None
                conn, reused = self.peers.open(vm, timeout=patience), False
                continue
            except (OSError, wire.ProtocolError) as exc:
                conn.close()
                raise Unreachable(f"node {vm}: {exc}") from None
            except RemoteError:
                conn.close()
                raise
            conn.sock.settimeout(REPLY_TIMEOUT)
            return conn, reply

    def _done_reading(self, vm: str, conn: Connection) -> None:
        """The reply on `conn` was read whole: keep the connection for the next read."""
        self.peers.give_back(vm, conn)

    def _receive_get(self, vm, conn, reply, name, local_path, cached, epoch: int = 0,
                     use_cache: bool = True) -> dict:
        """Write what replica `vm` answered a get with into `local_path` (and the cache);
        OSError or ProtocolError if the transfer breaks."""
        if reply["t"] == m.NOT_MODIFIED:
            self._done_reading(vm, conn)
            data = cached[1]
            _write_local(local_path, [data])
            self._keep(name, epoch, reply["version"], vm, data)
            return {"name": name, "size": len(data), "replica": vm, "cached": True}
        try:
            size = wire.bulk_length(reply)
            keep = use_cache and 0 < size <= self.cache.capacity_bytes
            kept = _receive_to_local(conn, size, local_path, keep)
        except BaseException:
            conn.close()
            raise
        self._done_reading(vm, conn)
        if keep:
            self._keep(name, epoch, reply["version"], vm, kept)
        return {"name": name, "size": size, "replica": vm, "cached": False}

    # -- listings ---------------------------------------------------------------------------

    @measured("ls")
    def ls(self, name: str) -> dict:
        owners = self.owners(name)
        holders, silent = [], []
        for vm in owners:
            try:
                reply = self.peers.call(vm, {"t": m.SUMMARY, "name": name}, 5)
            except Unreachable:
                silent.append(vm)
                continue
            except RemoteError:
                continue
            if reply.get("summary"):
                holders.append(vm)
        if not holders:
            raise HydfsError(m.NO_SUCH_FILE, f"no such file {name} in HyDFS")
        bits = self.service.bits
        return {"file": name, "ring_id": ring_position(name, bits),
                "replicas": [{"vm": vm, "ring_id": ring_position(vm, bits),
                              "holds": vm in holders, "reachable": vm not in silent}
                             for vm in owners]}

    def _with_temp(self, data: bytes, fn):
        path = os.path.join(self.service.store.root, f".upload-{uuid.uuid4().hex}")
        with open(path, "wb") as f:
            f.write(data)
        try:
            return fn(path)
        finally:
            os.unlink(path)


def _local_size(path: str) -> int:
    if os.path.isdir(path):
        raise HydfsError(m.LOCAL_FILE, f"local path {path} is a directory, not a file")
    if not os.path.isfile(path):
        raise HydfsError(m.LOCAL_FILE, f"local file {path} does not exist")
    return os.path.getsize(path)


def _check_local_target(path: str) -> None:
    """A get's local file must be writable as a file: say so before fetching anything."""
    if os.path.isdir(path):
        raise HydfsError(m.LOCAL_FILE, f"local path {path} is a directory, not a file")
    folder = os.path.dirname(os.path.abspath(path))
    if os.access(folder, os.W_OK | os.X_OK):
        return
    if not os.path.isdir(folder):
        raise HydfsError(m.LOCAL_FILE, f"local directory {folder} does not exist")
    raise HydfsError(m.LOCAL_FILE, f"local directory {folder} is not writable")


def _receive_to_local(conn: Connection, size: int, local_path: str, keep: bool):
    """Stream the payload into local_path (temp file, then rename; socket to file inside
    the kernel when there is no MAC to check). With `keep` (small enough for the cache),
    also return the bytes, read back from the page cache: cheaper than receiving them into
    memory and writing the file from there."""
    kept = None

    def fill(f):
        nonlocal kept
        conn.recv_bulk_to_file(size, f)
        if keep:
            f.flush()
            f.seek(0)
            kept = f.read(size)
    _write_local_file(local_path, fill)
    return kept


def _write_local(local_path: str, chunks) -> None:
    _write_local_file(local_path, lambda f: f.writelines(chunks))


def _write_local_file(local_path: str, fill) -> None:
    """Write local_path via a temporary file renamed into place: no half-written file.
    The caller has checked the path (`_check_local_target`)."""
    folder = os.path.dirname(os.path.abspath(local_path))
    tmp = os.path.join(folder, f".{os.path.basename(local_path)}.{uuid.uuid4().hex[:8]}.part")
    try:
        with open(tmp, "w+b") as f:
            fill(f)
        os.replace(tmp, local_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
