"""HyDFS file names: which are allowed, and how they map to a safe on-disk name.

A HyDFS name is flat text chosen by users (`TrafficSigns_1000`, `app1_out`, `logs/task-3`).
Names come from the network, so they are checked before any use: no NUL or control
characters, not absolute, no `.` or `..` path segments, at most 255 bytes. On disk a name is
percent-encoded into a single path component (`/` becomes `%2F`), so no name, however
crafted, can leave the node's data directory.
"""

from __future__ import annotations

import functools
import urllib.parse

MAX_NAME_BYTES = 255
MAX_DISK_NAME = 240          # file systems allow 255 bytes per path component
DISK_PREFIX = "f-"           # so that no name (".tmp-x", ".hidden") clashes with our own


class BadName(ValueError):
    """A HyDFS name that is refused; the message says why."""


def check_name(name) -> str:
    """Return `name` if it is a valid HyDFS name, else raise BadName."""
    if not isinstance(name, str) or not name:
        raise BadName("a HyDFS name must be a non-empty string")
    return _checked(name)


@functools.lru_cache(maxsize=4096)     # a request checks its name several times over
def _checked(name: str) -> str:
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise BadName(f"HyDFS name longer than {MAX_NAME_BYTES} bytes")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise BadName(f"HyDFS name {name!r} contains a NUL or control character")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise BadName(f"HyDFS name {name!r} is an absolute path")
    if any(part in (".", "..") for part in name.replace("\\", "/").split("/")):
        raise BadName(f"HyDFS name {name!r} contains '.' or '..'")
    if len(_encode(name)) > MAX_DISK_NAME:
        raise BadName(f"HyDFS name {name[:40]!r}... is too long once encoded for disk")
    return name


def _encode(name: str) -> str:
    return DISK_PREFIX + urllib.parse.quote(name, safe="-_.")


def disk_name(name: str) -> str:
    """The single, safe path component that stores `name` (reversible)."""
    return _encode(check_name(name))


def name_from_disk(component: str) -> str:
    return urllib.parse.unquote(component[len(DISK_PREFIX):])


def is_disk_name(component: str) -> bool:
    return component.startswith(DISK_PREFIX)
