"""Error codes: what went wrong, as data a caller can branch on.

A failed request is answered ``{"t": "error", "code": "no_such_file", "error": "..."}``: the
code says *what* failed and never changes; the text says it to a person and may be reworded
at will. Callers decide by the code alone (retry, try another replica, report), so rewording a
message never changes behaviour. Every exception that crosses a module boundary with a
reason to act on is a `CodedError`.

The codes every node may answer with are listed here; each subsystem lists its own in its
message catalogue (`hydfs/messages.py`, `stream/messages.py`). Like message types, codes are
part of the protocol: add new ones, never rename or reuse one.
"""

from __future__ import annotations

BAD_REQUEST = "bad_request"            # a message without a field its type requires, or junk in one
UNKNOWN_MESSAGE = "unknown_message"    # a type no handler on this node serves
PROTOCOL_ERROR = "protocol_error"      # bytes that break the wire format (wire.py)
INTERNAL = "internal"                  # a bug in a handler: logged with its traceback
UNREACHABLE = "unreachable"            # the node did not answer (raised by the caller; a node
                                       # answering for a client, e.g. a task's, passes it on)
SLOW = "slow"                          # it took the request but did not start answering in time


class CodedError(Exception):
    """An error with a `code` (a constant above or from a catalogue) and a one-line reason."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class HandlerError(CodedError):
    """Raised by a request handler to answer with an error reply (its code and reason), not
    a crash log (server.py)."""
