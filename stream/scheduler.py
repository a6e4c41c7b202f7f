"""Task placement: which worker runs which task, and where a failed worker's tasks go.

A job has three stages (0 = source, 1 = OP1, 2 = OP2) of NUM_TASKS tasks each; when OP1 is
stateless its sources run it (chained), and only stages 0 and 2 have tasks; when OP2 is
stateless too, the sources run both and append to DEST (a sink), and only stage 0 has tasks.
The leader
deals tasks out stage by stage to the live workers, always to the worker with the fewest
tasks so far (ties broken by a rotating start), so every worker gets within one task of the
same load and a stage's tasks land on different workers when there are enough of them. The
leader itself coordinates and prints and runs no tasks, unless it is the only live node.

When a worker fails, each of its tasks moves to the least-loaded live worker; a task keeps
its identity (stage, index), so its upstream and downstream partitions do not change.
"""

from __future__ import annotations

from dataclasses import dataclass

STAGES = 3
STAGE_NAMES = ("source", "op1", "op2")
ALL_STAGES = (0, 1, 2)
CHAINED_STAGES = (0, 2)          # the sources run a stateless OP1 themselves (chained)
SINK_STAGES = (0,)               # ... and a stateless OP2, appending to DEST (sink)


@dataclass(frozen=True, order=True)
class TaskId:
    stage: int
    index: int

    def __str__(self) -> str:
        return f"{STAGE_NAMES[self.stage]}-{self.index}"

    def to_wire(self) -> list:
        return [self.stage, self.index]

    @classmethod
    def from_wire(cls, data) -> "TaskId":
        stage, index = data
        if stage not in range(STAGES) or not isinstance(index, int) or index < 0:
            raise ValueError(f"bad task id {data!r}")
        return cls(stage, index)


def workers_for(live: list[str], leader: str) -> list[str]:
    """The nodes that run tasks: every live node but the leader (unless it is alone)."""
    workers = sorted(vm for vm in live if vm != leader)
    return workers or sorted(live)


def assign(workers: list[str], num_tasks: int, source_hosts: list[str] = (),
           stages: tuple = ALL_STAGES) -> dict[TaskId, str]:
    """Deal the tasks of `stages` out; sources go first to `source_hosts` (the workers
    holding a replica of the source file: they read it from their own disk) while those are
    not busier."""
    if not workers:
        raise ValueError("no live workers to run the job")
    load = {vm: 0 for vm in workers}
    local = [vm for vm in source_hosts if vm in load]
    schedule = {}
    turn = 0
    for stage in stages:
        for index in range(num_tasks):
            order = workers[turn % len(workers):] + workers[:turn % len(workers)]
            if stage == 0 and local:
                order = sorted(order, key=lambda w: w not in local)
            vm = min(order, key=lambda w: load[w])
            schedule[TaskId(stage, index)] = vm
            load[vm] += 1
            turn += 1
    return schedule


def reassign(schedule: dict[TaskId, str], live_workers: list[str]) -> dict[TaskId, str]:
    """New homes for the tasks whose worker is not live; the others stay where they are."""
    if not live_workers:
        raise ValueError("no live workers left")
    load = {vm: 0 for vm in live_workers}
    for vm in schedule.values():
        if vm in load:
            load[vm] += 1
    moves = {}
    for task in sorted(t for t, vm in schedule.items() if vm not in load):
        vm = min(sorted(load), key=lambda w: load[w])
        moves[task] = vm
        load[vm] += 1
    return moves
