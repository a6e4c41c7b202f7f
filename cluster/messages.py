"""Message types, and the catalogue each subsystem keeps of its own.

Every message on the wire is one JSON object whose ``"t"`` names its type (wire.py). A
subsystem declares every type it sends or serves in one catalogue module, with the fields a
request of that type must carry and a line on what it means and what answers it:

    membership/messages.py   UDP: join, ping, ack, update, ...
    hydfs/messages.py        TCP: hydfs.get, hydfs.append, hydfs.create_replica, ...
    stream/messages.py       TCP: stream.start_task, stream.block, stream.ack, ...
    (here)                   what every node speaks: ok, error, ctl, ctl_output, ctl_result

A `MessageType` is the type's name itself (a `str`), so it goes into a message as
``{"t": SUMMARY, ...}`` and keys a dispatch table, and it carries its required `fields`, which
the server checks before a handler runs (a request without one is answered `bad_request`).
Catalogues are append-only, as memberlist's message enum: a name is part of the protocol
once nodes speak it, so types are added at the end and never renamed or reused
(tests/unit/test_catalogues.py pins each list).
"""

from __future__ import annotations


class MessageType(str):
    """A message type's name, with the fields a message of this type must carry."""

    fields: tuple[str, ...]
    doc: str

    def __new__(cls, name: str, fields: tuple[str, ...] = (), doc: str = "") -> "MessageType":
        self = super().__new__(cls, name)
        self.fields = tuple(fields)
        self.doc = doc
        return self

    def missing_field(self, message: dict) -> str | None:
        """The first required field `message` lacks, or None."""
        return next((f for f in self.fields if f not in message), None)


class Catalogue:
    """The message types of one subsystem, in the order they were added."""

    def __init__(self, subsystem: str):
        self.subsystem = subsystem
        self._types: dict[str, MessageType] = {}

    def add(self, name: str, fields: tuple[str, ...] = (), doc: str = "") -> MessageType:
        if name in self._types:
            raise ValueError(f"message type {name!r} is declared twice")
        self._types[name] = MessageType(name, fields, doc)
        return self._types[name]

    def names(self) -> list[str]:
        return list(self._types)

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __getitem__(self, name: str) -> MessageType:
        return self._types[name]


CLUSTER = Catalogue("cluster")

OK = CLUSTER.add("ok", (), "a request succeeded; its result fields ride along")
ERROR = CLUSTER.add("error", ("code", "error"), "a request failed: code (errors.py) and reason")
CTL = CLUSTER.add("ctl", (), "run one REPL command: argv, cwd, json; -> ctl_output*, then "
                  "ctl_result (a bad argv is a usage error, ctl.py)")
CTL_OUTPUT = CLUSTER.add("ctl_output", (), "a progress line (text) of a running command, or an "
                         "empty keepalive")
CTL_RESULT = CLUSTER.add("ctl_result", ("ok",), "a command's end: ok with text and doc, or the "
                         "error (usage: true for a usage error)")


def error_reply(code: str, reason: str) -> dict:
    """The answer to a request that failed."""
    return {"t": ERROR, "code": code, "error": reason}
