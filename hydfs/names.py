"""HyDFS file names: which are allowed, and how they map to a safe on-disk name.

A HyDFS name is flat text chosen by users (`TrafficSigns_1000`, `app1_out`, `logs/task-3`).
Names come from the network, so they are checked before any use: no NUL or control
characters, not absolute, no `.` or `..` path segments, at most 255 bytes. On disk a name is
percent-encoded into a single path component (`/` becomes `%2F`), so no name, however
crafted, can leave the node's data directory.
"""

from __future__ import annotations

import urllib.parse

MAX_NAME_BYTES = 255


class BadName(ValueError):
    """A HyDFS name that is refused; the message says why."""


def check_name(name) -> str:
    """Return `name` if it is a valid HyDFS name, else raise BadName."""
    if not isinstance(name, str) or not name:
        raise BadName("a HyDFS name must be a non-empty string")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise BadName(f"HyDFS name longer than {MAX_NAME_BYTES} bytes")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise BadName(f"HyDFS name {name!r} contains a NUL or control character")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise BadName(f"HyDFS name {name!r} is an absolute path")
    if any(part in (".", "..") for part in name.replace("\\", "/").split("/")):
        raise BadName(f"HyDFS name {name!r} contains '.' or '..'")
    return name


def disk_name(name: str) -> str:
    """The single, safe path component that stores `name` (reversible)."""
    return urllib.parse.quote(check_name(name), safe="-_")


def name_from_disk(component: str) -> str:
    return urllib.parse.unquote(component)
