"""Moving a file's replica state between nodes, streamed: base bytes, then pending records.

A state transfer is these messages on one connection (types in messages.py):

    {"t": "hydfs.state", "name": ..., "summary": {...}, "base_size": B,
     "index": {"count": N, "clients": [...]}, "bulk": B + 36 N}   + base bytes, index rows
    {"t": "hydfs.records", "name": ..., "count": N}
    N x {"t": "hydfs.record", "id": [client, seq], "ts": ..., "bulk": SIZE}  + its bytes

`summary` is None in the first message when only records follow (the receiver keeps its own
base; the message then carries the sender's fences, which the summary holds otherwise). The
base streams in bounded chunks straight from the sender's verified snapshot into the
receiver's file, then the rows of its index (merged_index.py, checked as they are written:
however many appends a file holds, none of it passes through a message line), and so does
each record; the receiver keeps only the records its fences
admit (fences.py).
"""

from __future__ import annotations

import dataclasses
from itertools import chain

from cluster import wire
from cluster.chunks import drain
from cluster.connection import Connection
from cluster.rpc import check_reply
from hydfs.checked_read import BLOCK
from hydfs.fences import Fences
from hydfs.idset import IdSet
from hydfs.merged_index import ROW
from hydfs.messages import RECORD, RECORDS, STATE
from hydfs.read_ahead import CheckedRanges
from hydfs.store import ReplicaStore

def send_state(conn: Connection, store: ReplicaStore, name: str, full: bool,
               exclude: IdSet | None = None) -> None:
    """Send our copy of `name`: the whole state (base, its index, pending records), or only
    the appends not in `exclude`, merged or pending, as records."""
    snap = store.snapshot(name)          # summary, base and records of one moment
    try:
        if full:
            summary = snap.summary
            base = [p for p in snap.pieces if p[4]]
            view = dataclasses.replace(snap, pieces=base)
            size = sum(p[2] for p in base)
            index = snap.index
            with CheckedRanges(store.spans(view, 0, size, window=BLOCK), size) as ranges:
                conn.send_bulk_ranges({"t": STATE, "name": name, "summary": summary,
                                       "create_size": snap.create_size, "base_size": size,
                                       "index": index.header()},
                                      size + index.nbytes(), chain(ranges, index.ranges()))
            records = store.snapshot_records(snap, IdSet(summary["merged"]))
        else:
            conn.send_bulk_chunks({"t": STATE, "name": name, "summary": None,
                                   "fences": snap.summary.get("fences")}, 0, [])
            records = store.snapshot_records(snap, exclude or IdSet(), merged_too=True)
        send_records(conn, name, records)
    finally:
        snap.close()


def state_layout(msg: dict, bulk: int) -> tuple[int, dict]:
    """(base bytes, index header) of a full state message whose payload is `bulk` bytes;
    ProtocolError unless they are whole numbers, client ids and add up."""
    base_size, index = msg.get("base_size"), msg.get("index")
    count = index.get("count") if isinstance(index, dict) else None
    clients = index.get("clients") if isinstance(index, dict) else None
    if not (_whole(base_size) and _whole(count) and isinstance(clients, list)
            and all(isinstance(c, str) for c in clients)
            and base_size + count * ROW.size == bulk):
        raise wire.ProtocolError("a state's base and index do not fill its payload")
    return base_size, index


def _whole(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


def send_records(conn: Connection, name: str, records: list) -> None:
    """A count, then each record as its own message with its bytes streamed after it."""
    conn.send({"t": RECORDS, "name": name, "count": len(records)})
    for header, chunks in records:
        conn.send_bulk_chunks({"t": RECORD, "id": header["id"], "ts": header["ts"]},
                              int(header["size"]), chunks)


def recv_records(conn: Connection):
    """Yield (header, chunks) per record; consume each record's chunks before the next."""
    msg = conn.recv()
    if msg.get("t") != RECORDS:
        raise wire.ProtocolError(f"expected {RECORDS}, got {msg.get('t')!r}")
    for _ in range(int(msg["count"])):
        record = conn.recv()
        if record.get("t") != RECORD:
            raise wire.ProtocolError(f"expected {RECORD}, got {record.get('t')!r}")
        size = wire.bulk_length(record)
        yield {"id": record["id"], "ts": record["ts"], "size": size}, conn.recv_bulk_chunks(size)


def recv_state(conn: Connection, store: ReplicaStore, name: str) -> str:
    """Receive a state transfer into `store`; returns "full" or "records"."""
    msg = check_reply(conn.recv())
    if msg.get("t") != STATE:
        raise wire.ProtocolError(f"expected {STATE}, got {msg.get('t')!r}")
    size = wire.bulk_length(msg)
    summary = msg.get("summary")
    if summary is None:
        drain(conn.recv_bulk_chunks(size))
        store.learn_fences(name, Fences.from_wire(msg.get("fences")))
        store.add_records(name, recv_records(conn))
        return "records"
    # The base must be read off the socket before the records that follow it; the store
    # writes it to a temporary file as it arrives, so it is never whole in memory.
    base_size, index = state_layout(msg, size)
    store.install(name, summary, conn.recv_bulk_chunks(size), base_size, [],
                  int(msg.get("create_size", 0)), index)
    store.add_records(name, recv_records(conn))
    return "full"
