"""The ctl protocol, both ends: run one REPL command on a node, over TCP.

    -> {"t": "ctl", "argv": [...], "cwd": "...", "json": bool, "request"?: "id"}
    <- {"t": "ctl_output", "text": "..."}        zero or more progress lines
    <- {"t": "ctl_output", "keepalive": true}    every KEEPALIVE seconds while it runs
    <- {"t": "ctl_output", "note": {...}}        facts for a program (e.g. {"job": id})
    <- {"t": "ctl_result", "ok": true, "text": "...", "doc": {...}}
       {"t": "ctl_result", "ok": false, "usage": bool, "error": "...", "code"?: "..."}

`serve(conn, message, run)` is the node's side; `request(...)` the caller's, used by
`rainstorm.py ctl` (`run_ctl`), by a node relaying a command to the leader, and by the test
harness. The keepalives let a caller tell a slow command from a node that stopped answering
(e.g. a SIGSTOPped one): silence for `timeout` seconds means unreachable.

Exit status of `rainstorm.py ctl` (INTERFACE.md): 0 success; 1 the command failed (one-line
reason on stderr); 2 usage error; 3 node unreachable. With --json, exactly one JSON document
is printed on stdout, also for failures (``{"ok": false, "error": "..."}``).
"""

from __future__ import annotations

import json
import logging
import os
import sys

from cluster import wire
from cluster.commands import CommandError, Context, UsageError
from cluster.config import Config
from cluster.connection import Connection
from cluster.ctl_session import TICKER, Session
from cluster.messages import CTL, CTL_OUTPUT, CTL_RESULT, ERROR

log = logging.getLogger("node")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
CONNECT_TIMEOUT = 5.0
REPLY_TIMEOUT = 10.0     # silence this long (no answer, no keepalive) means unreachable


# -- the caller's side --------------------------------------------------------------------------

def request(address: tuple[str, int], key: bytes | None, argv: list[str], cwd: str,
            as_json: bool, on_output=None, timeout: float | None = REPLY_TIMEOUT,
            on_note=None) -> dict:
    """Run `argv` on the node at `address`; its ctl_result (or an error reply). Progress
    lines go to `on_output(text)`, notes to `on_note(fields)`. Raises OSError /
    wire.ProtocolError if the node cannot be reached or stops answering."""
    with Connection.open(address, key, CONNECT_TIMEOUT) as conn:
        return converse(conn, argv, cwd, as_json, on_output, timeout, on_note)


def converse(conn: Connection, argv: list[str], cwd: str, as_json: bool, on_output=None,
             timeout: float | None = REPLY_TIMEOUT, on_note=None, request: str = "") -> dict:
    """`request` on a connection that is open already (`request`: the request's id)."""
    conn.sock.settimeout(timeout)
    message = {"t": CTL, "argv": list(argv), "cwd": cwd, "json": as_json}
    if request:
        message["request"] = request
    conn.send(message)
    while True:
        reply = conn.recv()
        if reply.get("t") != CTL_OUTPUT:
            return reply
        if reply.get("keepalive"):
            continue
        if isinstance(reply.get("note"), dict):
            if on_note is not None:
                on_note(reply["note"])
        elif on_output is not None:
            on_output(reply.get("text", ""))


def run_ctl(config: Config, vm: str, argv: list[str], as_json: bool,
            timeout: float | None = REPLY_TIMEOUT) -> int:
    """`rainstorm.py ctl`: print what the command prints; the exit status."""
    host, port = config.address(vm)
    try:
        conn = Connection.open((host, port), wire.secret_key(config.secret), CONNECT_TIMEOUT)
    except OSError as exc:
        return _fail(as_json, f"node {vm} at {host}:{port} is unreachable: "
                              f"{exc.strerror or exc}", EXIT_UNREACHABLE)
    printer = None if as_json else (lambda text: print(text, flush=True))
    notes: dict = {}
    with conn:
        try:
            reply = converse(conn, argv, os.getcwd(), as_json, printer, timeout, notes.update)
        except OSError as exc:
            return _fail(as_json, f"node {vm} at {host}:{port} is not answering: "
                                  f"{exc or 'timed out'}" + _follow_on(notes),
                         EXIT_UNREACHABLE, notes)
        except wire.AuthError:
            return _fail(as_json, f"node {vm} rejected our messages or we rejected its "
                                  f"answer: authentication failed (check [cluster] secret)",
                         EXIT_FAILED)
        except wire.ProtocolError as exc:   # e.g. the node died mid-answer (kill -9)
            return _fail(as_json, f"node {vm}: {exc}" + _follow_on(notes), EXIT_UNREACHABLE,
                         notes)
    return _report(reply, as_json)


def _follow_on(notes: dict) -> str:
    """What a caller that lost its node while a job ran can do next."""
    if "job" not in notes:
        return ""
    return (f"; job {notes['job']} was running: if that node led it, a new leader takes it "
            f"over: follow it with 'job {notes['job']}' on any node")


def _report(reply: dict, as_json: bool) -> int:
    errors = {"code": reply["code"]} if isinstance(reply.get("code"), str) else {}
    if reply.get("t") == ERROR:
        return _fail(as_json, reply.get("error", "error"), EXIT_FAILED, errors)
    if not reply.get("ok"):
        code = EXIT_USAGE if reply.get("usage") else EXIT_FAILED
        return _fail(as_json, reply.get("error", "failed"), code, errors)
    if as_json:
        print(json.dumps(reply.get("doc", {"ok": True}), indent=2))
    elif reply.get("text"):
        print(reply["text"])
    return EXIT_OK


def _fail(as_json: bool, reason: str, code: int, notes: dict | None = None) -> int:
    """A failure: one line on stderr; with --json, its document (with the error's code
    when it has one, and the notes the node sent before it failed, such as the id of the
    job it had started)."""
    if as_json:
        print(json.dumps(dict(notes or {}, ok=False, error=reason)))
    print(f"error: {reason}", file=sys.stderr)
    return code


# -- the node's side ----------------------------------------------------------------------------

def serve(conn: Connection, message: dict, run) -> None:
    """Answer one ctl request: `run(ctx, argv)` (a registry's) in this thread, its progress
    lines and keepalives sent as they come (ctl_session.py), then its result."""
    argv = message.get("argv")
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        conn.send({"t": CTL_RESULT, "ok": False, "usage": True, "error": "bad argv"})
        return
    session = Session(conn)
    ctx = Context(cwd=str(message.get("cwd") or "."), json=bool(message.get("json")),
                  emit=session.emit, attached=session.attached, note=session.note,
                  request=str(message.get("request") or "")[:64])
    TICKER.watch(session)
    try:
        result = _result_of(run, ctx, argv)
    finally:
        TICKER.unwatch(session)
    session.finish(result)


def _result_of(run, ctx: Context, argv: list) -> dict:
    """The ctl_result of `run(ctx, argv)`."""
    try:
        result = run(ctx, argv)
    except CommandError as exc:
        reply = {"t": CTL_RESULT, "ok": False, "usage": isinstance(exc, UsageError),
                 "error": str(exc)}
        if exc.code:
            reply["code"] = exc.code
        return reply
    except Exception as exc:
        log.exception("command %s failed", argv)
        return {"t": CTL_RESULT, "ok": False, "error": f"internal error: {exc}"}
    return {"t": CTL_RESULT, "ok": True, "text": result.text, "doc": result.doc}
