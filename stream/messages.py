"""RainStorm message catalogue: every message type of the stream engine, and its error codes.

Append-only (cluster/messages.py says why). Three kinds of endpoint speak them: the leader
node, every node's stream worker, and each task process's inbox (task_io.py).

Leader -> worker node (worker.py); every order carries `leader_epoch`, and a node refuses
one from a lower leader epoch than it has heard from (stale_leader, succession.py):
    stream.start_task {spec, leader_epoch, leader} -> ok {address: the task's inbox}
    stream.stop_job {job, leader_epoch}            -> ok {stopped}
    stream.leader {epoch, vm, address}             -> ok {tasks: [{job, task, epoch, address}]}
                                                  a new leader's announcement (leadership.py)
Task process -> its own node (node_link.py, served by worker.py):
    stream.hydfs_append {name, id} + bytes         -> ok {new}
    stream.hydfs_create {name} + bytes             -> ok
    stream.hydfs_read {name, offset, length}       -> ok {size} + bytes
    stream.hydfs_fence {name, key, epoch}          -> ok {sealed}   (hydfs/fences.py)
    stream.hydfs_read_view {name, ids, create, offset, length} -> ok {size} + bytes
    stream.hydfs_local_view {name, ids, create}    -> ok {local: where the node's copy holds
                                                  the view in its base, or null} (local_view.py)
    stream.hydfs_settled {name}                    -> ok {ids}   (appends on enough replicas)
    stream.hydfs_watch {name, known, timeout}      -> ok {held: ids, or null at timeout}
    stream.lease {job, task, epoch}                -> ok {stop: why, or null}
Leader -> a worker holding SRC (job_setup.py, served by worker.py):
    stream.plan_partitions {name, ids, count, follow} -> ok {size, partitions}
    stream.plan_partitions {name, ids, count, part}   -> ok {size, start, end, lines}
                                                  (one partition, cut on its own)
Task or worker -> leader (leader.py):
    stream.report {job, task, stats, ...}          -> ok {stop, leader_epoch, leader}
    stream.task_exit {job, task, vm, code}         -> ok
Between tasks, and leader -> task inbox (one-way, no reply; task.py):
    stream.block {job, from, to, id, enc, epoch, ...} + payload   upstream -> downstream
                                                  (enc: "lines" from a source; tuple_codec.py)
    stream.ack {job, from, to, ids, epoch}                        downstream -> upstream
    stream.schedule {job, tasks: [[stage, index, address, epoch]], stopping?,
                     leader_epoch, leader}        leader -> every task
    stream.stop {job, task?, attempt?, leader_epoch, leader}
                                                  leader -> every task (or that one attempt)
"""

from __future__ import annotations

from cluster.messages import Catalogue

STREAM = Catalogue("stream")

START_TASK = STREAM.add("stream.start_task", ("spec",), "start a task process on this node")
STOP_JOB = STREAM.add("stream.stop_job", ("job",), "stop this node's task processes of a job")
HYDFS_APPEND = STREAM.add("stream.hydfs_append", ("name",), "append for a task process")
HYDFS_CREATE = STREAM.add("stream.hydfs_create", ("name",), "create for a task process")
HYDFS_READ = STREAM.add("stream.hydfs_read", ("name",), "a byte range for a task process")
REPORT = STREAM.add("stream.report", ("job", "task", "stats"), "a task's counters, to the leader")
TASK_EXIT = STREAM.add("stream.task_exit", ("job", "task"), "a task process exited on its own")
BLOCK = STREAM.add("stream.block", ("job", "from", "to", "id", "enc"), "a block of tuples")
ACK = STREAM.add("stream.ack", ("job", "from", "to", "ids"), "blocks safe downstream")
SCHEDULE = STREAM.add("stream.schedule", ("job", "tasks"), "where every task of a job runs")
STOP = STREAM.add("stream.stop", ("job",), "the job is over: stop")
HYDFS_FENCE = STREAM.add("stream.hydfs_fence", ("name", "key", "epoch"),
                         "fence a file against a task's earlier attempts")
LEASE = STREAM.add("stream.lease", ("job", "task", "epoch"),
                   "a task attempt asks its node whether to go on")
HYDFS_READ_VIEW = STREAM.add("stream.hydfs_read_view", ("name", "ids"),
                             "a range of a view of a file (given appends, in merge order)")
HYDFS_SETTLED = STREAM.add("stream.hydfs_settled", ("name",),
                           "the appends of a file on enough replicas to be relied on")
HYDFS_WATCH = STREAM.add("stream.hydfs_watch", ("name", "known"),
                         "wait until a replica of a file holds an append not known")

LEADER = STREAM.add("stream.leader", ("epoch", "vm"),
                    "a new leader's announcement; the task attempts the node runs")
HYDFS_LOCAL_VIEW = STREAM.add("stream.hydfs_local_view", ("name", "ids"),
                              "where the node's own copy holds a view in its base file")
PLAN_PARTITIONS = STREAM.add("stream.plan_partitions", ("name", "ids", "count"),
                             "cut a view of SRC into a job's partitions, from this copy")

# Error codes (cluster/errors.py has those every node uses; HyDFS's pass through as they are).
TASK_START_FAILED = "task_start_failed"    # the task process exited or hung before READY
STALE_START = "stale_start"                # a start of an older attempt than one running
STALE_LEADER = "stale_leader"              # an order from a deposed leader
NOT_LEADER = "not_leader"                  # a leader's command on a node that does not lead
