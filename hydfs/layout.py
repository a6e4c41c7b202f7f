"""The replica store on disk: one directory per file, its commit point, and what a restart does.

Under the store's root (``data_dir/vmNN/hydfs/``) each file held has a directory named by
its percent-encoded name (names.py), with:

- ``meta.json``: the replica's committed state (replica_state.py `FileState.meta`): the
  file's id (which create made it), the merge generation, the set of append ids merged into
  the base, the base file's name, size and block CRCs, the index file's name, row count and
  client ids. It is replaced only by write-temp, fsync, rename (durable.py): that rename is
  the commit point of every change except an append.
- ``base.<token>``: the content as of the last merge (base_file.py).
- ``index.<token>``: where each merged append lies in the base (merged_index.py).
- ``pending.<token>.log``: the appends since the last merge (pending_log.py). An append is
  committed by its own fsync.

Other entries of the root are work in progress, each named so that a restart knows what to
do with it (`load_all`):

- ``.tmp-*``: a new copy (a create or an install) being assembled; it is renamed into place
  whole, so a crash never leaves a half-created file. Left over, it never committed: removed.
- ``.old-*``: a copy moved aside by an install; put back if its replacement never arrived,
  else removed.
- ``.spool-*``: an append taken in before being written (spool.py); removed.
- ``.corrupt-*`` and ``.unloadable-*``: copies set aside (a failed checksum, or a directory
  that does not load) for a person to look at; re-replication restores the file meanwhile.

Loading a copy cuts off what a crash left past its committed state (a merge's bytes beyond
the base's committed size and rows beyond the index's count, a torn last append) and
deletes files of older generations.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import time
import uuid

from cluster.chunks import split
from hydfs import base_file, pending_log
from hydfs.checked_read import CorruptReplica
from hydfs.durable import fsync_dir, write_json
from hydfs.idset import IdSet
from hydfs.merged_index import MergedIndex
from hydfs.names import disk_name, is_disk_name, name_from_disk
from hydfs.replica_state import FileState

log = logging.getLogger("hydfs")

META = "meta.json"


def folder(root: str, name: str) -> str:
    """The directory that holds the copy of `name`."""
    return os.path.join(root, disk_name(name))


# -- replacing a copy ---------------------------------------------------------------------

def receive_copy(root: str, name: str, file_id: str, gen: int, merge_id: str, merged: IdSet,
                 chunks, size: int, create_size: int, index: dict | None) -> tuple[str, FileState]:
    """A new copy, written from `chunks` into a temporary directory, and its state: `size`
    bytes of base, then the rows of its index (`index`: their "count" and "clients"; None:
    none follow); ValueError unless exactly those came. The directory is removed on
    failure."""
    tmp = os.path.join(root, f".tmp-{uuid.uuid4().hex}")
    os.makedirs(tmp)
    index = index or {"count": 0, "clients": []}
    try:
        st = FileState(name, file_id, gen, merge_id, merged, base_file.new_name(),
                       0, [], pending_log.new_name(), create_size=create_size)
        base, rows = split(chunks, size)
        st.base_size, st.base_crcs = base_file.write_blocks(os.path.join(tmp, st.base_file),
                                                            base)
        if st.base_size != size:
            raise ValueError(f"expected {size} bytes, received {st.base_size}")
        st.index = MergedIndex.receive(tmp, int(index["count"]), list(index["clients"]),
                                       merged, rows, size, create_size)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp, st


def write_meta(directory: str, st: FileState) -> None:
    """Commit `st` as the state of the copy in `directory`."""
    write_json(os.path.join(directory, META), st.meta())


def commit_meta(root: str, st: FileState) -> None:
    """Commit `st` in place, then delete the files of older generations it no longer names."""
    directory = folder(root, st.name)
    write_meta(directory, st)
    for entry in os.listdir(directory):
        if entry not in (META, st.base_file, st.pending_file, st.index.file_name):
            os.unlink(os.path.join(directory, entry))


def swap_in(root: str, tmp: str, name: str, replace: bool) -> None:
    """Put the complete copy in `tmp` in place of the old one; a crash in between leaves one
    of the two intact (`load_all` puts back an old copy whose replacement never arrived)."""
    final, old = folder(root, name), None
    if replace and os.path.exists(final):
        old = os.path.join(root, f".old-{uuid.uuid4().hex}")
        os.rename(final, old)
    os.rename(tmp, final)
    fsync_dir(root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def discard(root: str, name: str, set_aside: bool) -> None:
    """Delete the copy of `name`, or with `set_aside` keep it under a ``.corrupt-`` name."""
    directory = folder(root, name)
    if set_aside:
        os.rename(directory, os.path.join(root, f".corrupt-{int(time.time())}-{uuid.uuid4().hex}"))
    else:
        shutil.rmtree(directory, ignore_errors=True)


# -- loading after a restart --------------------------------------------------------------

def load_all(root: str) -> dict[str, FileState]:
    """Clear up what a crash left half done, then load every copy (committing each as it
    loads); a copy that fails to load is set aside."""
    for entry in os.listdir(root):
        path = os.path.join(root, entry)
        if entry.startswith(".tmp-"):
            shutil.rmtree(path, ignore_errors=True)   # an install that never committed
        elif entry.startswith(".spool-"):
            os.unlink(path)                           # an append that never got written
        elif entry.startswith(".old-"):
            _recover_old(root, path)
    files = {}
    for entry in os.listdir(root):
        path = os.path.join(root, entry)
        if is_disk_name(entry) and os.path.isdir(path):
            try:
                st = _load(path)
            except (OSError, ValueError, KeyError, TypeError, OverflowError, IndexError,
                    struct.error, CorruptReplica) as exc:
                # Kept aside, not deleted: re-replication restores the file, and a
                # person can still look at what failed to load.
                log.error("CORRUPT copy %s could not be loaded (%s); set aside", entry, exc)
                os.rename(path, os.path.join(root, f".unloadable-{uuid.uuid4().hex}"))
                continue
            files[st.name] = st
            commit_meta(root, st)
    return files


def _recover_old(root: str, old: str) -> None:
    """A copy moved aside by an install: drop it if its replacement is in place, else
    put it back (the crash came between the two renames)."""
    try:
        with open(os.path.join(old, META), encoding="utf-8") as f:
            final = folder(root, json.load(f)["name"])
    except (OSError, ValueError, KeyError):
        shutil.rmtree(old, ignore_errors=True)
        return
    if os.path.exists(final):
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(old, final)


def _load(directory: str) -> FileState:
    with open(os.path.join(directory, META), encoding="utf-8") as f:
        meta = json.load(f)
    st = FileState.from_meta(meta, MergedIndex.load(directory, meta))
    if name_from_disk(os.path.basename(directory)) != st.name:
        raise ValueError("meta.json names another file")
    if st.base_size:
        with open(os.path.join(directory, st.base_file), "r+b") as base:
            base.truncate(st.base_size)    # cut a crashed merge's leftovers
    st.pending, st.pending_size = pending_log.scan(os.path.join(directory, st.pending_file))
    st.pending_ids = IdSet.of(r.id for r in st.pending)
    return st
