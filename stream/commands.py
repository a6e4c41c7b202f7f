"""The RainStorm REPL commands (INTERFACE.md, "RainStorm" and "Continuous jobs and job
control"): `RainStorm`, `jobs`, `job JOBID`, `stop JOBID`.

On the leader node they run there; on any other node they are relayed to the leader (its
progress lines too), so `ctl --vm 05 stop JOBID` works as well.
"""

from __future__ import annotations

from cluster import ctl, wire
from cluster.commands import CommandError, CommandRegistry, Context, Result, UsageError
from stream.job_spec import USAGE
from stream.leader import Leader


def summary_text(doc: dict) -> str:
    if "seconds" not in doc:                         # --detach, or a record without summary
        return (f"job {doc['job']} {doc['state']}: see it with 'job {doc['job']}', end it "
                f"with 'stop {doc['job']}'")
    return (f"job {doc['job']} {doc.get('state', 'done')} after {doc['seconds']:.2f} s: "
            f"{doc['records_in']} lines read, "
            f"{doc['records_out']} rows into {doc['dest']}, {doc['dropped']} unparsable lines "
            f"dropped, {doc['errors']} operator errors, {doc['failures_recovered']} failures "
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


def register(registry: CommandRegistry, config, vm: str, leader: Leader | None) -> None:
    def on_leader(ctx: Context, argv: list, here) -> dict:
        return here() if leader is not None else _via_leader(ctx, argv, config)

    def rainstorm(ctx: Context, args: list) -> Result:
        doc = on_leader(ctx, ["RainStorm", *args], lambda: leader.run(ctx, args))
        return Result(summary_text(doc), doc)

    def jobs(ctx: Context, args: list) -> Result:
        if args:
            raise UsageError("usage: jobs")
        doc = on_leader(ctx, ["jobs"], leader.jobs_doc if leader else None)
        return Result(jobs_text(doc), doc)

    def job(ctx: Context, args: list) -> Result:
        job_id = _one_job_id(args, "job JOBID")
        doc = on_leader(ctx, ["job", job_id], lambda: leader.job_doc(job_id))
        return Result(job_text(doc), doc)

    def stop(ctx: Context, args: list) -> Result:
        job_id = _one_job_id(args, "stop JOBID")
        doc = on_leader(ctx, ["stop", job_id], lambda: leader.stop(ctx, job_id))
        return Result(summary_text(doc), doc)

    registry.add("RainStorm", rainstorm, USAGE, "run a stream-processing job")
    registry.add("jobs", jobs, "jobs", "every job the leader knows, newest first")
    registry.add("job", job, "job JOBID", "one job's status and its tasks")
    registry.add("stop", stop, "stop JOBID", "end a job gracefully (what was read is processed)")


def _one_job_id(args: list, usage: str) -> str:
    if len(args) != 1 or not args[0]:
        raise UsageError(f"usage: {usage}")
    return args[0]


def _via_leader(ctx: Context, argv: list, config) -> dict:
    try:
        reply = ctl.request(config.address(config.leader), wire.secret_key(config.secret),
                            argv, ctx.cwd, True, ctx.emit, timeout=30)
    except (OSError, wire.ProtocolError) as exc:
        raise CommandError(f"the leader vm{config.leader} is unreachable: {exc}") from None
    if not reply.get("ok"):
        error = reply.get("error", "the leader could not do it")
        raise UsageError(error) if reply.get("usage") else CommandError(error)
    return reply["doc"]


def _flight(task: dict) -> str:
    if "in_flight" not in task:
        return ""
    return f"{task['in_flight'] / (1 << 20):.1f}/{(task.get('window') or 0) / (1 << 20):g} MiB"


def _table(rows: list) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in rows)
