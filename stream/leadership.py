"""Leadership on one node: who the leader is, and claiming it when the rule says so.

Every node runs one `Leadership`. It keeps the highest claim it knows (read from the claim
file ``rainstorm/leader`` in HyDFS, or told by a leader's announcement, worker.py), and a
thread that re-evaluates the rule of succession.py whenever membership changes and every
CHECK_EVERY seconds:

- the rule names this node and the highest claim is someone else's: claim (below), then
  let the Leader take over every running job (leader.py, `take_over`);
- this node leads but a higher claim exists: it was deposed (it was paused or cut off while
  another took over): the Leader stops acting at once (`step_down`); the tasks go on under
  the new leader.

A claim, in the order that makes it safe:

1. read the claim file; the new epoch is `next_epoch` after the highest claim in it;
2. fence the claim file at that epoch for the writer key ``leader``: from then on no
   append of a lower epoch lands there;
3. append the claim under that epoch; read the file again: the claim holds if it is the
   highest (a rival with a higher epoch wins, whatever the order of the two).

A node that has just (re)joined the group claims only after `settle` seconds (by then the
member list of the group has reached it), unless no claim exists at all (a new cluster).
"""

from __future__ import annotations

import json
import logging
import threading
import time

from hydfs.client import HydfsClient, HydfsError
from hydfs.fences import writer_client
from hydfs.messages import FENCED, FILE_EXISTS, NO_SUCH_FILE
from stream.job_record import WRITER_KEY
from stream.succession import Claim, highest, next_epoch, should_claim, succession

log = logging.getLogger("stream")

CLAIMS = "rainstorm/leader"
CHECK_EVERY = 2.0               # seconds between looks at the claim file


def parse_claims(data: bytes) -> list[Claim]:
    claims = []
    for line in data.split(b"\n"):
        try:
            claim = Claim.from_wire(json.loads(line)) if line.strip() else None
        except ValueError:
            claim = None                # a torn last line
        if claim is not None:
            claims.append(claim)
    return claims


class Leadership:
    def __init__(self, config, vm: str, membership, client: HydfsClient, settle: float):
        self.vm = vm
        self.config = config
        self.membership = membership
        self.client = client
        self.settle = settle
        self.order = succession(sorted(config.nodes), config.leader)
        self.leader = None                 # the Leader, once wired (node.py)
        self.leading: int | None = None    # the epoch this node leads at, while it does
        self._known: Claim | None = None   # the highest claim heard of
        self._tried = 0                    # the highest epoch this node claimed at, ever
        self._unreadable = 0               # failed reads of the claims (for the log)
        self._joined_at = time.monotonic()
        self._changed = threading.Condition()
        self._wake = threading.Event()
        self._stop = threading.Event()

    # -- what others ask ----------------------------------------------------------------

    def current(self) -> Claim | None:
        """The highest claim this node knows of (None: none yet)."""
        with self._changed:
            return self._known

    def leader_vm(self) -> str:
        claim = self.current()
        return claim.vm if claim is not None else self.config.leader

    def is_leader(self) -> bool:
        """Does this node lead, with every running job taken over?"""
        return self.leading is not None and self.leader is not None and self.leader.active

    def describe(self) -> dict:
        """`leader`: who leads as far as this node knows, and whether it is live."""
        claim = self.current()
        vm = claim.vm if claim else self.config.leader
        live = vm in {member.vm for member in self.membership.members()}
        return {"leader": vm, "epoch": claim.epoch if claim else 0, "live": live}

    def learn(self, claim: Claim | None) -> bool:
        """A claim heard of (an announcement, the claim file); True if it is news. A higher
        claim than the one this node leads at deposes it."""
        with self._changed:
            news = claim is not None and (self._known is None or claim > self._known)
            if news:
                self._known = claim
                self._changed.notify_all()
        if news:
            log.info("LEADER vm%s leads at epoch %d", claim.vm, claim.epoch)
        self._depose_if_outranked()
        return news

    def leads_at(self, epoch: int) -> bool:
        with self._changed:
            return self.leading == epoch

    def wait_for_other(self, than: Claim | None, timeout: float) -> Claim | None:
        """Wait until a claim other than `than` is known (a failover); the newest one."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._known == than:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return self._known

    # -- the thread -------------------------------------------------------------------------

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True, name="leadership").start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def check_soon(self) -> None:
        """Look at the claims now (a write of ours was fenced: we may be deposed)."""
        self._wake.set()

    def on_membership(self, events) -> None:
        """Called under membership's lock: only wake the thread."""
        if any(e.kind in ("joined", "self_failed") for e in events):
            self._joined_at = time.monotonic()     # our member list is being rebuilt
        if any(e.kind in ("fail", "leave", "join", "joined", "self_failed") for e in events):
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._evaluate()
            except Exception:
                log.exception("leadership check failed (continuing)")
            self._wake.wait(CHECK_EVERY)
            self._wake.clear()

    def _evaluate(self) -> None:
        if not self.membership.is_joined():
            return
        found = self._read_claims()
        if found is not False:
            self.learn(highest(found))     # deposes this node if it is outranked
        live = {member.vm for member in self.membership.members()}
        known = self.current()
        if found is False or not should_claim(self.vm, self.order, live, known,
                                              self.leading is not None):
            return
        if known is not None and time.monotonic() - self._joined_at < self.settle:
            return                       # our member list may not be complete yet
        self._claim(known, exists=bool(found))

    def _read_claims(self):
        """Every claim in the file; [] if there is none; False if it cannot be read."""
        try:
            return parse_claims(self.client.read_bytes(CLAIMS))
        except HydfsError as exc:
            if exc.code == NO_SUCH_FILE:
                return []
            self._unreadable += 1
            if self._unreadable in (1, 10) or self._unreadable % 100 == 0:   # rate-limited
                log.warning("LEADER claims unreadable (%d times so far): %s",
                            self._unreadable, exc)
            return False

    def _claim(self, known: Claim | None, exists: bool) -> None:
        """Claim at an epoch above every claim seen and every epoch tried before (a try
        that failed may have left its fence behind), then take the jobs over."""
        epoch = next_epoch(max(known.epoch if known else 0, self._tried), self.order, self.vm)
        self._tried = epoch
        log.info("LEADER vm%s claims leadership at epoch %d (was %s)", self.vm, epoch,
                 f"vm{known.vm} at {known.epoch}" if known else "nobody")
        try:
            if not exists:
                try:
                    self.client.create_bytes(CLAIMS, b"")
                except HydfsError as exc:
                    if exc.code != FILE_EXISTS:
                        raise
            self.client.fence(CLAIMS, WRITER_KEY, epoch)
            line = json.dumps(Claim(epoch, self.vm).to_wire()).encode() + b"\n"
            landed = self.client.append_bytes(CLAIMS, line, (writer_client(WRITER_KEY, epoch), 1))
            found = self._read_claims()
        except HydfsError as exc:
            level = logging.INFO if known is None else logging.WARNING  # a group forming
            log.log(level, "LEADER claim at epoch %d failed: %s", epoch, exc
                    if exc.code != FENCED else "a higher epoch fenced the claims")
            return
        ours = Claim(epoch, self.vm)
        if not landed.get("new", True) or found is False or highest(found) != ours:
            self.learn(highest(found or []))
            return              # outranked, or an append id of an earlier life: not ours
        with self._changed:
            if self._known is not None and self._known > ours:
                return          # a higher claim was announced meanwhile
            self.leading = epoch
        self.learn(ours)
        started = time.monotonic()
        try:
            self.leader.take_over(epoch)
        except Exception as exc:     # a higher leader fenced a record: it leads, not we
            log.warning("LEADER take-over at epoch %d failed: %s", epoch, exc)
            self._let_go(None)
            return
        log.info("LEADER vm%s took over at epoch %d in %.3f s", self.vm, epoch,
                 time.monotonic() - started)

    def _depose_if_outranked(self) -> None:
        with self._changed:
            known, leading = self._known, self.leading
            if leading is None or known is None or known.epoch <= leading:
                return
        log.warning("LEADER vm%s deposed: vm%s leads at epoch %d", self.vm, known.vm,
                    known.epoch)
        self._let_go(known)

    def _let_go(self, successor: Claim | None) -> None:
        with self._changed:
            self.leading = None
        if self.leader is not None:
            self.leader.step_down(successor)
