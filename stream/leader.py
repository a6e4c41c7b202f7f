"""The RainStorm leader: runs a job from start to summary, through worker failures.

`RainStorm OP1 OP2 SRC DEST NUM_TASKS [--op1-args S] [--op2-args S]` on the leader node:

1. check everything a user can get wrong (operators, SRC, DEST, NUM_TASKS) before starting;
2. create DEST and one empty log per task; cut SRC into NUM_TASKS line-aligned partitions;
3. place the 3 x NUM_TASKS tasks on the live workers (scheduler.py), start them, and send
   every task the schedule (who runs where);
4. watch: print progress and a rate-limited sample of the output; when a worker fails (the
   membership service says so) or a task process dies, start its tasks elsewhere and send
   the new schedule, so upstream tasks resend to the replacements (task.py);
5. when every source's blocks are acked end to end, stop the tasks and print the summary.
"""

from __future__ import annotations

import logging
import queue
import time
from concurrent.futures import ThreadPoolExecutor
import uuid
from dataclasses import dataclass, field

from cluster.commands import CommandError, Context, UsageError
from cluster.messages import OK
from cluster.rpc import Peers, RemoteError, Unreachable
from hydfs.client import HydfsClient, HydfsError, checked_name
from stream import messages as m
from stream import task_log
from stream.operators import AGGREGATE, OperatorError, load_operator
from stream.scheduler import TaskId, assign, reassign, workers_for
from stream.source_plan import block_bytes_for, plan_partitions

log = logging.getLogger("stream")

PROGRESS_EVERY = 1.0
PRINT_ROWS_PER_SECOND = 10
MAX_TASK_RESTARTS = 3          # a task that keeps dying (a broken operator) fails the job


@dataclass
class JobSpec:
    op1: str
    op2: str
    src: str
    dest: str
    num_tasks: int
    op1_args: str = ""
    op2_args: str = ""
    source_rate: float = 0.0     # --rate: lines per second in all, 0 = as fast as possible


@dataclass
class Job:
    id: str
    spec: JobSpec
    schedule: dict = field(default_factory=dict)      # TaskId -> vm
    addresses: dict = field(default_factory=dict)     # TaskId -> "host:port"
    stats: dict = field(default_factory=dict)         # TaskId -> latest stats
    sources_done: set = field(default_factory=set)
    events: queue.Queue = field(default_factory=queue.Queue)
    size: int = 0                                     # bytes of SRC
    task_specs: dict = field(default_factory=dict)    # TaskId -> spec sent to its worker
    started: float = field(default_factory=time.monotonic)
    failures_recovered: int = 0
    restarts: dict = field(default_factory=dict)      # TaskId -> times its process died
    avoid: set = field(default_factory=set)           # workers that failed to start a task
    printed: int = 0
    skipped: int = 0


def parse_job(args: list[str]) -> JobSpec:
    usage = ("usage: RainStorm OP1 OP2 HYDFS_SRC HYDFS_DEST NUM_TASKS "
             "[--op1-args STR] [--op2-args STR] [--rate LINES_PER_S]")
    positional, options = [], {"--op1-args": "", "--op2-args": "", "--rate": "0"}
    it = iter(args)
    for arg in it:
        if arg in options:
            options[arg] = next(it, None)
            if options[arg] is None:
                raise UsageError(f"{arg} needs a value; {usage}")
        else:
            positional.append(arg)
    if len(positional) != 5:
        raise UsageError(usage)
    op1, op2, src, dest, num = positional
    if not num.isdigit() or int(num) < 1:
        raise UsageError(f"NUM_TASKS must be a whole number of at least 1, not {num!r}")
    try:
        rate = float(options["--rate"])
    except ValueError:
        rate = -1
    if not rate >= 0 or rate == float("inf"):
        raise UsageError(f"--rate must be a number of lines per second, not {options['--rate']!r}")
    return JobSpec(op1, op2, src, dest, int(num), options["--op1-args"], options["--op2-args"],
                   rate)


class Leader:
    def __init__(self, config, vm: str, membership, client: HydfsClient):
        self.config = config
        self.vm = vm
        self.membership = membership
        self.client = client
        self.peers = Peers(config)
        self.jobs: dict[str, Job] = {}

    def routes(self) -> dict:
        return {m.REPORT: self.handle_report, m.TASK_EXIT: self.handle_task_exit}

    # -- messages from tasks and workers ----------------------------------------------------

    def handle_report(self, conn, msg: dict) -> None:
        job = self.jobs.get(msg.get("job"))
        if job is not None:
            job.events.put(("report", msg))
        conn.send({"t": OK})

    def handle_task_exit(self, conn, msg: dict) -> None:
        job = self.jobs.get(msg.get("job"))
        if job is not None:
            job.events.put(("exit", msg))
        conn.send({"t": OK})

    def on_membership(self, events) -> None:
        gone = {e.member.vm for e in events if e.kind in ("fail", "leave") and e.member}
        if gone:
            for job in list(self.jobs.values()):
                job.events.put(("failed", gone))

    # -- running a job ----------------------------------------------------------------------

    def run(self, ctx: Context, args: list[str]) -> dict:
        spec = parse_job(args)
        started = time.monotonic()
        op1, op2 = self._check_operators(ctx, spec)
        size = self._check_files(spec)
        job = Job(uuid.uuid4().hex[:8], spec)
        self.jobs[job.id] = job
        finished = False
        try:
            self._start(ctx, job, op1, op2, size)
            log.info("JOB %s started in %.3f s", job.id, time.monotonic() - started)
            self._watch(ctx, job, started)
            log.info("JOB %s sources done at %.3f s", job.id, time.monotonic() - started)
            self._stop(job, ctx)                  # and collect the tasks' last counts
            finished = True
        finally:
            if not finished:
                self._stop(job)                   # a failed job leaves no task behind
            self.jobs.pop(job.id, None)
        return self._summary(job, started)

    def _check_operators(self, ctx: Context, spec: JobSpec):
        loaded = []
        for name, arg in ((spec.op1, spec.op1_args), (spec.op2, spec.op2_args)):
            try:
                op = load_operator(name, arg, ctx.cwd)
            except OperatorError as exc:
                raise CommandError(str(exc)) from None
            loaded.append(op)
            op.close()
        return loaded

    def _check_files(self, spec: JobSpec) -> int:
        try:
            checked_name(spec.dest)
            self.client.size(spec.src)          # "no such file" before anything else
            # Replicas may order unmerged appends differently; after a merge every replica
            # holds the same bytes, so sources can read their byte ranges from any of them.
            self.client.merge(spec.src)
            size = self.client.size(spec.src)
            self.client.create_bytes(spec.dest, b"")
        except HydfsError as exc:
            raise CommandError(str(exc)) from None
        return size

    def _start(self, ctx: Context, job: Job, op1, op2, size: int) -> None:
        spec = job.spec
        job.size = size
        chunks = self.client.read_range(spec.src, 0, size) if size else [b""]
        partitions = plan_partitions(chunks, size, spec.num_tasks)
        log.info("JOB %s partitions planned at %.3f s", job.id, time.monotonic() - job.started)
        live = [member.vm for member in self.membership.members()]
        job.schedule = assign(workers_for(live, self.vm), spec.num_tasks,
                              source_hosts=self.client.owners(spec.src))
        with ThreadPoolExecutor(max_workers=8) as pool:   # the tasks' (empty) logs
            list(pool.map(lambda t: self.client.create_bytes(task_log.log_name(job.id, str(t)),
                                                             b""), job.schedule))
        for task in job.schedule:
            job.task_specs[task] = self._task_spec(ctx, job, task, op1, op2, partitions)
        ctx.emit(f"job {job.id}: {spec.op1} -> {spec.op2} over {spec.src} ({size} bytes) "
                 f"into {spec.dest}, {spec.num_tasks} tasks per stage on "
                 f"{len(set(job.schedule.values()))} workers")
        self._launch(job, list(job.schedule))

    def _task_spec(self, ctx, job: Job, task: TaskId, op1, op2, partitions) -> dict:
        spec = job.spec
        operator, arg = [(None, ""), (spec.op1, spec.op1_args), (spec.op2, spec.op2_args)][task.stage]
        return {"job": job.id, "task": task.to_wire(), "num_tasks": spec.num_tasks,
                "src": spec.src, "dest": spec.dest,
                "batch_interval": self.config.stream.batch_interval,
                "state_flush_interval": self.config.stream.state_flush_interval,
                "operator": operator or "", "arg": arg, "cwd": ctx.cwd,
                "next_stateful": task.stage == 1 and op2.kind == AGGREGATE,
                "partition": partitions[task.index].to_wire() if task.stage == 0 else None,
                "block_bytes": block_bytes_for(job.size, spec.num_tasks),
                "source_rate": spec.source_rate / spec.num_tasks}

    def _launch(self, job: Job, tasks: list[TaskId]) -> None:
        """Start `tasks` where the schedule puts them, then send everyone the schedule. A
        worker that cannot start one (it died, and is not detected yet) is avoided for the
        rest of the job, and its tasks go to other live workers."""
        def start(task):
            return self.peers.call(job.schedule[task], {
                "t": m.START_TASK, "spec": job.task_specs[task]}, 60)["address"]
        todo = list(tasks)
        while todo:
            with ThreadPoolExecutor(max_workers=len(todo)) as pool:
                started = list(pool.map(_attempt(start), todo))
            failed = []
            for task, address in zip(todo, started):
                if isinstance(address, Exception):
                    log.warning("could not start task %s on vm%s: %s", task,
                                job.schedule[task], address)
                    job.avoid.add(job.schedule[task])
                    failed.append(task)
                else:
                    job.addresses[task] = address
            if failed:
                workers = [vm for vm in self._workers() if vm not in job.avoid]
                if not workers:
                    raise CommandError(f"could not start tasks {', '.join(map(str, failed))}: "
                                       f"no live worker left")
                job.schedule.update(reassign(job.schedule, workers))
            todo = failed
        self._send_schedule(job)

    def _workers(self) -> list[str]:
        return workers_for([member.vm for member in self.membership.members()], self.vm)

    def _send_schedule(self, job: Job) -> None:
        message = {"t": m.SCHEDULE, "job": job.id,
                   "tasks": [[t.stage, t.index, a] for t, a in sorted(job.addresses.items())]}
        for address in job.addresses.values():
            self.peers.tell(address, message)    # a task that is gone is dealt with by recovery

    def _watch(self, ctx: Context, job: Job, started: float) -> None:
        last_progress = 0.0
        while len(job.sources_done) < job.spec.num_tasks:
            try:
                kind, data = job.events.get(timeout=0.2)
            except queue.Empty:
                kind, data = None, None
            if kind == "report":
                self._on_report(ctx, job, data)
            elif kind == "failed":
                self._recover(ctx, job, gone=data)
            elif kind == "exit":
                self._recover(ctx, job, exited=TaskId.from_wire(data["task"]))
            if time.monotonic() - last_progress >= PROGRESS_EVERY:
                last_progress = time.monotonic()
                ctx.emit(self._progress(job, started))

    def _final_reports(self, ctx: Context, job: Job, timeout: float = 5.0) -> None:
        """Wait (a little) for every task's last counts before the summary."""
        waiting = set(job.addresses)
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            try:
                kind, data = job.events.get(timeout=0.1)
            except queue.Empty:
                continue
            if kind == "report":
                self._on_report(ctx, job, data)
                if data.get("final"):
                    waiting.discard(TaskId.from_wire(data["task"]))

    def _on_report(self, ctx: Context, job: Job, msg: dict) -> None:
        task = TaskId.from_wire(msg["task"])
        job.stats[task] = msg["stats"]
        if msg.get("source_done"):
            job.sources_done.add(task.index)
        allowed = PRINT_ROWS_PER_SECOND * (1 + time.monotonic() - job.started)
        for row in msg.get("sample", []):
            if job.printed < allowed:
                ctx.emit(row)
                job.printed += 1
        job.skipped = max(0, self._totals(job)["out"] - job.printed)

    def _recover(self, ctx: Context, job: Job, gone: set | None = None,
                 exited: TaskId | None = None) -> None:
        if exited is not None:
            job.restarts[exited] = job.restarts.get(exited, 0) + 1
            if job.restarts[exited] > MAX_TASK_RESTARTS:
                raise CommandError(f"task {exited} failed {job.restarts[exited]} times "
                                   f"(an operator error? see logs/vmNN-tasks.log); job stopped")
        workers = [vm for vm in self._workers() if vm not in job.avoid] or self._workers()
        if exited is not None and job.schedule.get(exited) in workers:
            moves = {exited: job.schedule[exited]}       # restart it where it was
        else:
            moves = reassign(job.schedule, workers)
        if not moves:
            return
        for task, vm in moves.items():
            ctx.emit(f"task {task} moves from vm{job.schedule[task]} to vm{vm}")
            job.schedule[task] = vm
            job.addresses.pop(task, None)
        job.failures_recovered += 1
        self._launch(job, list(moves))

    def _stop(self, job: Job, ctx: Context | None = None) -> None:
        for address in job.addresses.values():
            self.peers.tell(address, {"t": m.STOP, "job": job.id})
        if ctx is not None:
            self._final_reports(ctx, job)
        vms = sorted(set(job.schedule.values()))
        with ThreadPoolExecutor(max_workers=max(len(vms), 1)) as pool:
            list(pool.map(_attempt(lambda vm: self.peers.call(
                vm, {"t": m.STOP_JOB, "job": job.id}, 15)), vms))

    # -- what the user sees -----------------------------------------------------------------

    def _totals(self, job: Job) -> dict:
        def total(stage, key):
            return sum(s.get(key, 0) for t, s in job.stats.items() if t.stage == stage)
        return {"in": total(0, "in"), "op1_out": total(1, "out"), "out": total(2, "out"),
                "dropped": total(1, "dropped") + total(2, "dropped"),
                "errors": total(1, "errors") + total(2, "errors")}

    def _progress(self, job: Job, started: float) -> str:
        t = self._totals(job)
        elapsed = time.monotonic() - started
        return (f"[{elapsed:5.1f}s] read {t['in']} lines ({t['in'] / max(elapsed, 1e-9):,.0f}/s)"
                f" | {job.spec.op1} out {t['op1_out']} | {job.spec.op2} out {t['out']}"
                f" | sources done {len(job.sources_done)}/{job.spec.num_tasks}")

    def _summary(self, job: Job, started: float) -> dict:
        t = self._totals(job)
        seconds = round(time.monotonic() - started, 3)
        return {"job": job.id, "dest": job.spec.dest, "records_in": t["in"],
                "records_out": t["out"], "dropped": t["dropped"], "errors": t["errors"],
                "failures_recovered": job.failures_recovered, "seconds": seconds,
                "lines_per_second": round(t["in"] / seconds) if seconds else 0,
                "printed": job.printed, "not_printed": job.skipped}


def _attempt(fn):
    """fn, returning the Unreachable/RemoteError it raises instead of raising it."""
    def attempt(arg):
        try:
            return fn(arg)
        except (Unreachable, RemoteError) as exc:
            return exc
    return attempt

