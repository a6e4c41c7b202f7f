"""A source task's direct read of its own node's copy of HYDFS_SRC, past the node.

A source reads its partition, a range of the job's snapshot of SRC (a HyDFS view). Through
its node, every byte is read by the node, checked, sent to the task and received again: at
1M lines, about a third of the cluster's CPU. When the node holds the view wholly in its
base file (the leader puts sources on SRC's replicas), the node says where instead
(`hydfs.client.HydfsClient.local_base_view`), and the task reads the base itself: the same
checked reader as the node's (hydfs/checked_read.py), every 1 MiB block against its CRC.

Why the bytes are the ones the node would have sent: below the snapshot's base size a base
file never changes while it keeps its inode (a merge in place appends; one that reorders
writes a new file). So the file is opened, its inode compared with the node's, and each
block checked: a replaced or corrupt base raises `Unusable`, and the task reads through its
node from then on (which picks another replica if this copy is bad).
"""

from __future__ import annotations

import os

from hydfs.checked_read import BLOCK, CheckedBlocks, CorruptReplica, as_bytes


class Unusable(Exception):
    """The node's copy cannot be read directly (any more): read through the node."""


class LocalView:
    def __init__(self, where: dict):
        try:
            self._file = open(where["path"], "rb")
        except OSError as exc:
            raise Unusable(f"cannot open {where['path']}: {exc}") from None
        if os.fstat(self._file.fileno()).st_ino != where["inode"]:
            self._file.close()
            raise Unusable(f"{where['path']} was replaced")
        self.size = int(where["size"])
        self._parts = [(int(lo), int(size)) for lo, size in where["parts"]]
        self._blocks = CheckedBlocks(self._file, 0, int(where["base_size"]),
                                     [int(c) for c in where["crcs"]])

    def read(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset + length) of the view, checked; Unusable if they fail."""
        out, pos, end = [], 0, offset + length
        try:
            for lo, size in self._parts:
                if pos >= end:
                    break
                if offset < pos + size:
                    a, b = max(offset - pos, 0), min(end - pos, size)
                    window = b - a + 2 * BLOCK       # one read: the range may straddle blocks
                    out += [as_bytes(s) for s in self._blocks.spans(lo + a, lo + b, window)]
                pos += size
        except (CorruptReplica, OSError) as exc:
            raise Unusable(str(exc)) from None
        data = out[0] if len(out) == 1 else b"".join(out)
        if len(data) != min(length, max(self.size - offset, 0)):
            raise Unusable(f"the view's range [{offset}, {end}) is short")
        return data

    def close(self) -> None:
        self._file.close()
