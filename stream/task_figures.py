"""A job's tasks as its documents (`job JOBID`, job.py) and metrics (metrics.py) show them.

Every task with its counters, and an OP1 chained into the sources (`[stream] chain`) as OP1
tasks of its own, each run by its source: the source shows the lines it read and those OP1
took (`in`, `op1_in`), the OP1 task what OP1 took, put out, dropped and failed on
(`op1_in`, `out`, `dropped`, `errors`), as an OP1 task of its own would. An OP2 that runs in
the sources too (a sink) is shown likewise as OP2 tasks: what OP1 put out, and OP2's
`op2_out`, `op2_dropped` and `op2_errors`.
"""

from __future__ import annotations

from stream.scheduler import TaskId

COUNTERS = ("in", "out", "dropped", "errors")


def shown_tasks(core, templates: dict) -> list[tuple[TaskId, TaskId, dict]]:
    """(the task shown, the task that runs it, its counters) for every task of `core` (a
    JobCore), in task order; `templates`: the job's TaskSpecs (which say `chained`)."""
    shown = []
    for task, st in core.tasks.items():
        stats = st.stats
        template = templates.get(task)
        if task.stage == 0 and template is not None and template.chained:
            shown.append((task, task, {"in": stats.get("in", 0), "out": stats.get("op1_in", 0),
                                       "dropped": 0, "errors": 0}))
            shown.append((TaskId(1, task.index), task, {
                "in": stats.get("op1_in", 0), **{k: stats.get(k, 0) for k in COUNTERS[1:]}}))
            if template.sink:
                shown.append((TaskId(2, task.index), task, {
                    "in": stats.get("out", 0),
                    **{k: stats.get(f"op2_{k}", 0) for k in COUNTERS[1:]}}))
        else:
            shown.append((task, task, {k: stats.get(k, 0) for k in COUNTERS}))
    return sorted(shown, key=lambda entry: entry[0])
