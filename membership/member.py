"""A member of the group, and the precedence rule between reports about it.

A member is identified by its id, ``"<vm>@<host:port>@<start_ms>"``: the node name, its
address and the wall-clock millisecond its process joined. A restarted node therefore joins
as a new member; reports about the old id never touch it.

Every report about a member is a `MemberState` (status and incarnation). Which of two reports
wins is decided by `supersedes` alone (SWIM, Das et al. 2002, section 4.2; the seed's
"Ping-Ack+S"), so the rule lives in one function and is tested as a table:

- failed and left are final for an id: nothing overrides them, and they override anything;
- alive(i) overrides alive(j) and suspect(j) when i > j: only the member itself raises its
  incarnation, which is how a live node refutes a suspicion;
- suspect(i) overrides alive(j) when i >= j, and suspect(j) when i > j.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

ALIVE = "alive"
SUSPECT = "suspect"
FAILED = "failed"
LEFT = "left"
STATUSES = (ALIVE, SUSPECT, FAILED, LEFT)
FINAL = (FAILED, LEFT)


def make_member_id(vm: str, address: str, start_ms: int) -> str:
    return f"{vm}@{address}@{start_ms}"


def vm_of(member_id: str) -> str:
    return member_id.split("@", 1)[0]


@dataclass(frozen=True)
class MemberState:
    id: str
    address: str         # "host:port" of its UDP and TCP endpoint
    status: str
    incarnation: int = 0

    @property
    def vm(self) -> str:
        return vm_of(self.id)

    @property
    def is_live(self) -> bool:
        """Alive or suspect: still in the membership list."""
        return self.status in (ALIVE, SUSPECT)

    def with_status(self, status: str, incarnation: int | None = None) -> "MemberState":
        inc = self.incarnation if incarnation is None else incarnation
        return replace(self, status=status, incarnation=inc)

    def to_wire(self) -> dict:
        return {"id": self.id, "addr": self.address, "st": self.status, "inc": self.incarnation}

    @classmethod
    def from_wire(cls, data: dict) -> "MemberState":
        """Parse a member record; raises ValueError on anything malformed."""
        if not isinstance(data, dict):
            raise ValueError("member record is not an object")
        mid, addr, st, inc = data.get("id"), data.get("addr"), data.get("st"), data.get("inc")
        if not isinstance(mid, str) or mid.count("@") != 2:
            raise ValueError(f"bad member id {mid!r}")
        if not valid_address(addr):
            raise ValueError(f"bad member address {addr!r}")
        if st not in STATUSES:
            raise ValueError(f"bad member status {st!r}")
        if not isinstance(inc, int) or isinstance(inc, bool) or inc < 0:
            raise ValueError(f"bad incarnation {inc!r}")
        return cls(mid, addr, st, inc)


def valid_address(addr) -> bool:
    """host:port with a non-empty host and a port in 1..65535."""
    if not isinstance(addr, str) or len(addr) > 300:
        return False
    host, sep, port = addr.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


def supersedes(new: MemberState, old: MemberState | None) -> bool:
    """True when report `new` about a member replaces what we hold (`old`, None if nothing)."""
    if old is None:
        return True
    if old.status in FINAL:
        return False
    if new.status in FINAL:
        return True
    if new.status == ALIVE:
        return new.incarnation > old.incarnation
    # new is a suspicion
    if old.status == ALIVE:
        return new.incarnation >= old.incarnation
    return new.incarnation > old.incarnation
