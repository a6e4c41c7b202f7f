"""A write streamed to the other replicas while it arrives (the coordinator's fan-out).

Storing a write and then forwarding it costs the time of both; forwarding each chunk as it
comes in lets the replicas receive and write at the same time as the coordinator. `Fanout`
sends every replica the request header, `tee(chunks)` passes the chunks through unchanged
after writing each to every replica still in the fan-out, and `finish()` ends the payloads
and collects each replica's reply.

A replica that fails at any point (cannot connect, stops reading, answers an error) drops
out and is recorded in `failed` with its reason and in `codes` with its error code
(`unreachable`, or the code it answered with); the others carry on, and the caller decides what a partial fan-out means
(a create rolls back; an append catches up replicas that answered `missing`). Leaving the `with` block closes every
connection still open: a replica cut off mid-payload sees a truncated payload and stores
nothing. A replica that answered OK keeps its connection for the next write (rpc.py).

A replica that was paused (SIGSTOP) takes the payload into its kernel buffers and never
answers; `finish` stops waiting for it once the group declares it failed (`alive`), rather
than for the whole reply timeout, so that the write's retry can go to the new replicas.
"""

from __future__ import annotations

import socket
import time

from cluster import wire
from cluster.errors import CodedError
from cluster.rpc import REPLY_TIMEOUT, Peers, RemoteError, Unreachable, check_reply

ALIVE_CHECK = 0.25      # how often a wait for a reply asks whether its replica still lives


class Fanout:
    """One payload of `length` bytes under `header`, streamed to each of `vms`."""

    def __init__(self, peers: Peers, vms: list[str], header: dict, length: int,
                 alive=lambda vm: True):
        self.alive = alive                      # is this replica still a live member?
        self.failed: dict[str, str] = {}        # vm -> why it dropped out
        self.codes: dict[str, str] = {}         # vm -> the error code of that
        self._peers = peers
        self._conns = {}
        self._writers = {}
        try:
            for vm in vms:
                try:
                    conn = self._conns[vm] = peers.take(vm)
                    self._writers[vm] = conn.bulk_writer(header, length)
                except Unreachable as exc:
                    self._drop(vm, exc)
                except OSError as exc:
                    self._drop(vm, Unreachable(f"node {vm}: {exc}"))
        except BaseException:
            self.__exit__()
            raise

    def tee(self, chunks):
        """Yield `chunks`, each written to every replica first."""
        for chunk in chunks:
            for vm, writer in list(self._writers.items()):
                try:
                    writer.write(chunk)
                except OSError as exc:
                    self._drop(vm, Unreachable(f"node {vm}: {exc}"))
            yield chunk

    def finish(self) -> dict[str, str]:
        """End every payload and wait for each replica's reply; the failed ones."""
        for vm, writer in list(self._writers.items()):
            try:
                writer.close()
                check_reply(self._reply(vm))
                self._writers.pop(vm)
                self._peers.give_back(vm, self._conns.pop(vm))     # for the next write
            except (RemoteError, Unreachable) as exc:
                self._drop(vm, exc)
            except (OSError, wire.ProtocolError) as exc:
                self._drop(vm, Unreachable(f"node {vm}: {exc or 'timed out'}"))
        return self.failed

    def _reply(self, vm: str) -> dict:
        """The replica's reply; Unreachable once it is declared failed while we wait."""
        conn = self._conns[vm]
        deadline = time.monotonic() + REPLY_TIMEOUT
        conn.sock.settimeout(ALIVE_CHECK)
        while True:
            try:
                return conn.recv()
            except socket.timeout:
                if not self.alive(vm):
                    raise Unreachable(f"node {vm}: declared failed before it answered") \
                        from None
                if time.monotonic() >= deadline:
                    raise

    def _drop(self, vm: str, exc: CodedError) -> None:
        self.failed[vm] = str(exc) or exc.code
        self.codes[vm] = exc.code
        self._writers.pop(vm, None)
        conn = self._conns.pop(vm, None)
        if conn is not None:
            conn.close()

    def __enter__(self) -> "Fanout":
        return self

    def __exit__(self, *exc) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
        self._writers.clear()
