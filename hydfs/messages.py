"""HyDFS message catalogue: every message type between HyDFS nodes, and its error codes.

Append-only (cluster/messages.py says why). Requests go to a node's TCP port; ``ok`` answers
with the fields named after the arrow; a failure is an ``error`` with one of the codes below.
A ``+ bytes`` request or reply carries a bulk payload after its header (wire.py).

Coordinated writes (client -> a replica of the file, which coordinates; coordinator.py):
    hydfs.create {name, file_id} + bytes           -> ok {replicas}
    hydfs.append {name, id: [client, seq], ts} + bytes   -> ok {new, replicas}
    hydfs.merge {name}                             -> ok {merged, gen, already, seconds}
    hydfs.fence {name, key, epoch, round}          -> ok {sealed}   (fences.py)
Replica side (coordinator or client -> a replica; service.py):
    hydfs.summary {name}                           -> ok {summary or null}
    hydfs.manifest {}                              -> ok {files: name -> summary}
    hydfs.get {name, if_version?, must_hold?, offset?, length?}
                                                   -> hydfs.data {version, replica, size,
                                                      merged_size} + bytes
                                                      or hydfs.not_modified {version}
    hydfs.fetch {name, have}                       -> a state transfer (transfer.py)
    hydfs.state {name, summary, ...} + base, then records   -> ok   (a pushed state transfer)
    hydfs.create_replica {name, file_id} + bytes   -> ok
    hydfs.append_replica {name, id, ts} + bytes    -> ok, or error `missing`
    hydfs.apply_merge {name, gen, merge_id, target} -> ok {missing: [ids]}
    hydfs.discard {name, file_id}                  -> ok   (undo a failed create)
    hydfs.fence_begin {name, key, epoch, round}    -> ok {prior, held}
    hydfs.fence_seal {name, key, epoch, round, sealed} -> ok {lacking, summary}
    hydfs.read_view {name, ids, create, offset, length}
                                                   -> hydfs.data {version, replica, size} + bytes
                                                      or error `missing`   (view.py)
    hydfs.watch {name, known, timeout}             -> ok {summary or null}, once the copy
                                                      holds an id not in `known` (or timeout)
State transfers (inside hydfs.fetch / hydfs.state; transfer.py):
    hydfs.records {name, count}, then count x hydfs.record {id, ts} + bytes
Client commands run on another node (hydfs/commands.py):
    hydfs.client_append {name, path}               -> ok {size}   (multiappend)

The request parsers below turn a request's fields into checked values, refusing a bad one
with `bad_request` (or `bad_name`) before a handler acts on it.
"""

from __future__ import annotations

from cluster import wire
from cluster.errors import BAD_REQUEST, HandlerError
from cluster.messages import Catalogue
from hydfs.idset import IdSet
from hydfs.names import BadName, check_name

HYDFS = Catalogue("hydfs")

SUMMARY = HYDFS.add("hydfs.summary", ("name",), "a replica's summary of its copy")
MANIFEST = HYDFS.add("hydfs.manifest", (), "every copy a node holds, summarised")
GET = HYDFS.add("hydfs.get", ("name",), "a copy's bytes, or a byte range of them")
FETCH = HYDFS.add("hydfs.fetch", ("name",), "pull a copy's state: what `have` lacks")
STATE = HYDFS.add("hydfs.state", ("name",), "a pushed state transfer: base and records")
CREATE_REPLICA = HYDFS.add("hydfs.create_replica", ("name", "file_id"),
                           "a replica's copy of a create, streamed by its coordinator")
APPEND_REPLICA = HYDFS.add("hydfs.append_replica", ("name", "id", "ts"),
                           "a replica's copy of an append, streamed by its coordinator")
APPLY_MERGE = HYDFS.add("hydfs.apply_merge", ("name", "gen", "merge_id", "target"),
                        "merge exactly these appends")
CREATE = HYDFS.add("hydfs.create", ("name", "file_id"), "create a file (coordinated)")
APPEND = HYDFS.add("hydfs.append", ("name", "id", "ts"), "append to a file (coordinated)")
MERGE = HYDFS.add("hydfs.merge", ("name",), "merge a file's replicas (coordinated)")
DISCARD = HYDFS.add("hydfs.discard", ("name", "file_id"), "undo a create that failed")
CLIENT_APPEND = HYDFS.add("hydfs.client_append", ("name", "path"),
                          "append a local file of this node (multiappend)")
DATA = HYDFS.add("hydfs.data", ("version",), "a get's answer, the bytes after it")
NOT_MODIFIED = HYDFS.add("hydfs.not_modified", ("version",), "a get's answer: your copy is current")
RECORDS = HYDFS.add("hydfs.records", ("count",), "how many records follow in a transfer")
RECORD = HYDFS.add("hydfs.record", ("id", "ts"), "one append record, its bytes after it")
FENCE = HYDFS.add("hydfs.fence", ("name", "key", "epoch"),
                  "fence a file against a writer's older epochs (coordinated)")
FENCE_BEGIN = HYDFS.add("hydfs.fence_begin", ("name", "key", "epoch"),
                        "refuse the writer's older epochs; report what is held")
FENCE_SEAL = HYDFS.add("hydfs.fence_seal", ("name", "key", "epoch", "sealed"),
                       "keep exactly these appends of the writer's older epochs")
READ_VIEW = HYDFS.add("hydfs.read_view", ("name", "ids", "create", "offset", "length"),
                      "a byte range of a view: these appends in merge order (view.py)")
WATCH = HYDFS.add("hydfs.watch", ("name", "known", "timeout"),
                  "answer once the copy holds an append not in `known` (a long poll)")

# Error codes (cluster/errors.py has those every node uses).
NO_SUCH_FILE = "no_such_file"              # no replica (or not this one) holds the name
FILE_EXISTS = "file_exists"                # a create of a name that is taken
NOT_OWNER = "not_owner"                    # this node is not a replica of the file (views differ)
NOT_ENOUGH_REPLICAS = "not_enough_replicas"  # a write could not reach every replica (yet)
TOO_FEW_NODES = "too_few_nodes"            # the cluster has fewer live nodes than replicas
HOME_UNREACHABLE = "home_unreachable"      # a create of a name whose every home replica
                                           # (on the ring of all [nodes]) is down or cut off
NO_QUORUM = "no_quorum"                    # this node sees no majority of [nodes] live: on
                                           # the minority side of a partition, no writes
BEHIND = "behind"                          # this replica lacks the reader's last append (yet)
MISSING = "missing"                        # this node lacks the file (append_replica) or
                                           # appends a read_view asked for
BAD_NAME = "bad_name"                      # a name that names.check_name refuses
MERGE_FAILED = "merge_failed"              # a replica could not gather every append to merge
LOCAL_FILE = "local_file"                  # a client's local path cannot be read or written
FENCED = "fenced"                          # a writer (or fence) that a newer epoch replaced


def file_name(msg: dict) -> str:
    try:
        return check_name(msg.get("name"))
    except BadName as exc:
        raise HandlerError(BAD_NAME, str(exc)) from None


MAX_SEQ = 1 << 63       # sequence numbers are kept as 64-bit numbers (merged_index.py)


def append_id(msg: dict) -> tuple[str, int, float]:
    """(client, seq, ts) of an append."""
    try:
        client, seq = msg["id"]
        client, seq, ts = str(client), int(seq), float(msg["ts"])
    except (KeyError, TypeError, ValueError):
        raise HandlerError(BAD_REQUEST, "bad append id") from None
    if not 0 <= seq < MAX_SEQ:
        raise HandlerError(BAD_REQUEST, f"bad append id: sequence number {seq}")
    return client, seq, ts


MAX_APPEND_BYTES = 1 << 36      # appends stream to disk; this only bounds a typo


def append_size(msg: dict) -> int:
    size = wire.bulk_length(msg)
    if size > MAX_APPEND_BYTES:
        raise wire.ProtocolError(f"append of {size} bytes exceeds {MAX_APPEND_BYTES}")
    return size


def fence_of(msg: dict) -> tuple[str, int, int]:
    """(key, epoch, round) of a fence request."""
    key, epoch, rnd = msg["key"], msg["epoch"], msg.get("round", 0)
    if not isinstance(key, str) or not key or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (epoch, rnd)):
        raise HandlerError(BAD_REQUEST, "bad fence key, epoch or round")
    return key, epoch, rnd


MAX_WATCH = 30.0        # the longest a watch waits (seconds): a client asks again after it


def id_set(msg: dict, field: str) -> IdSet:
    """The IdSet in wire form (IdSet.to_wire) in `field`."""
    value = msg.get(field)
    try:
        if not isinstance(value, dict):
            raise TypeError(field)
        return IdSet(value)
    except (TypeError, ValueError):
        raise HandlerError(BAD_REQUEST, f"bad id set in {field!r}") from None


def flag(msg: dict, field: str) -> bool:
    value = msg.get(field)
    if not isinstance(value, bool):
        raise HandlerError(BAD_REQUEST, f"{field!r} must be true or false")
    return value


def watch_timeout(msg: dict) -> float:
    """A watch's timeout in seconds, at most MAX_WATCH."""
    value = msg.get("timeout")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not 0 <= value < float("inf"):
        raise HandlerError(BAD_REQUEST, "bad watch timeout")
    return min(float(value), MAX_WATCH)


def byte_range(msg: dict, size: int) -> tuple[int, int]:
    """(start, length) of a get's (or a view's) byte range, clipped to `size` bytes."""
    offset, length = msg.get("offset"), msg.get("length")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
               for v in (offset, length)):
        raise HandlerError(BAD_REQUEST, "bad byte range")
    start = min(offset, size)
    return start, min(length, size - start)
