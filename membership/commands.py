"""The membership REPL commands (INTERFACE.md, "REPL commands: Membership").

A member's document carries its ring id (INTERFACE.md's `--json` table), which is HyDFS's
notion: the node passes `ring_id(vm)` in, so membership knows nothing of the ring.
"""

from __future__ import annotations

from typing import Callable

from cluster.commands import CommandError, CommandRegistry, Context, Result, expect_args
from membership.member import MemberState
from membership.service import MembershipService


def member_doc(member: MemberState, ring_id: int) -> dict:
    return {"vm": member.vm, "id": member.id, "address": member.address,
            "status": member.status, "incarnation": member.incarnation, "ring_id": ring_id}


def members_table(docs: list[dict]) -> str:
    if not docs:
        return "(not in the group)"
    rows = [("VM", "ID", "ADDRESS", "STATUS", "INC", "RING_ID")]
    rows += [(d["vm"], d["id"], d["address"], d["status"], str(d["incarnation"]),
              str(d["ring_id"])) for d in docs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def register(registry: CommandRegistry, service: MembershipService,
             ring_id: Callable[[str], int]) -> None:
    def list_mem(ctx: Context, args: list) -> Result:
        expect_args(args, 0, "list_mem")
        members = [member_doc(m, ring_id(m.vm)) for m in service.members()]
        return Result(members_table(members), {"members": members})

    def list_self(ctx: Context, args: list) -> Result:
        expect_args(args, 0, "list_self")
        me = member_doc(service.me(), ring_id(service.me().vm))
        if not service.is_joined():
            me["status"] = "left"        # not in the group (left, or still joining)
        return Result(members_table([me]), me)

    def join(ctx: Context, args: list) -> Result:
        expect_args(args, 0, "join")
        if not service.join():
            raise CommandError("already in the group (or joining)")
        return Result(f"joining as {service.me().id}", {"ok": True, "id": service.me().id})

    def leave(ctx: Context, args: list) -> Result:
        expect_args(args, 0, "leave")
        if not service.leave():
            raise CommandError("not in the group")
        return Result("left the group", {"ok": True})

    def set_sus(on: bool):
        def run(ctx: Context, args: list) -> Result:
            expect_args(args, 0, "enable_sus" if on else "disable_sus")
            if not service.set_suspicion(on):
                raise CommandError("not in the group: join first")
            state = "on (Ping-Ack+S)" if on else "off (Ping-Ack)"
            return Result(f"suspicion {state} for the whole cluster", {"ok": True, "suspicion": on})
        return run

    def status_sus(ctx: Context, args: list) -> Result:
        expect_args(args, 0, "status_sus")
        on = service.suspicion_on()
        return Result("suspicion on (Ping-Ack+S)" if on else "suspicion off (Ping-Ack)",
                      {"suspicion": on})

    registry.add("list_mem", list_mem, "list_mem", "the membership list")
    registry.add("list_self", list_self, "list_self", "this node's own member entry")
    registry.add("join", join, "join", "join the group again after a leave")
    registry.add("leave", leave, "leave", "leave the group voluntarily")
    registry.add("enable_sus", set_sus(True), "enable_sus", "switch the cluster to Ping-Ack+S")
    registry.add("disable_sus", set_sus(False), "disable_sus", "switch the cluster to Ping-Ack")
    registry.add("status_sus", status_sus, "status_sus", "is suspicion on?")
