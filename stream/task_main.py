"""Entry point of a task process: `python -m stream.task_main` with its spec on stdin.

The node that starts a task writes one JSON line: the task spec, the node's and the
leader's addresses, and the cluster secret. The task binds an inbox port, prints
``READY host:port`` on stdout, and runs until the leader stops the job, a newer attempt
replaces it, or its lease runs out. Its log lines go to stderr, which the node appends to
the node's log directory.

Exit status: 0 when it ended as told (or was replaced: a newer attempt runs), LOST_EXIT
when it stopped on its own (its lease ran out: its node tells the leader), 3 when its node
died, anything else when it crashed (its node tells the leader, which starts it again).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time

from cluster import wire
from cluster.heap import start_trimming
from stream.node_link import NodeLink
from stream.operators import load_operator
from stream.task import TaskRunner
from stream.task_io import Inbox
from stream.task_spec import TaskSpec

LOST_EXIT = 4


def main() -> int:
    start_trimming()                         # before any thread starts, and off the clock
    line = sys.stdin.readline()              # a spare process waits here, warm
    if not line:
        return 0                             # its node stopped without using it
    setup = json.loads(line)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format=f"%(asctime)s task {setup['spec']['job']}/%(message)s")
    spec = TaskSpec.from_wire(setup["spec"])
    secret = setup.get("secret", "")
    inbox = Inbox(setup["node"][0], wire.secret_key(secret))
    link = NodeLink(tuple(setup["node"]), tuple(setup["leader"]), secret)
    # a source runs OP1 only when it is chained into it (spec.chained), OP2 too when a sink
    operator = load_operator(spec.operator, spec.arg, spec.cwd) if spec.operator else None
    last = load_operator(spec.last_operator, spec.last_arg, spec.cwd) if spec.sink else None
    runner = TaskRunner(spec, link, inbox, operator, last)
    print(f"READY {inbox.address}", flush=True)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    runner.run()
    return LOST_EXIT if runner.lost else 0


def _exit_with_parent(parent: int) -> None:
    """A task whose node died (kill -9) must not run on as a zombie: the leader has
    already started its replacement elsewhere."""
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(3)


def profiled(fn):
    """With RAINSTORM_PROFILE_DIR set, each task writes a cProfile of its run there."""
    folder = os.environ.get("RAINSTORM_PROFILE_DIR")
    if not folder:
        return fn()
    import cProfile
    profile = cProfile.Profile()
    try:
        return profile.runcall(fn)
    finally:
        profile.dump_stats(os.path.join(folder, f"task-{os.getpid()}.prof"))


if __name__ == "__main__":
    sys.exit(profiled(main))
