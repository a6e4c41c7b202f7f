"""`rainstorm.py ctl`: run one REPL command on a running node and print its answer.

Exit status (INTERFACE.md): 0 success; 1 the command failed (one-line reason on stderr);
2 usage error; 3 node unreachable. With --json, exactly one JSON document is printed on
stdout, also for failures (``{"ok": false, "error": "..."}``).
"""

from __future__ import annotations

import json
import os
import sys

from cluster import wire
from cluster.config import Config
from cluster.connection import Connection

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
CONNECT_TIMEOUT = 5.0
REPLY_TIMEOUT = 10.0     # silence this long (no answer, no keepalive) means unreachable


def run_ctl(config: Config, vm: str, argv: list[str], as_json: bool,
            timeout: float | None = REPLY_TIMEOUT) -> int:
    host, port = config.address(vm)
    try:
        conn = Connection.open((host, port), wire.secret_key(config.secret), CONNECT_TIMEOUT)
    except OSError as exc:
        return _fail(as_json, f"node {vm} at {host}:{port} is unreachable: "
                              f"{exc.strerror or exc}", EXIT_UNREACHABLE)
    conn.sock.settimeout(timeout)
    with conn:
        try:
            conn.send({"t": "ctl", "argv": argv, "cwd": os.getcwd(), "json": as_json})
            while True:
                reply = conn.recv()
                if reply.get("t") != "ctl_output":
                    break
                if not as_json and not reply.get("keepalive"):
                    print(reply.get("text", ""), flush=True)
        except OSError as exc:
            return _fail(as_json, f"node {vm} at {host}:{port} is not answering: "
                                  f"{exc or 'timed out'}", EXIT_UNREACHABLE)
        except wire.AuthError:
            return _fail(as_json, f"node {vm} rejected our messages or we rejected its "
                                  f"answer: authentication failed (check [cluster] secret)",
                         EXIT_FAILED)
        except wire.ProtocolError as exc:
            return _fail(as_json, f"node {vm}: {exc}", EXIT_UNREACHABLE)
    return _report(reply, as_json)


def _report(reply: dict, as_json: bool) -> int:
    if reply.get("t") == "error":
        return _fail(as_json, reply.get("error", "error"), EXIT_FAILED)
    if not reply.get("ok"):
        code = EXIT_USAGE if reply.get("usage") else EXIT_FAILED
        return _fail(as_json, reply.get("error", "failed"), code)
    if as_json:
        print(json.dumps(reply.get("doc", {"ok": True}), indent=2))
    elif reply.get("text"):
        print(reply["text"])
    return EXIT_OK


def _fail(as_json: bool, reason: str, code: int) -> int:
    if as_json:
        print(json.dumps({"ok": False, "error": reason}))
    print(f"error: {reason}", file=sys.stderr)
    return code
