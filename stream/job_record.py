"""A job's record in HyDFS: what the job is and how far it got, readable by any node.

Every job has one file, ``rainstorm/<job>/job``, of JSON lines that the leader appends as
the job changes: the first names the job (its spec, when and by which leader it was
created), each later one gives a new `state` and, at the end, the job's summary. Reading
folds the lines in order (one client's appends keep their order), so the last state
wins. ``rainstorm/jobs`` lists every job id, one line each, so that jobs a leader did not
run itself (before a restart, or another leader's) are listed too.

Writes here are the leader's; a record that cannot be written is logged and the job goes
on (the record is for reading the job back, not for running it).
"""

from __future__ import annotations

import json
import logging
import time

from hydfs.client import HydfsClient, HydfsError
from hydfs.messages import FILE_EXISTS, NO_SUCH_FILE

log = logging.getLogger("stream")

INDEX = "rainstorm/jobs"


def record_name(job_id: str) -> str:
    return f"rainstorm/{job_id}/job"


def fold(data: bytes) -> dict:
    """A job's document from its record's lines: later fields win."""
    doc: dict = {}
    for line in data.split(b"\n"):
        if line.strip():
            try:
                doc.update(json.loads(line))
            except ValueError:
                continue                # a torn last line: the writer died mid-append
    return doc


class JobRecords:
    def __init__(self, client: HydfsClient, vm: str):
        self.client = client
        self.vm = vm
        self._index_ready = False

    def create(self, job_id: str, spec: dict) -> None:
        """The record of a new job, and its line in the index."""
        self._write(self._ensure_index)
        self._write(lambda: self.client.create_bytes(record_name(job_id), _line(
            {"job": job_id, "spec": spec, "state": "starting", "leader": self.vm,
             "created": time.time()})))
        self._write(lambda: self.client.append_bytes(INDEX, _line({"job": job_id})))

    def update(self, job_id: str, fields: dict) -> None:
        self._write(lambda: self.client.append_bytes(record_name(job_id), _line(fields)))

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

    def _ensure_index(self) -> None:
        if self._index_ready:
            return
        try:
            self.client.create_bytes(INDEX, b"")
        except HydfsError as exc:
            if exc.code != FILE_EXISTS:
                raise
        self._index_ready = True

    @staticmethod
    def _write(write) -> None:
        try:
            write()
        except HydfsError as exc:
            log.warning("job record not written: %s", exc)


def _line(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode("utf-8") + b"\n"
