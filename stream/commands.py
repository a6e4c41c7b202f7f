"""The RainStorm REPL command (INTERFACE.md, "RainStorm").

On the leader node it runs the job; on any other node it asks the leader to run it and
relays the leader's progress lines, so `ctl --vm 05 RainStorm ...` works as well.
"""

from __future__ import annotations

from cluster import ctl, wire
from cluster.commands import CommandError, CommandRegistry, Context, Result
from stream.leader import Leader

USAGE = ("RainStorm OP1 OP2 HYDFS_SRC HYDFS_DEST NUM_TASKS "
         "[--op1-args STR] [--op2-args STR] [--rate LINES_PER_S]")


def summary_text(doc: dict) -> str:
    return (f"job {doc['job']} done in {doc['seconds']:.2f} s: {doc['records_in']} lines read, "
            f"{doc['records_out']} rows into {doc['dest']}, {doc['dropped']} unparsable lines "
            f"dropped, {doc['errors']} operator errors, {doc['failures_recovered']} failures "
            f"recovered, {doc['lines_per_second']:,} lines/s"
            + (f" ({doc['not_printed']} output rows not printed here; all are in "
               f"{doc['dest']})" if doc.get("not_printed") else ""))


def register(registry: CommandRegistry, config, vm: str, leader: Leader | None) -> None:
    def rainstorm(ctx: Context, args: list) -> Result:
        doc = leader.run(ctx, args) if leader is not None else _via_leader(ctx, args, config)
        return Result(summary_text(doc), doc)

    registry.add("RainStorm", rainstorm, USAGE, "run a stream-processing job")


def _via_leader(ctx: Context, args: list, config) -> dict:
    reply = ctl.request(config.address(config.leader), wire.secret_key(config.secret),
                        ["RainStorm", *args], ctx.cwd, True, ctx.emit, timeout=30)
    if not reply.get("ok"):
        raise CommandError(reply.get("error", "the leader could not run the job"))
    return reply["doc"]
