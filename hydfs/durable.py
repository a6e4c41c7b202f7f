"""Making a change to the replica store survive a crash or a power cut.

A file's bytes are durable once the file is fsync'd; a new name in a directory (a created or
renamed entry) only once the directory is fsync'd as well. A small document such as
meta.json is replaced atomically: written under a temporary name, fsync'd, renamed over the
old one (a rename is atomic on POSIX) and its directory fsync'd, so after a crash a reader
finds the old document or the new one, whole, never a mixture.
"""

from __future__ import annotations

import json
import os


def write_json(path: str, doc: dict) -> None:
    """Replace the JSON document at `path` by `doc`, durably and atomically."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path))


def fsync_dir(path: str) -> None:
    """Make the entries of the directory `path` (new names, renames) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
