"""Setting a job up: what a user can get wrong checked before anything is written, then
the job's snapshot of SRC, DEST, the partitions, the tasks' (empty) logs and their specs
(`TaskSpec` templates, each without its epoch) and first placement.

The leader (leader.py) runs these for a new job, and a successor again for a job whose
leader died while setting it up (nothing of it ran: no task starts before its specs are
in the job's record), which is why DEST and the logs may exist already, empty.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

from cluster.commands import CommandError, Context
from cluster.rpc import RemoteError, Unreachable
from hydfs.client import HydfsClient, HydfsError, checked_name
from hydfs.messages import FILE_EXISTS, NO_SUCH_FILE
from stream import messages as m
from stream import task_log
from stream.job import Job
from stream.job_core import JobCore
from stream.job_spec import JobSpec
from stream.operators import AGGREGATE, OperatorError, load_operator
from stream.scheduler import ALL_STAGES, CHAINED_STAGES, SINK_STAGES, TaskId
from stream.source_plan import (Partition, Segment, block_bytes_for, cut_segment,
                                join_segments, plan_partitions, segment_target)
from stream.succession import attempt_floor
from stream.task_spec import TaskSpec

log = logging.getLogger("stream")

PLAN_TIMEOUT = 600.0      # cutting a large SRC reads all of it
PARALLEL_PLAN_BYTES = 16 << 20   # SRC this big has its partitions cut in parallel


class JobSetup:
    def __init__(self, config, client: HydfsClient, lease: float, stall_timeout: float,
                 resend_after: float):
        self.config = config
        self.client = client
        self.lease = lease
        self.stall_timeout = stall_timeout
        self.resend_after = resend_after

    def check_operators(self, ctx: Context, spec: JobSpec):
        loaded = []
        for name, arg in ((spec.op1, spec.op1_args), (spec.op2, spec.op2_args)):
            try:
                op = load_operator(name, arg, ctx.cwd)
            except OperatorError as exc:
                raise CommandError(str(exc)) from None
            loaded.append(op)
            op.close()
        return loaded

    def check_names(self, spec: JobSpec) -> None:
        """What a user can get wrong about SRC and DEST, before the job is recorded."""
        try:
            checked_name(spec.dest)
            self.client.size(spec.src)          # "no such file" before anything else
        except HydfsError as exc:
            raise CommandError(str(exc)) from None
        try:
            self.client.size(spec.dest)
        except HydfsError as exc:
            if exc.code != NO_SUCH_FILE:
                raise CommandError(str(exc)) from None
        else:
            raise CommandError(f"file {spec.dest} already exists in HyDFS")

    def snapshot(self, spec: JobSpec):
        """The job's snapshot of SRC: the appends settled on its replicas (a merge first,
        so that they usually read as one stretch of the base)."""
        try:
            self.client.merge(spec.src)
            return self.client.settled(spec.src)
        except HydfsError as exc:
            raise CommandError(str(exc)) from None

    def plan(self, ctx: Context, job: Job, ops, workers: list[str],
             made: bool = False) -> None:
        """DEST, the tasks' logs (made at the same time as the snapshot of SRC and its
        partitions), their specs and first placement on `workers` (`made`: an earlier
        leader may have made DEST and the logs, empty). `ops`: the loaded (OP1, OP2). When
        `[stream] chain` is on, a stateless OP1 runs in the sources, and so does OP2 after
        it if it is stateless too (the sources then append to DEST: a sink)."""
        spec = job.spec
        op1, op2 = ops
        chained = self.config.stream.chain and op1.kind != AGGREGATE
        sink = chained and op2.kind != AGGREGATE
        stages = SINK_STAGES if sink else CHAINED_STAGES if chained else ALL_STAGES
        tasks = [TaskId(stage, i) for stage in stages for i in range(spec.num_tasks)]
        with ThreadPoolExecutor(max_workers=len(tasks) + 1) as pool:
            # DEST and the tasks' logs (empty), made while SRC's snapshot is taken and cut
            files = [spec.dest] + [task_log.log_name(job.id, str(t)) for t in tasks]
            creates = [pool.submit(create_empty, self.client, name, made) for name in files]
            view = self.snapshot(spec)
            size, partitions = self.partitions(spec, view)
            log.info("JOB %s partitions planned at %.3f s", job.id,
                     time.monotonic() - job.started)
            for create in creates:
                create.result()
        if not workers:
            raise CommandError("no live worker to run the job")
        core = JobCore(spec.num_tasks, workers, time.monotonic(), self.stall_timeout,
                       source_hosts=self.client.owners(spec.src), silence=self.lease,
                       following=spec.follow, epoch_floor=attempt_floor(job.epoch),
                       stages=stages)
        for task in core.tasks:
            job.templates[task] = self._task_spec(ctx, job, task, op2, partitions, size, view,
                                                  chained, sink)
        job.core = core        # after the templates: `job JOBID` reads both (chained OP1s)
        placed = {st.vm for st in core.tasks.values()}
        ctx.emit(f"job {job.id}: {spec.op1} -> {spec.op2} over {spec.src} ({size} bytes"
                 f"{', following its appends' if spec.follow else ''}) into {spec.dest}, "
                 f"{spec.num_tasks} tasks per stage on {len(placed)} workers"
                 f"{_chained_note(spec, chained, sink)}")

    def partitions(self, spec: JobSpec, view) -> tuple[int, list]:
        """(SRC's snapshot size, its partitions). Cutting them reads the whole snapshot to
        count lines, so a replica of SRC that holds the snapshot cuts them from its own
        copy (`stream.plan_partitions`, worker.py), and only a leader that finds none
        reads SRC itself, across the network if it holds no copy. A big file's partitions
        are cut in parallel, each by one of SRC's replicas (`_in_parallel`)."""
        owners = self.client.owners(spec.src)
        if spec.num_tasks > 1 and not spec.follow and \
                self.client.size(spec.src) >= PARALLEL_PLAN_BYTES:
            cut = self._in_parallel(spec, view, owners)
            if cut is not None:
                return cut
        if self.client.service.vm not in owners:      # a replica reads its own copy here
            for vm in owners:
                try:
                    reply = self.client.peers.call(vm, {
                        "t": m.PLAN_PARTITIONS, "name": spec.src, "ids": view.to_wire(),
                        "count": spec.num_tasks, "follow": spec.follow}, PLAN_TIMEOUT)
                    return int(reply["size"]), [Partition.from_wire(p)
                                                for p in reply["partitions"]]
                except (Unreachable, RemoteError, KeyError, TypeError, ValueError) as exc:
                    log.info("partitions of %s not cut at vm%s (%s): trying elsewhere",
                             spec.src, vm, exc)
        try:
            return cut_partitions(self.client, spec.src, view, spec.num_tasks, spec.follow)
        except HydfsError as exc:
            raise CommandError(str(exc)) from None

    def _in_parallel(self, spec: JobSpec, view, owners: list[str]):
        """(size, partitions), each partition cut and its lines counted on its own by one of
        SRC's replicas, from its copy (source_plan.cut_segment); None if that fails, or the
        cuts are not those of a single pass (a line that spans a partition's target)."""
        def cut(index: int) -> dict:
            vm = owners[index % len(owners)]
            if vm == self.client.service.vm:
                return segment_of(self.client, spec.src, view, spec.num_tasks, index)
            return self.client.peers.call(vm, {
                "t": m.PLAN_PARTITIONS, "name": spec.src, "ids": view.to_wire(),
                "count": spec.num_tasks, "part": index}, PLAN_TIMEOUT)
        try:
            with ThreadPoolExecutor(max_workers=spec.num_tasks) as pool:
                replies = list(pool.map(cut, range(spec.num_tasks)))
            sizes = {int(r["size"]) for r in replies}
            segments = [Segment(int(r["start"]), int(r["end"]), int(r["lines"]))
                        for r in replies]
        except (Unreachable, RemoteError, HydfsError, KeyError, TypeError, ValueError) as exc:
            log.info("partitions of %s not cut in parallel (%s): in one pass", spec.src, exc)
            return None
        parts = join_segments(segments, sizes.pop()) if len(sizes) == 1 else None
        return None if parts is None else (int(replies[0]["size"]), parts)

    def _task_spec(self, ctx, job: Job, task: TaskId, op2, partitions, size: int,
                   view, chained: bool, sink: bool) -> TaskSpec:
        """`chained`: the sources run OP1, and send to stage 2 themselves; `sink`: they
        run OP2 after it, and append to DEST themselves."""
        spec = job.spec
        runs_op1 = task.stage == 1 or (chained and task.stage == 0)
        operator, arg = [("", ""), (spec.op1, spec.op1_args), (spec.op2, spec.op2_args)][
            1 if runs_op1 else task.stage]
        source = task.stage == 0
        return TaskSpec(
            job.id, task, spec.num_tasks, spec.src, spec.dest,
            self.config.stream.batch_interval, self.config.stream.state_flush_interval,
            operator, arg, ctx.cwd, next_stateful=runs_op1 and op2.kind == AGGREGATE,
            next_reads_values=not runs_op1 or op2.reads_values, chained=chained,
            sink=sink and source, last_operator=spec.op2 if sink and source else "",
            last_arg=spec.op2_args if sink and source else "",
            partition=partitions[task.index] if source else None,
            block_bytes=block_bytes_for(size, spec.num_tasks),
            source_rate=spec.source_rate / spec.num_tasks, rate_origin=job.created,
            lease=self.lease,
            resend_after=self.resend_after, view=view.to_wire() if source else None,
            follow=spec.follow and source,
            window_bytes=int(self.config.stream.source_window_mb * (1 << 20)))


def _chained_note(spec: JobSpec, chained: bool, sink: bool) -> str:
    if sink:
        return f" ({spec.op1} and {spec.op2} run in the source tasks)"
    return f" ({spec.op1} runs in the source tasks)" if chained else ""


def cut_partitions(client: HydfsClient, name: str, view, count: int,
                   follow: bool) -> tuple[int, list]:
    """(size, partitions) of the view of `name`, read through `client` (its own copy
    if it holds one); HydfsError if it cannot be read."""
    size, chunks = client.read_view(name, view, True, 0, 1 << 62)
    return size, plan_partitions(chunks if size else [b""], size, count, follow=follow)


def segment_of(client: HydfsClient, name: str, view, count: int, index: int) -> dict:
    """Partition `index` of `count` of the view of `name`, cut on its own (cut_segment)
    from the bytes from its target on, as a plan_partitions reply with `part`."""
    size, nothing = client.read_view(name, view, True, 0, 0)
    nothing.close()
    offset = segment_target(size, count, index)
    _, chunks = client.read_view(name, view, True, offset, size - offset)
    try:
        seg = cut_segment(chunks, size, count, index, count_lines=index < count - 1)
    finally:
        chunks.close()             # read no further than the partition's end
    return {"size": size, "start": seg.start, "end": seg.end, "lines": seg.lines}


def create_empty(client: HydfsClient, name: str, may_exist: bool) -> None:
    """An empty HyDFS file; one that exists already is fine if `may_exist` and it is empty."""
    try:
        client.create_bytes(name, b"")
    except HydfsError as exc:
        if not (may_exist and exc.code == FILE_EXISTS and client.size(name) == 0):
            raise
