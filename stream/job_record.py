"""A job's record in HyDFS: what the job is and how far it got, enough for another leader to
take it over.

Every job has one file, ``rainstorm/<job>/job``, of JSON lines that the leader appends as
the job changes. The first line names the job: its spec, its tasks' specs (`templates`,
each without its epoch), when and by which leader it was created. Later lines give what
changed: the placement and epoch of every task (`tasks`, written before those attempts are
started), `sources_done` with their counters (`done_stats`: a source that is done is not
started again, so no attempt of it may be left to report them) and `failures_recovered`, a
new `state` and, at the end, the summary. Reading folds the lines in order, so the last word on each field wins: by leader
epoch first (each line carries its writer's, `le`: the merge order of two leaders' appends
follows their clocks, which may disagree), then as appended (one client's appends keep their
order). ``rainstorm/jobs`` lists every job id, one line each.

A job is created in two steps: its first line (the spec) and its index line before anything
else, so that a second submission of the same request (the same job id: a relaying node
that lost the leader and asked its successor) finds it (`JobExists`); its tasks' specs once
they are planned. A record without them is of a job whose leader failed before it started.

Every append is the leader's, under the client id ``leader#EPOCH`` of its leader epoch, so
that a new leader fences the record (hydfs/fences.py) before it takes the job over: from
then on no write of the deposed leader lands, and `Deposed` tells it so.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict

from hydfs.client import HydfsClient, HydfsError
from hydfs.fences import writer_client
from hydfs.messages import FENCED, FILE_EXISTS, NO_SUCH_FILE
from stream.scheduler import TaskId

log = logging.getLogger("stream")

INDEX = "rainstorm/jobs"
WRITER_KEY = "leader"           # the fence key of every leader's writes (leadership.py)


class Deposed(Exception):
    """A write of this leader was refused: a newer leader fenced the record."""


class JobExists(Exception):
    """A job of this id was submitted before."""


def record_name(job_id: str) -> str:
    return f"rainstorm/{job_id}/job"


def fold(data: bytes) -> dict:
    """A job's document from its record's lines: later fields win (by leader epoch, then
    in the order appended)."""
    lines = []
    for line in data.split(b"\n"):
        if line.strip():
            try:
                fields = json.loads(line)
            except ValueError:
                continue                # a torn last line: the writer died mid-append
            if isinstance(fields, dict):
                lines.append(fields)
    doc: dict = {}
    for fields in sorted(lines, key=lambda f: f.get("le", 0)):   # stable: appended order
        doc.update(fields)
    doc.pop("le", None)
    return doc


def placement_of(record: dict) -> dict[TaskId, tuple[str, int]]:
    """Where the record says each task runs, and which attempt: task -> (vm, epoch)."""
    placement = {}
    for stage, index, vm, epoch in record.get("tasks") or []:
        placement[TaskId(stage, index)] = (vm, int(epoch))
    return placement


def placement_to_wire(tasks: dict) -> list:
    """[[stage, index, vm, epoch]] of a job core's tasks."""
    return [[t.stage, t.index, st.vm, st.epoch] for t, st in sorted(tasks.items())]


class JobRecords:
    def __init__(self, client: HydfsClient, vm: str):
        self.client = client
        self.vm = vm
        self._seq: dict[tuple, int] = defaultdict(int)   # (epoch, file) -> last append seq
        self._seq_lock = threading.Lock()        # job threads append to the index at once
        self._index_ready = False

    def create(self, job_id: str, first: dict, epoch: int) -> None:
        """A new job's record (`first`: its spec), then its line in the index. Raises
        JobExists if a job of that id was submitted before, HydfsError (Deposed if fenced)
        if it cannot be written: a job without its record must not run. (A record whose
        index line was refused is never listed, and nothing of its job runs.)"""
        self._ensure_index()
        try:
            self.client.create_bytes(record_name(job_id), _line(dict(
                first, job=job_id, state="starting", leader=self.vm, created=time.time(),
                le=epoch)))
        except HydfsError as exc:
            if exc.code == FILE_EXISTS:
                raise JobExists(job_id) from None
            raise
        self._append(INDEX, {"job": job_id}, epoch)   # fenced: a deposed leader stops here

    def update(self, job_id: str, fields: dict, epoch: int, strict: bool = False) -> None:
        """Append what changed, as the leader of `epoch`. Deposed if fenced; any other
        failure raised if `strict` (the job relies on it), else logged."""
        try:
            self._append(record_name(job_id), fields, epoch)
        except HydfsError as exc:
            if strict:
                raise
            log.warning("job record not written: %s", exc)

    def fence(self, job_id: str, epoch: int) -> dict | None:
        """Fence the record against leaders before `epoch`; the record as it then stands."""
        self.client.fence(record_name(job_id), WRITER_KEY, epoch)
        return self.read(job_id)

    def fence_index(self, epoch: int) -> None:
        """Fence the index (created if need be: a deposed leader must not add to it)."""
        self._ensure_index()
        self.client.fence(INDEX, WRITER_KEY, epoch)

    def job_ids(self) -> list[str]:
        """Every job in the index, oldest first."""
        try:
            data = self.client.read_bytes(INDEX)
        except HydfsError as exc:
            if exc.code == NO_SUCH_FILE:
                return []
            raise
        ids = []
        for line in data.split(b"\n"):
            try:
                job_id = json.loads(line)["job"] if line.strip() else None
            except (ValueError, KeyError, TypeError):
                continue
            if job_id and job_id not in ids:
                ids.append(job_id)
        return ids

    def read(self, job_id: str) -> dict | None:
        try:
            return fold(self.client.read_bytes(record_name(job_id)))
        except HydfsError as exc:
            if exc.code == NO_SUCH_FILE:
                return None
            raise

    def _append(self, name: str, fields: dict, epoch: int) -> None:
        with self._seq_lock:
            self._seq[epoch, name] += 1
            seq = self._seq[epoch, name]
        try:
            self.client.append_bytes(name, _line(dict(fields, le=epoch)), (
                writer_client(WRITER_KEY, epoch), seq))
        except HydfsError as exc:
            if exc.code == FENCED:
                raise Deposed(f"a newer leader fenced {name}") from None
            raise

    def _ensure_index(self) -> None:
        if self._index_ready:
            return
        try:
            self.client.create_bytes(INDEX, b"")
        except HydfsError as exc:
            if exc.code != FILE_EXISTS:
                raise
        self._index_ready = True


def _line(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode("utf-8") + b"\n"
