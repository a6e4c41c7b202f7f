"""A node's HTTP server: the cluster's documents as JSON, for a browser or a script.

Every node serves HTTP on its own host at `port + [cluster] http_offset` (0: no HTTP),
on threads of its own (`http.server`), so no request ever holds up the node's protocol
threads. What it serves is a table of routes given by the composition root (node.py):
a path, or a path prefix ending in "/", to a function that returns the document (the same
documents as the `--json` output of the REPL commands), or a `Response` of another type
(the page, the metrics text).

Bounded input: only GET; a request line or header line over 64 KiB or more than 100
headers is refused by `http.server` (414 / 431); a client that sends nothing for TIMEOUT
seconds is dropped; a path that is not a route is 404 (nothing is ever read from disk, so
no name can reach outside the node). Refusals are logged, rate-limited.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from cluster.commands import CommandError
from cluster.logs import Occasional

log = logging.getLogger("node")

TIMEOUT = 5.0              # seconds a client may take to send its request


@dataclass(frozen=True)
class Response:
    """A body that is not a JSON document."""
    content_type: str
    body: bytes


class HttpApi:
    def __init__(self, host: str, port: int, routes: dict):
        """`routes`: path -> fn() -> doc, or "prefix/" -> fn(rest) -> doc ("/" is a path)."""
        self.routes = routes
        self.refused = Occasional()          # logged: the first, then one in a hundred
        api = self

        class Handler(BaseHTTPRequestHandler):
            timeout = TIMEOUT
            server_version = "RainStorm"

            def do_GET(self):
                status, doc = api.answer(urlsplit(self.path).path)
                if isinstance(doc, Response):
                    kind, body = doc.content_type, doc.body
                else:
                    kind, body = "application/json", json.dumps(doc, indent=1).encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_request(self, code="-", size="-"):   # refusals only, rate-limited
                if str(code)[:1] in "45":
                    api.note_refusal(self.address_string(), f"{self.requestline[:200]!r} {code}")

            def log_error(self, fmt, *args):
                api.note_refusal(self.address_string(), fmt % args)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.address = self.server.server_address

    def start(self) -> None:
        threading.Thread(target=self.server.serve_forever, daemon=True, name="http").start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str) -> tuple[int, dict | Response]:
        """(HTTP status, document) for a GET of `path`."""
        path = unquote(path)
        fn, rest = self.routes.get(path), None
        if fn is None:
            for prefix, prefix_fn in self.routes.items():
                if prefix.endswith("/") and prefix != "/" and path.startswith(prefix) and \
                        "/" not in path[len(prefix):] and path[len(prefix):]:
                    fn, rest = prefix_fn, path[len(prefix):]
        if fn is None:
            return 404, {"ok": False, "error": f"no such path {path[:200]!r}"}
        try:
            return 200, fn() if rest is None else fn(rest)
        except CommandError as exc:
            return 404, {"ok": False, "error": str(exc)}
        except Exception as exc:                    # one bad answer must not stop serving
            log.exception("HTTP %s failed", path)
            return 500, {"ok": False, "error": f"internal error: {exc}"}

    def note_refusal(self, client: str, what: str) -> None:
        n = self.refused.due()
        if n is not None:
            log.warning("HTTP from %s: %s (%d refused so far)", client, what, n)
