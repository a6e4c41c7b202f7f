"""The RainStorm REPL commands (INTERFACE.md, "RainStorm", "Continuous jobs and job
control", "Leader failover"): `RainStorm`, `jobs`, `job JOBID`, `stop JOBID`, `leader`.

On the leader node they run there; on any other node they are relayed to the leader (its
progress lines too), so `ctl --vm 05 stop JOBID` works as well. When the leader fails on
the way, the command waits for its successor (leadership.py) and asks it: a waiting
`RainStorm` then gets its summary from the new leader. `leader` prints who leads.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import replace

from cluster import ctl, wire
from cluster.commands import CommandError, CommandRegistry, Context, Result, UsageError
from cluster.connection import Connection
from stream.job_spec import USAGE
from stream.messages import NOT_LEADER

log = logging.getLogger("stream")

FAILOVER_SLACK = 5.0     # seconds past failure detection a new leader may take to take over
RETRY_PAUSE = 1.0        # at most, waiting to hear of another leader
COMING_PAUSE = 0.1       # before asking a leader that is still taking over again
MAX_FAILOVERS = 5        # leaders one command outlives


def summary_text(doc: dict) -> str:
    if "seconds" not in doc:                         # --detach, or a record without summary
        return (f"job {doc['job']} {doc['state']}: see it with 'job {doc['job']}', end it "
                f"with 'stop {doc['job']}'")
    return (f"job {doc['job']} {doc.get('state', 'done')} after {doc['seconds']:.2f} s: "
            f"{doc['records_in']} lines read, "
            f"{doc['records_out']} rows into {doc['dest']}, {doc['dropped']} unparsable lines "
            f"dropped, {doc['errors']} operator errors"
            + (f" (the first {doc['first_error']})" if doc.get("first_error") else "")
            + f", {doc['failures_recovered']} failures "
            f"recovered, {doc['lines_per_second']:,} lines/s"
            + (f" ({doc['not_printed']} output rows not printed here; all are in "
               f"{doc['dest']})" if doc.get("not_printed") else "")
            + (f"; {doc['error']}" if doc.get("error") else ""))


def jobs_text(doc: dict) -> str:
    if not doc["jobs"]:
        return "no jobs"
    rows = [("JOB", "STATE", "OP1", "OP2", "SRC", "DEST", "TASKS", "IN", "OUT")]
    rows += [(j["job"], j["state"], j["op1"], j["op2"], j["src"] + (" (follow)" if j.get(
        "follow") else ""), j["dest"], str(j["num_tasks"]), str(j["records_in"]),
        str(j["records_out"])) for j in doc["jobs"]]
    return _table(rows)


def job_text(doc: dict) -> str:
    if "seconds" not in doc:
        return f"job {doc['job']} {doc.get('state')}"
    rows = [("TASK", "VM", "STATE", "IN", "OUT", "IN FLIGHT")]
    rows += [(t["task"], t["vm"] or "-", t["state"], str(t["records_in"]),
              str(t["records_out"]), _flight(t)) for t in doc.get("tasks", [])]
    return summary_text(doc) + ("\n" + _table(rows) if doc.get("tasks") else "")


def register(registry: CommandRegistry, config, leadership, leader, detection: float) -> None:
    failover = detection + FAILOVER_SLACK

    def on_leader(ctx: Context, argv: list, here) -> dict:
        """Run the command here if this node leads, else at the leader, across a failover
        (the retry rules are `_at_leader`'s)."""
        return _at_leader(ctx, argv, here, config, leadership, failover)

    def rainstorm(ctx: Context, args: list) -> Result:
        doc = on_leader(ctx, ["RainStorm", *args], lambda c: leader.run(c, args))
        return Result(summary_text(doc), doc)

    def jobs(ctx: Context, args: list) -> Result:
        if args:
            raise UsageError("usage: jobs")
        doc = on_leader(ctx, ["jobs"], lambda c: leader.jobs_doc())
        return Result(jobs_text(doc), doc)

    def job(ctx: Context, args: list) -> Result:
        wait = "--wait" in args
        job_id = _one_job_id([a for a in args if a != "--wait"], "job JOBID [--wait]")
        doc = on_leader(ctx, ["job", job_id] + (["--wait"] if wait else []),
                        lambda c: leader.wait(c, job_id) if wait else leader.job_doc(job_id))
        return Result(summary_text(doc) if wait else job_text(doc), doc)

    def stop(ctx: Context, args: list) -> Result:
        job_id = _one_job_id(args, "stop JOBID")
        doc = on_leader(ctx, ["stop", job_id], lambda c: leader.stop(c, job_id))
        return Result(summary_text(doc), doc)

    def leader_command(ctx: Context, args: list) -> Result:
        if args:
            raise UsageError("usage: leader")
        doc = leadership.describe()
        text = f"vm{doc['leader']} leads (leader epoch {doc['epoch']})"
        if not doc["live"]:
            text = f"vm{doc['leader']} led (leader epoch {doc['epoch']}) but is not live: " \
                   f"a successor is taking over"
        return Result(text, doc)

    registry.add("RainStorm", rainstorm, USAGE, "run a stream-processing job")
    registry.add("jobs", jobs, "jobs", "every job the leader knows, newest first")
    registry.add("job", job, "job JOBID [--wait]",
                 "one job's status and its tasks (--wait: follow it to its end)")
    registry.add("stop", stop, "stop JOBID", "end a job gracefully (what was read is processed)")
    registry.add("leader", leader_command, "leader", "the current RainStorm leader")


class _LeaderLost(Exception):
    """The leader could not be reached, or it no longer leads: `started` says whether the
    command may have run there."""

    def __init__(self, why: str, started: bool, coming: bool = False):
        super().__init__(why)
        self.started = started
        self.coming = coming     # the node named leader is still taking over: ask again soon


def _at_leader(ctx: Context, argv: list, here, config, leadership, failover: float) -> dict:
    """Run `here(ctx)` if this node leads, else relay `argv` to the leader; if the leader is
    lost, wait (at most `failover` s after it was lost) for the next one and ask it again.
    A `RainStorm` is asked again under the same request id, which is its job's id, so that
    it starts one job whichever leader gets it, and how often: a leader that has the job
    already follows it to its end (`--detach`: says that it runs)."""
    if argv[0] == "RainStorm" and not ctx.request:
        ctx = replace(ctx, request=uuid.uuid4().hex[:12])
    deadline = None                    # set when the leader is lost
    losses = 0
    while True:
        claim = leadership.current()
        tried_at = time.monotonic()
        try:
            if leadership.is_leader():
                return _here(ctx, here)
            target = claim.vm if claim else config.leader
            if leadership.leading is not None or target == leadership.vm:
                raise _LeaderLost("this node is taking over" if claim else
                                  "no leader yet (the cluster is forming)", started=False,
                                  coming=True)
            return _relay(ctx, argv, config, target)
        except _LeaderLost as lost:
            worked = lost.started and time.monotonic() - tried_at > failover
            if deadline is None or (worked and losses < MAX_FAILOVERS):
                deadline = time.monotonic() + failover      # a leader lost (again)
                losses += 1
                ctx.emit(f"{lost}: waiting for the next leader (at most {failover:g} s)")
            if time.monotonic() >= deadline:
                raise CommandError(f"{lost}; no leader took over within {failover:g} s") \
                    from None
            log.info("%s: %s; asking again", " ".join(argv[:3]), lost)
            if lost.coming:
                time.sleep(COMING_PAUSE)
            else:
                leadership.wait_for_other(claim, min(RETRY_PAUSE, deadline - time.monotonic()))


def _here(ctx: Context, here) -> dict:
    try:
        return here(ctx)
    except CommandError as exc:
        if exc.code == NOT_LEADER:
            raise _LeaderLost(str(exc), started=True) from None
        raise


def _relay(ctx: Context, argv: list, config, vm: str) -> dict:
    """`argv` at node `vm`, its progress lines and notes passed on."""
    address = config.address(vm)
    try:
        conn = Connection.open(address, wire.secret_key(config.secret), ctl.CONNECT_TIMEOUT)
    except OSError as exc:
        raise _LeaderLost(f"the leader vm{vm} is unreachable: {exc}", started=False) from None
    try:
        with conn:
            reply = ctl.converse(conn, argv, ctx.cwd, True, ctx.emit, ctl.REPLY_TIMEOUT,
                                 ctx.note, ctx.request)
    except (OSError, wire.ProtocolError) as exc:
        raise _LeaderLost(f"the leader vm{vm} stopped answering: {exc or 'timed out'}",
                          started=True) from None
    if not reply.get("ok"):
        error = reply.get("error", "the leader could not do it")
        if reply.get("code") == NOT_LEADER:
            raise _LeaderLost(error, started=False, coming=True)   # taking over, or deposed
        raise UsageError(error) if reply.get("usage") else CommandError(error, reply.get("code"))
    return reply["doc"]


def _one_job_id(args: list, usage: str) -> str:
    if len(args) != 1 or not args[0] or args[0].startswith("--"):
        raise UsageError(f"usage: {usage}")
    return args[0]


def _flight(task: dict) -> str:
    if "in_flight" not in task:
        return ""
    return f"{task['in_flight'] / (1 << 20):.1f}/{(task.get('window') or 0) / (1 << 20):g} MiB"


def _table(rows: list) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in rows)
