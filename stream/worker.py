"""The stream worker inside every node: starts task processes, and serves their HyDFS needs.

The leader asks a node to start a task (`stream.start_task`); the node starts
`python -m stream.task_main`, hands it its spec, waits for its ``READY host:port`` and
answers with that address. Each task is its own OS process, so one node's tasks use more
than one core and a crashing operator takes down only its task. A task that exits on its
own is reported to the leader, which restarts it. Task processes reach HyDFS through
`stream.hydfs_*` requests to their node (node_link.py).

Orders from the leader carry its leader epoch; the node refuses those from a lower epoch
than the highest it heard from (a deposed leader that woke up, succession.py), and
answers a new leader's announcement (`stream.leader`) with the attempts it runs.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

from cluster import wire
from cluster.config import Config
from cluster.errors import BAD_REQUEST, HandlerError
from cluster.messages import OK
from cluster.metrics import Registry
from cluster.rpc import Peers, RemoteError, Unreachable
from hydfs.client import HydfsClient, HydfsError
from hydfs import messages as hm
from stream import messages as m
from stream.job_setup import cut_partitions, segment_of
from stream.metrics import worker_metrics
from stream.succession import Claim

log = logging.getLogger("stream")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_TIMEOUT = 30.0
SPARE_PROCESSES = 2        # warm task processes kept ready per node
MAX_APPEND = 1 << 30
MAX_PARTITIONS = 4096     # a plan_partitions count beyond this is a bad request
STOP_GRACE = 5.0           # seconds a task process has to exit once told to stop
TELL_RETRIES = (0.5, 1.0, 2.0)


class StreamWorker:
    def __init__(self, config: Config, vm: str, client: HydfsClient, leadership,
                 metrics: Registry | None = None):
        self.config = config
        self.vm = vm
        self.client = client
        self.leadership = leadership
        self.peers = Peers(config)
        self.address = config.address(vm)
        self._procs: dict[tuple[str, tuple], subprocess.Popen] = {}   # (job, task) -> process
        self._epochs: dict[tuple[str, tuple], int] = {}   # ... and the attempt it runs
        self._inboxes: dict[tuple[str, tuple], str] = {}  # ... and where it listens
        self._spares: list[subprocess.Popen] = []
        self._stopping = False
        self._task_log = os.path.join(config.log_dir, f"vm{vm}-tasks.log")
        self._lock = threading.Lock()
        self.starts = worker_metrics(metrics or Registry(), lambda: len(self._procs))

    def routes(self) -> dict:
        return {m.START_TASK: self.handle_start_task, m.STOP_JOB: self.handle_stop_job,
                m.LEADER: self.handle_leader,
                m.HYDFS_APPEND: self.handle_hydfs_append,
                m.HYDFS_CREATE: self.handle_hydfs_create, m.HYDFS_READ: self.handle_hydfs_read,
                m.HYDFS_FENCE: self.handle_hydfs_fence, m.LEASE: self.handle_lease,
                m.HYDFS_READ_VIEW: self.handle_hydfs_read_view,
                m.HYDFS_LOCAL_VIEW: self.handle_hydfs_local_view,
                m.PLAN_PARTITIONS: self.handle_plan_partitions,
                m.HYDFS_SETTLED: self.handle_hydfs_settled, m.HYDFS_WATCH: self.handle_hydfs_watch}

    def on_membership(self, events) -> None:
        """This node heard that the group declared it failed (it was paused or cut off):
        the leader has started its tasks elsewhere, so stop them at once. (A speed-up: the
        fences of their files refuse whatever they still try to write.)"""
        if any(e.kind == "self_failed" for e in events):
            with self._lock:
                keys = list(self._procs)
            if keys:
                log.warning("TASK declared failed: stopping %d task processes", len(keys))
            threading.Thread(target=lambda: [self._stop_proc(k, kill=True) for k in keys],
                             daemon=True, name="stop-tasks").start()

    # -- task processes ---------------------------------------------------------------------

    def _check_leader(self, msg: dict) -> None:
        """Refuse an order of a leader older than the newest this node heard from; learn
        of a newer one from its order (its announcement may not have reached us)."""
        epoch = int(msg.get("leader_epoch", 0))
        if msg.get("leader_vm"):
            self.leadership.learn(self._claim({"epoch": epoch, "vm": msg["leader_vm"]}))
        known = self.leadership.current()
        if known is not None and epoch < known.epoch:
            raise HandlerError(m.STALE_LEADER, f"leader epoch {epoch} was deposed: vm"
                                               f"{known.vm} leads at {known.epoch}")

    def _claim(self, doc: dict) -> Claim | None:
        """The leader claim `doc` makes, if it names a node of this cluster."""
        claim = Claim.from_wire(doc)
        return claim if claim is not None and claim.vm in self.config.nodes else None

    def handle_leader(self, conn, msg: dict) -> None:
        """A new leader says so: learn it (unless a newer one is known); the attempts here."""
        claim = self._claim(msg)
        if claim is None:
            raise HandlerError(BAD_REQUEST, "a leader announcement needs an epoch and the "
                                            "name of a node of this cluster")
        self.leadership.learn(claim)
        self._check_leader({"leader_epoch": claim.epoch})
        with self._lock:
            tasks = [{"job": key[0], "task": list(key[1]), "epoch": self._epochs[key],
                      "address": self._inboxes[key]}
                     for key, proc in self._procs.items()
                     if key in self._inboxes and proc.poll() is None]
        conn.send({"t": OK, "tasks": tasks})

    def handle_start_task(self, conn, msg: dict) -> None:
        self._check_leader(msg)
        spec = msg["spec"]
        key = (spec["job"], tuple(spec["task"]))
        epoch = int(spec.get("epoch", 1))
        with self._lock:
            running = self._epochs.get(key)
        if running is not None and running > epoch:
            raise HandlerError(m.STALE_START, f"task {spec['task']} runs here as attempt "
                                              f"{running} already, not {epoch}")
        self._stop_proc(key)                       # a restart of a task we ran before
        proc = self._take_process()
        leader = msg.get("leader") or list(self.config.address(self.leadership.leader_vm()))
        setup = {"spec": spec, "node": list(self.address), "leader": list(leader),
                 "secret": self.config.secret}
        try:
            proc.stdin.write(wire.encode(setup))
            proc.stdin.close()
        except OSError:
            pass                                   # it died; _read_ready says so below
        line = _read_ready(proc)
        if not line.startswith("READY "):
            proc.kill()
            raise HandlerError(m.TASK_START_FAILED,
                               f"task {spec['task']} did not start on vm{self.vm}: "
                               f"{line or 'it exited'} (see {self._task_log})")
        try:
            self._check_leader(msg)      # the leader may have been deposed meanwhile
        except HandlerError:
            proc.kill()
            raise
        with self._lock:         # two leaders' starts of one task may have raced here
            newer = self._epochs.get(key, 0) > epoch and key in self._procs
            if not newer:
                replaced = self._procs.get(key)
                self._procs[key] = proc
                self._epochs[key] = epoch
                self._inboxes[key] = line.split()[1]
        if newer:
            proc.kill()
            raise HandlerError(m.STALE_START, f"task {spec['task']} runs here as a newer "
                                              f"attempt than {epoch}")
        if replaced is not None and replaced is not proc:
            replaced.kill()
        threading.Thread(target=self._watch, args=(key, proc, epoch), daemon=True).start()
        self.starts.inc()
        log.info("TASK %s/%s started on vm%s at %s (pid %d)", spec["job"], spec["task"],
                 self.vm, line.split()[1], proc.pid)
        conn.send({"t": OK, "address": line.split()[1]})

    # Spare task processes: started when a job ends, while the node is idle, they have the
    # interpreter and the engine's modules loaded and wait for a spec on stdin, so the next
    # job's tasks start in milliseconds instead of a Python start-up each.

    def _spawn(self) -> subprocess.Popen:
        with open(self._task_log, "ab") as errors:
            return subprocess.Popen([sys.executable, "-m", "stream.task_main"], cwd=REPO,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=errors)

    def _take_process(self) -> subprocess.Popen:
        with self._lock:
            while self._spares:
                proc = self._spares.pop()
                if proc.poll() is None:
                    return proc
        return self._spawn()

    def _top_up_spares(self) -> None:
        with self._lock:
            missing = SPARE_PROCESSES - len(self._spares)
            if self._stopping or missing <= 0:
                return
            self._spares += [self._spawn() for _ in range(missing)]

    def _watch(self, key, proc: subprocess.Popen, epoch: int) -> None:
        code = proc.wait()
        with self._lock:
            if self._procs.get(key) is not proc:
                return                       # stopped or replaced on purpose
            del self._procs[key]
        if code != 0:
            log.warning("TASK %s/%s attempt %d exited with status %s", key[0], list(key[1]),
                        epoch, code)
            self._tell_leader({"t": m.TASK_EXIT, "job": key[0], "task": list(key[1]),
                               "epoch": epoch, "vm": self.vm, "code": code})

    def handle_stop_job(self, conn, msg: dict) -> None:
        """Stop the job's task processes: each is told (SIGTERM) at once and the answer
        goes back without waiting for them to exit, which a thread here sees to (a kill
        after STOP_GRACE seconds), before it starts spares for the next job. By the time
        a job ends its tasks have stopped on their own (their final report is in): what
        is left is the interpreter's exit, which the job's end need not wait for."""
        self._check_leader(msg)
        with self._lock:
            keys = [k for k in self._procs if k[0] == msg.get("job")]
            procs = [self._forget(key) for key in keys]
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        conn.send({"t": OK, "stopped": len(keys)})
        threading.Thread(target=self._reap_then_top_up, args=(procs,), daemon=True,
                         name="reap").start()

    def _reap_then_top_up(self, procs: list) -> None:
        for proc in procs:
            _reap(proc)
        self._top_up_spares()              # while the node is idle, ready for the next job

    def _forget(self, key) -> subprocess.Popen | None:
        """Take a task out of the tables (the caller holds the lock); its process."""
        self._epochs.pop(key, None)
        self._inboxes.pop(key, None)
        return self._procs.pop(key, None)

    def handle_lease(self, conn, msg: dict) -> None:
        """A task attempt asks whether to go on: not if this node no longer runs it."""
        key = (msg["job"], tuple(msg["task"]))
        with self._lock:
            current = self._epochs.get(key) if key in self._procs else None
        stop = None if current == msg["epoch"] else \
            ("this node does not run it" if current is None else f"attempt {current} runs")
        conn.send({"t": OK, "stop": stop})

    def _stop_proc(self, key, kill: bool = False) -> None:
        with self._lock:
            proc = self._forget(key)
        if proc is not None and kill:
            proc.kill()
        elif proc is not None and proc.poll() is None:
            proc.terminate()
            _reap(proc)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            keys, spares, self._spares = list(self._procs), self._spares, []
        for key in keys:
            self._stop_proc(key)
        for proc in spares:
            proc.kill()

    def _tell_leader(self, message: dict) -> None:
        """Tell the leader, a few times if it does not answer (it also takes an attempt
        that stopped reporting for dead, so this is not the only word)."""
        for pause in TELL_RETRIES:
            try:
                self.peers.call(self.leadership.leader_vm(), message, timeout=5)
                return
            except (Unreachable, RemoteError) as exc:
                log.warning("could not tell the leader: %s", exc)
            time.sleep(pause)

    # -- HyDFS on behalf of task processes --------------------------------------------------

    def handle_hydfs_append(self, conn, msg: dict) -> None:
        data = conn.recv_bulk_bytes(wire.bulk_length(msg), MAX_APPEND)
        append_id = tuple(msg["id"]) if msg.get("id") else None
        reply = _hydfs(self.client.append_bytes, str(msg.get("name")), data, append_id)
        conn.send({"t": OK, "new": reply.get("new", True)})

    def handle_hydfs_create(self, conn, msg: dict) -> None:
        data = conn.recv_bulk_bytes(wire.bulk_length(msg), MAX_APPEND)
        _hydfs(self.client.create_bytes, str(msg.get("name")), data)
        conn.send({"t": OK})

    def handle_hydfs_fence(self, conn, msg: dict) -> None:
        sealed = _hydfs(self.client.fence, str(msg["name"]), str(msg["key"]), int(msg["epoch"]))
        conn.send({"t": OK, "sealed": sealed.to_wire()})

    def handle_hydfs_read(self, conn, msg: dict) -> None:
        name = str(msg["name"])
        size = _hydfs(self.client.size, name)
        start = min(int(msg.get("offset", 0)), size)
        length = min(int(msg.get("length", size)), size - start)
        chunks = self.client.read_range(name, start, length)
        try:
            conn.send_bulk_chunks({"t": OK, "size": size}, length, chunks)
        except HydfsError as exc:
            raise OSError(f"read of {name} failed midway: {exc}") from None

    def handle_hydfs_read_view(self, conn, msg: dict) -> None:
        name, ids, create = str(msg["name"]), hm.id_set(msg, "ids"), hm.flag(msg, "create")
        offset, length = int(msg.get("offset", 0)), int(msg.get("length", 0))
        size, chunks = _hydfs(self.client.read_view, name, ids, create, offset, length)
        length = max(0, min(length, size - offset))
        try:
            conn.send_bulk_chunks({"t": OK, "size": size}, length, chunks)
        except HydfsError as exc:
            raise OSError(f"read of {name} failed midway: {exc}") from None

    def handle_hydfs_local_view(self, conn, msg: dict) -> None:
        """For a task of this node that reads a view itself, from this node's copy."""
        local = _hydfs(self.client.local_base_view, str(msg["name"]), hm.id_set(msg, "ids"),
                       hm.flag(msg, "create"))
        conn.send({"t": OK, "local": local})

    def handle_plan_partitions(self, conn, msg: dict) -> None:
        """The leader's job setup: cut a view of SRC into partitions from this node's copy
        (it holds one: only SRC's replicas are asked), so the file is not sent across."""
        count = int(msg["count"])
        if not 1 <= count <= MAX_PARTITIONS:
            raise HandlerError(BAD_REQUEST, f"count must be 1 .. {MAX_PARTITIONS}")
        started = time.monotonic()
        if msg.get("part") is not None:       # one partition of a plan cut in parallel
            index = int(msg["part"])
            if not 0 <= index < count:
                raise HandlerError(BAD_REQUEST, f"part must be 0 .. {count - 1}")
            reply = _hydfs(segment_of, self.client, str(msg["name"]), hm.id_set(msg, "ids"),
                           count, index)
            log.info("PLAN %s: partition %d of %d cut here in %.3f s", msg["name"], index,
                     count, time.monotonic() - started)
            conn.send(dict({"t": OK}, **reply))
            return
        size, partitions = _hydfs(cut_partitions, self.client, str(msg["name"]),
                                  hm.id_set(msg, "ids"), count, bool(msg.get("follow")))
        log.info("PLAN %s: %d partitions of %d bytes cut here in %.3f s", msg["name"],
                 count, size, time.monotonic() - started)
        conn.send({"t": OK, "size": size, "partitions": [p.to_wire() for p in partitions]})

    def handle_hydfs_settled(self, conn, msg: dict) -> None:
        ids = _hydfs(self.client.settled, str(msg["name"]))
        conn.send({"t": OK, "ids": ids.to_wire()})

    def handle_hydfs_watch(self, conn, msg: dict) -> None:
        timeout = float(msg.get("timeout", hm.MAX_WATCH))
        if not 0 <= timeout <= hm.MAX_WATCH:
            raise HandlerError(BAD_REQUEST, f"timeout must be 0 .. {hm.MAX_WATCH:g} s")
        held = _hydfs(self.client.watch, str(msg["name"]), hm.id_set(msg, "known"), timeout)
        conn.send({"t": OK, "held": held.to_wire() if held is not None else None})


def _reap(proc: subprocess.Popen) -> None:
    """Wait for a task process told to stop; kill it after STOP_GRACE seconds."""
    try:
        proc.wait(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()


def _hydfs(fn, *args):
    try:
        return fn(*args)
    except HydfsError as exc:      # its code passes on: the task decides by it
        raise HandlerError(exc.code, str(exc)) from None


def _read_ready(proc: subprocess.Popen) -> str:
    """The task's first stdout line (READY host:port), or "" if it died first."""
    result = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(START_TIMEOUT)
    return result[0].decode().strip() if result else ""
