"""A deterministic simulator of a RainStorm job: the real cores under a seeded nemesis.

Everything that decides is the production code: the leader's `JobCore`, each attempt's
`SourceCore` / `OperatorCore`, the shipped operators and task_log's recovery. Around them
this module is a fake world driven by one `random.Random` and a fake clock:

- `SimHydfs`: files as lists of appends, stored once per append id, with the fences of
  hydfs/fences.py (an append or a fence from a replaced epoch is refused; a fence seals what
  stood). Operations are atomic: this checks the stream protocol against HyDFS's contract,
  not HyDFS itself.
- the network between attempts: every message is delayed, and may be reordered, duplicated
  or dropped; a message to an attempt that is dead is lost, one to a zombie reaches it.
- a shell per attempt that starts it as task.py does (fence the log, read it, fence DEST),
  executes its effects in order, and may crash it before any effect;
- the nemesis: crashes of task processes (their node reports the exit), workers declared
  failed (their attempts die), workers declared failed whose attempts run on as zombies for a
  while (they were only paused or cut off), starts that fail, workers that come back;
- the leader's failure (`leader_fail_at`): a new `JobCore` takes the job over from its record
  (the placements and task epochs the leader recorded before each start, the sources done)
  and `adopt`s the attempts that run, with task epochs above the new leader epoch's floor;
  the old core runs on for a while as a zombie leader: its starts are refused (its record
  writes are fenced), its schedules and stops carry its older leader epoch, which tasks that
  heard from the new leader drop and tasks that did not yet may still obey;
- following jobs (`follow`): SRC grows by appends while the job runs, each settled (on
  enough replicas) a little after it was made, with news of it to the following source
  (sometimes lost); the job is stopped at `stop_at`. The oracle is then over the snapshot
  and every line the source's log says it took, and every append settled before the stop
  must be among those.

`run(seed)` plays one job to its end and returns a `Outcome`: DEST's rows against the
oracle's, whether the job finished, and a transcript to replay a failing seed by.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from dataclasses import dataclass, field

from bench import reference_apps
from bench.gen_traffic_signs import iter_lines
from hydfs.fences import Fence, Fences, lower_epochs
from hydfs.idset import IdSet
from stream import task_log
from stream.effects import AppendDest, AppendLog, Lead, Report, Route, Send, Stop
from stream.job_core import Done, Fail, JobCore, Say, SendSchedule, StartTask, StopAttempt
from stream.messages import SCHEDULE, STOP
from stream.operator_core import OperatorCore
from stream.operators import load_operator
from stream.scheduler import ALL_STAGES, CHAINED_STAGES, SINK_STAGES, TaskId
from stream.source_core import SourceCore
from stream.source_plan import plan_partitions
from stream.succession import attempt_floor
from stream.task_spec import TaskSpec

APPS = {1: ("grep", "signs_select", "Stop"), 2: ("signs_by_category", "count", "Punched Telespar")}
JOB, SRC, DEST = "j", "src", "dest"
LEADER_TURN = 0.2
MAX_CRASHES_PER_TASK = 2      # more in a row would look like a broken operator, failing the job


class Fenced(Exception):
    pass


class SimHydfs:
    """Append-only files with append-id dedup and fences (hydfs/fences.py), in memory."""

    def __init__(self):
        self.files: dict[str, list] = {}         # name -> [(append id, data)]
        self.held: dict[str, IdSet] = {}
        self.fences: dict[str, Fences] = {}

    def create(self, name: str, data: bytes = b"") -> None:
        self.files[name] = [(None, data)] if data else []
        self.held[name] = IdSet()
        self.fences[name] = Fences()

    def append(self, name: str, data: bytes, append_id: tuple[str, int]) -> None:
        if append_id in self.held[name]:
            return
        if not self.fences[name].accepts(append_id[0]):
            raise Fenced(f"{name}: {append_id[0]} was replaced")
        self.files[name].append((append_id, data))
        self.held[name].add(*append_id)

    def fence(self, name: str, key: str, epoch: int) -> IdSet:
        current = self.fences[name].get(key)
        if current is not None and current.epoch > epoch:
            raise Fenced(f"{name}: fenced at {current.epoch} already")
        if current is not None and current.epoch == epoch:
            return current.sealed
        sealed = lower_epochs(self.held[name], key, epoch)
        self.fences[name] = self.fences[name].with_fence(key, Fence(epoch, sealed))
        return sealed

    def read(self, name: str) -> bytes:
        return b"".join(data for _, data in self.files[name])


@dataclass
class Knobs:
    """One seed's world: what the nemesis does and how often."""
    app: int
    lines: int
    num_tasks: int
    workers: list
    block_bytes: int
    drop: float                   # per message between attempts
    duplicate: float
    crash_per_effect: float       # an attempt dies before an effect
    faults: list                  # (time, kind, vm or task): the scheduled nemesis
    start_fail: float             # a start refused
    source_rate: float = 0.0      # lines per second per source (0: as fast as it can)
    leader_drop: float = 0.0      # a schedule or stop from the leader lost (a tell that failed)
    exit_drop: float = 0.0        # a node's word that a task exited lost
    latency: tuple = (0.001, 0.03)
    follow: bool = False          # SRC grows while the job runs, until it is stopped
    appends: list = field(default_factory=list)   # (time, lines) appended to SRC
    stop_at: float = 0.0
    leader_fail_at: float = 0.0   # the leader fails then (0: never); a successor takes over
    leader_zombie: float = 0.0    # ... and the old one acts on this long, deposed
    chained: bool = False         # the sources run OP1 (`[stream] chain`): no OP1 tasks
    sink: bool = False            # ... and a stateless OP2 (App 1's), appending to DEST


@dataclass
class Outcome:
    seed: int
    knobs: Knobs
    finished: bool
    failed: str
    expected: Counter
    got: Counter
    records_out: int
    transcript: list = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return self.finished and not self.failed and self.got == self.expected

    def explain(self) -> str:
        missing = self.expected - self.got
        doubled = self.got - self.expected
        head = (f"seed {self.seed}: finished={self.finished} failed={self.failed!r} "
                f"missing={sum(missing.values())} extra={sum(doubled.values())} "
                f"e.g. missing {list(missing)[:3]} extra {list(doubled)[:3]}\n"
                f"knobs: {self.knobs}\n")
        return head + "\n".join(self.transcript[-80:])


def knobs_for(rng: random.Random) -> Knobs:
    workers = [f"{i:02d}" for i in range(2, 2 + rng.randint(2, 4))]
    kinds = ["crash", "fail", "zombie", "fail_and_return", "freeze", "freeze", "restart"]
    faults = sorted((rng.uniform(0.02, 1.2), rng.choice(kinds), rng.choice(workers))
                    for _ in range(rng.choice([0, 1, 2, 2, 3, 4])))
    return Knobs(app=rng.choice([1, 2]), lines=rng.randint(8, 40),
                 num_tasks=rng.randint(1, 3), workers=workers,
                 block_bytes=rng.choice([200, 400, 900]),
                 drop=rng.choice([0.0, 0.0, 0.02, 0.1]), duplicate=rng.choice([0.0, 0.05]),
                 crash_per_effect=rng.choice([0.0, 0.0, 0.003, 0.01]), faults=faults,
                 start_fail=rng.choice([0.0, 0.1]),
                 source_rate=rng.choice([0.0, 20.0, 60.0]),
                 leader_drop=rng.choice([0.0, 0.0, 0.05]), exit_drop=rng.choice([0.0, 0.0, 0.1]),
                 leader_fail_at=rng.choice([0.0, 0.0, rng.uniform(0.02, 1.5)]),
                 leader_zombie=rng.choice([0.0, rng.uniform(0.1, 3.0)]),
                 chained=rng.random() < 0.5, sink=rng.random() < 0.8)


def follow_knobs_for(rng: random.Random) -> Knobs:
    """A following job: appends of 1-6 lines at random times, some after the stop."""
    k = knobs_for(rng)
    k.follow, k.source_rate = True, 0.0
    k.stop_at = rng.uniform(0.5, 2.5)
    k.appends = sorted((rng.uniform(0.0, k.stop_at + 0.5), rng.randint(1, 6))
                       for _ in range(rng.randint(1, 12)))
    return k


class Attempt:
    """One attempt of one task: its core, its worker, and whether it runs."""

    def __init__(self, spec: TaskSpec, vm: str):
        self.spec, self.vm = spec, vm
        self.core = None
        self.alive = True
        self.zombie = False
        self.address = f"{spec.task}@{spec.epoch}"
        self.leader_epoch = spec.leader_epoch     # the leader it reports to
        self.frozen_until = 0.0      # paused (SIGSTOP): nothing happens to it till then
        self.routes: dict = {}
        self.read_at = spec.partition.offset if spec.partition else 0
        self.batch_at = 0


class World:
    def __init__(self, seed: int, knobs: Knobs | None = None, follow: bool = False):
        self.seed = seed
        self.rng = random.Random(seed)
        self.k = knobs or (follow_knobs_for(self.rng) if follow else knobs_for(self.rng))
        self.now = 0.0
        self.events: list = []
        self.counter = 0
        self.transcript: list[str] = []
        self.hydfs = SimHydfs()
        self.lines = list(iter_lines(self.k.lines, seed=seed))
        self.src = "".join(line + "\n" for line in self.lines).encode()
        self.attempts: dict[str, Attempt] = {}        # address -> attempt
        self.crashes: Counter = Counter()             # task -> crashes the nemesis caused
        self.armed: dict[str, float] = {}             # vm -> pause it this long mid-write
        self.live = list(self.k.workers)
        self.done = False
        self.failed = ""
        op1, op2, arg = APPS[self.k.app]
        self.ops = (op1, op2, arg)
        self.leader_epoch = 1
        # App 1's OP2 is stateless: chained sources may run it too, as job_setup decides
        self.sinks = self.k.chained and self.k.sink and self.k.app == 1
        self.stages = SINK_STAGES if self.sinks else CHAINED_STAGES if self.k.chained \
            else ALL_STAGES
        self.core = JobCore(self.k.num_tasks, list(self.live), 0.0, stall_timeout=60.0,
                            silence=5.0, following=self.k.follow,
                            epoch_floor=attempt_floor(self.leader_epoch), stages=self.stages)
        self.record = {"placement": {}, "sources_done": set(), "failures_recovered": 0}
        self.zombie_core: JobCore | None = None       # a deposed leader, acting on
        self.zombie_until = 0.0
        self.stopping = False
        self.pool = list(iter_lines(200, seed=seed + 1))[1:]    # lines to append to SRC
        self.appended: dict = {}                      # append id -> its bytes
        self.settled = IdSet()
        self.settled_at_stop = IdSet()
        self.templates = self._templates()

    # -- the event queue --------------------------------------------------------------------

    def at(self, when: float, kind: str, *data) -> None:
        self.counter += 1
        heapq.heappush(self.events, (when, self.counter, kind, data))

    def say(self, text: str) -> None:
        self.transcript.append(f"{self.now:8.3f} {text}")

    def run(self, until: float = 120.0) -> Outcome:
        self.hydfs.create(SRC, self.src)
        self.hydfs.create(DEST)
        for task in self.core.tasks:
            self.hydfs.create(task_log.log_name(JOB, str(task)))
        for when, kind, target in self.k.faults:
            self.at(when, "fault", kind, target)
        for when, count in self.k.appends:
            self.at(when, "src_append", count)
        if self.k.follow:
            self.at(self.k.stop_at, "stop")
        if self.k.leader_fail_at:
            self.at(self.k.leader_fail_at, "leader_fails")
        self.at(0.0, "leader_tick")
        while self.events and not self.done and not self.failed:
            when, _, kind, data = heapq.heappop(self.events)
            if when > until:
                break
            self.now = when
            getattr(self, f"on_{kind}")(*data)
        rows = Counter(self.hydfs.read(DEST).decode().splitlines())
        failed = self.failed or self._lost_appends()
        return Outcome(self.seed, self.k, self.done, failed, self.expected(), rows,
                       self.core.totals()["out"], self.transcript)

    def expected(self) -> Counter:
        _, _, arg = self.ops
        lines = self.lines + self._taken_lines()
        if self.k.app == 1:
            return reference_apps.app1_lines(lines, arg)
        return reference_apps.app2_expected_rows(lines, arg)

    def count_errors(self, stopped: bool = False) -> list[str]:
        """How the job's counters disagree with its input and its DEST. A task's counters
        are the most that its log or its reports to the leader say (a done source's last
        done marks may not be logged; the simulated leader waits for no final report). Of
        a job that was `stopped` early only the stages' agreement is checked."""
        counts = {}
        for task, st in self.core.tasks.items():
            logged = task_log.recover(self.hydfs.read(task_log.log_name(JOB, str(task)))).stats
            counts[task] = {k: max(logged.get(k, 0), st.stats.get(k, 0))
                            for k in set(logged) | set(st.stats)}

        def total(stage: int, key: str) -> int:
            return sum(c.get(key, 0) for t, c in counts.items() if t.stage == stage)
        rows, errors = len(self.hydfs.read(DEST).decode().splitlines()), []
        lines = len(self.lines) + len(self._taken_lines())
        if not stopped and total(0, "in") != lines:
            errors.append(f"sources read {total(0, 'in')} lines of {lines}")
        if self.k.chained and total(0, "op1_in") != total(0, "in"):
            errors.append(f"OP1 took {total(0, 'op1_in')} lines of {total(0, 'in')} read")
        if not self.sinks and total(0, "out") + total(1, "out") != total(2, "in"):
            errors.append(f"OP1 put out {total(0, 'out') + total(1, 'out')}, "
                          f"OP2 took {total(2, 'in')}")
        op2_out = total(2, "out") + total(0, "op2_out")        # a sink's OP2 counts as op2_*
        if op2_out != rows:
            errors.append(f"OP2 put out {op2_out}, DEST has {rows} rows")
        return errors

    def _taken(self) -> list:
        """The batches of SRC's appends the following source's log took, in log order."""
        if not self.k.follow:
            return []
        tail = TaskId(0, self.k.num_tasks - 1)
        return task_log.recover(self.hydfs.read(task_log.log_name(JOB, str(tail)))).tail

    def _taken_lines(self) -> list:
        data = b"".join(self._batch_bytes(batch) for batch in self._taken())
        return data.decode().splitlines()

    def _lost_appends(self) -> str:
        taken = IdSet()
        for batch in self._taken():
            taken = taken.union(batch)
        lost = self.settled_at_stop.difference(taken)
        return f"appends settled before the stop not read: {lost}" if len(lost) else ""

    def _batch_bytes(self, batch: IdSet) -> bytes:
        """A batch's bytes, as hydfs read_view serves them: its appends in merge order."""
        return b"".join(self.appended[i] for i in sorted(batch, key=lambda i: i[1]))

    # -- SRC growing (following jobs) -------------------------------------------------------

    def on_src_append(self, count: int) -> None:
        lines, self.pool = self.pool[:count], self.pool[count:]
        append_id = ("writer", len(self.appended) + 1)
        self.appended[append_id] = "".join(line + "\n" for line in lines).encode()
        self.at(self.now + self.rng.uniform(0.0, 0.1), "src_settled", append_id)

    def on_src_settled(self, append_id) -> None:
        self.settled.add(*append_id)
        for a in self.attempts.values():
            if a.alive and isinstance(a.core, SourceCore) and a.core.follower and \
                    self.rng.random() > 0.2:          # news may be lost: the slow poll finds it
                a.core.on_news(self.now, IdSet.of([append_id]))
                self.at(self.now, "turn", a.address)

    def on_stop(self) -> None:
        self.say("leader: stop requested")
        self.settled_at_stop = IdSet(self.settled.to_wire())
        self.stopping = True
        for template in self.templates.values():
            template["stopping"] = True
        self.leader(self.core.stop(self.now))

    # -- the leader -------------------------------------------------------------------------

    def _templates(self) -> dict:
        op1, op2, arg = self.ops
        partitions = plan_partitions([self.src], len(self.src), self.k.num_tasks)
        specs = {}
        for task in self.core.tasks:
            runs_op1 = task.stage == 1 or (self.k.chained and task.stage == 0)
            operator, op_arg = [("", ""), (op1, arg), (op2, "")][1 if runs_op1 else task.stage]
            sink = self.sinks and task.stage == 0
            specs[task] = dict(sink=sink, last_operator=op2 if sink else "",
                job=JOB, task=task, num_tasks=self.k.num_tasks, src=SRC, dest=DEST,
                batch_interval=0.1, state_flush_interval=0.1, operator=operator, arg=op_arg,
                next_stateful=runs_op1 and self.k.app == 2, chained=self.k.chained,
                partition=partitions[task.index] if task.stage == 0 else None,
                block_bytes=self.k.block_bytes, lease=5.0, resend_after=0.5,
                source_rate=self.k.source_rate,
                follow=self.k.follow and task.stage == 0)
        return specs

    def leader(self, effects: list, epoch: int = 0) -> None:
        """Carry out a leader core's effects: the current one's, or (`epoch` below the
        current) a deposed one's, whose starts and ends have no effect."""
        epoch = epoch or self.leader_epoch
        deposed = epoch < self.leader_epoch
        if any(isinstance(e, StartTask) for e in effects) and not deposed:
            self.record["placement"] = {t: (st.vm, st.epoch) for t, st in self.core.tasks.items()}
            self.record["failures_recovered"] = self.core.failures_recovered
        order = {"leader_epoch": epoch, "leader": ["sim", epoch]}
        for effect in effects:
            if isinstance(effect, StartTask):
                if deposed:
                    self.say(f"deposed leader {epoch}: its start of {effect.task} is fenced")
                    continue
                self.at(self.now + self.rng.uniform(0.01, 0.1), "start", effect, epoch)
            elif isinstance(effect, SendSchedule):
                message = dict({"t": SCHEDULE, "job": JOB, "tasks": effect.entries}, **order)
                if effect.stopping:
                    message["stopping"] = True
                for address in effect.addresses:
                    if self.rng.random() >= self.k.leader_drop:
                        self.deliver(address, dict(message), reliable=True)
            elif isinstance(effect, StopAttempt):
                self.deliver(effect.address, dict({"t": STOP, "job": JOB,
                                                   "task": effect.task.to_wire(),
                                                   "attempt": effect.epoch}, **order),
                             reliable=True)
            elif deposed:
                if isinstance(effect, Done):      # it stops the tasks it knows of
                    for address in self.zombie_core.running().values():
                        self.deliver(address, dict({"t": STOP, "job": JOB}, **order),
                                     reliable=True)
                continue                          # its end is not recorded: fenced
            elif isinstance(effect, Say):
                self.say(f"leader: {effect.text}")
            elif isinstance(effect, Fail):
                self.failed = effect.reason
                self.say(f"leader: job failed: {effect.reason}")
            elif isinstance(effect, Done):
                self.done = True
                self.say("leader: job done")

    def on_leader_tick(self) -> None:
        self.leader(self.core.tick(self.now))
        self.at(self.now + LEADER_TURN, "leader_tick")

    def on_leader_fails(self) -> None:
        """A successor takes the job over from its record; the old leader may act on."""
        old_epoch = self.leader_epoch
        if self.k.leader_zombie:
            self.zombie_core, self.zombie_until = self.core, self.now + self.k.leader_zombie
            self.at(self.now + LEADER_TURN, "zombie_leader_tick", old_epoch)
        self.leader_epoch += 1
        running = [(a.spec.task, a.vm, a.spec.epoch, a.address) for a in self.attempts.values()
                   if a.alive and not a.zombie and a.vm in self.live and
                   a.frozen_until <= self.now]
        self.say(f"leader {old_epoch} fails; leader {self.leader_epoch} takes over, "
                 f"{len(running)} attempts run")
        self.core = JobCore(self.k.num_tasks, list(self.live), self.now, stall_timeout=60.0,
                            silence=5.0, following=self.k.follow,
                            epoch_floor=attempt_floor(self.leader_epoch), stages=self.stages)
        self.leader(self.core.adopt(self.now, dict(self.record["placement"]), running,
                                    set(self.record["sources_done"]),
                                    self.record["failures_recovered"], self.stopping,
                                    done_stats=self.record.get("done_stats")))

    def on_zombie_leader_tick(self, epoch: int) -> None:
        if self.now < self.zombie_until:
            self.leader(self.zombie_core.tick(self.now), epoch)
            self.at(self.now + LEADER_TURN, "zombie_leader_tick", epoch)

    def on_start(self, effect: StartTask, epoch: int = 1) -> None:
        if epoch < self.leader_epoch:         # its worker heard of the new leader
            self.say(f"start of {effect.task}@{effect.epoch} by deposed leader {epoch} refused")
            return
        if effect.vm not in self.live or self.rng.random() < self.k.start_fail:
            self.say(f"start of {effect.task}@{effect.epoch} on vm{effect.vm} fails")
            self.leader(self.core.start_failed(self.now, effect.task, effect.epoch, "refused"))
            return
        spec = TaskSpec(**self.templates[effect.task], epoch=effect.epoch,
                        leader_epoch=self.leader_epoch, first=effect.first)
        attempt = Attempt(spec, effect.vm)
        self.attempts[attempt.address] = attempt
        self.say(f"start {attempt.address} on vm{effect.vm}")
        self.leader(self.core.started(self.now, effect.task, effect.epoch, attempt.address))
        self.begin(attempt)

    # -- attempts ---------------------------------------------------------------------------

    def begin(self, a: Attempt) -> None:
        """As task.py starts: fence the log, read it, fence DEST (last stage or sink), build; a
        first attempt does none of it."""
        spec = a.spec
        log_file = task_log.log_name(JOB, spec.name)
        try:
            if not spec.first:
                self.hydfs.fence(log_file, spec.writer_key, spec.epoch)
            recovered = task_log.recover(b"" if spec.first else self.hydfs.read(log_file))
            if spec.first and self.hydfs.read(log_file):
                raise AssertionError(f"{a.address}: a first attempt found a log")
            sealed = (IdSet() if spec.first else
                      self.hydfs.fence(DEST, spec.writer_key, spec.epoch)) \
                if spec.writes_dest else None
            if spec.task.stage == 0:
                operator = load_operator(spec.operator, spec.arg) if spec.chained else None
                last = load_operator(spec.last_operator, "") if spec.sink else None
                a.core = SourceCore(spec, recovered, self.now, operator, rate_origin=0.0,
                                    last_operator=last, dest_sealed=sealed)
            else:
                operator = load_operator(spec.operator, spec.arg)
                a.core = OperatorCore(spec, recovered, self.now, operator, sealed)
        except Fenced:
            self.say(f"{a.address} fenced before it began")
            a.alive = False
            return
        self.execute(a, a.core.start(self.now))
        self.at(self.now, "turn", a.address)

    def on_turn(self, address: str) -> None:
        a = self.attempts[address]
        if not a.alive:
            return
        if a.frozen_until > self.now:
            self.at(a.frozen_until, "turn", address)
            return
        core = a.core
        if isinstance(core, SourceCore) and core.wants_data:
            part = a.spec.partition
            end = part.offset + part.length
            piece = self.rng.choice([64, 500, 4096])
            data = self.src[a.read_at:min(end, a.read_at + piece)]
            a.read_at += len(data)
            self.execute(a, core.feed(self.now, data, a.read_at >= end))
        elif isinstance(core, SourceCore) and core.batch_to_read is not None:
            whole = self._batch_bytes(core.batch_to_read)
            piece = self.rng.choice([64, 500, 4096])
            data = whole[a.batch_at:a.batch_at + piece]
            a.batch_at += len(data)
            last = a.batch_at >= len(whole)
            if last:
                a.batch_at = 0
            self.execute(a, core.feed_batch(self.now, data, last))
        elif isinstance(core, SourceCore) and core.poll_due(self.now):
            self.execute(a, core.offer(self.now, IdSet(self.settled.to_wire())))
        if a.alive and self.rng.random() < 0.5:      # its inbox may be empty now
            self.execute(a, core.idle(self.now))
        if a.alive:
            self.execute(a, core.tick(self.now))
        if a.alive:
            self.at(max(core.next_deadline(self.now), self.now + 0.001), "turn", address)

    def on_message(self, address: str, message: dict, payload: bytes) -> None:
        a = self.attempts.get(address)
        if a is None or not a.alive or a.core is None:
            return
        if a.frozen_until > self.now:      # it waits in its socket till the process resumes
            self.at(a.frozen_until, "message", address, message, payload)
            return
        self.execute(a, a.core.step(self.now, message, payload))
        if a.alive and a.core is not None and self.rng.random() < 0.3:   # the last in it
            self.execute(a, a.core.idle(self.now))

    def execute(self, a: Attempt, effects: list) -> None:
        spec = a.spec
        if effects and a.frozen_until > self.now:
            # paused midway through an earlier call's effects: these come after them, when
            # the process resumes (it runs its effects in order, on one thread)
            self.at(a.frozen_until, "resume", a.address, effects)
            return
        cut = self._freeze_point(effects) if a.vm in self.armed and not a.zombie else None
        for i, effect in enumerate(effects):
            if not a.alive:
                return
            if i == cut:    # paused midway: the rest is done when it resumes, late
                self._freeze(a.vm, type(effect).__name__)
                self.at(a.frozen_until, "resume", a.address, effects[i:])
                return
            if self.rng.random() < self.k.crash_per_effect and \
                    self.crashes[spec.task] < MAX_CRASHES_PER_TASK:
                self.crash(a, f"before {type(effect).__name__}")
                return
            a.core.contact(self.now)
            try:
                if isinstance(effect, AppendLog):
                    self.hydfs.append(task_log.log_name(JOB, spec.name),
                                      task_log.encode(effect.record),
                                      (spec.writer, effect.record["seq"]))
                elif isinstance(effect, AppendDest):
                    self.hydfs.append(DEST, effect.rows, (spec.writer, effect.seq))
            except Fenced as exc:
                self.say(f"{a.address} fenced: {exc}")
                a.alive = False
                return
            if isinstance(effect, Route):
                a.routes[effect.to] = effect.address
            elif isinstance(effect, Send):
                target = a.routes.get(effect.to)
                if target is not None:
                    self.deliver(target, dict(effect.message), effect.payload)
            elif isinstance(effect, Report):
                fields = effect.fields
                self.at(self.now + self.rng.uniform(0.001, 0.05), "report", spec.task,
                        spec.epoch, dict(fields["stats"]), bool(fields.get("source_done")),
                        a.leader_epoch)
            elif isinstance(effect, Lead):
                a.leader_epoch = effect.epoch
            elif isinstance(effect, Stop):
                self.say(f"{a.address} stops: {effect.reason}")
                a.alive = False
                if effect.lost:       # its process exits: its node tells the leader
                    self.at(self.now + self.rng.uniform(0.01, 0.2), "exited", spec.task,
                            spec.epoch)
                return

    def _freeze_point(self, effects: list) -> int | None:
        """Where a pause hurts: before a DEST append, else anywhere in a list that writes
        (a list that does not write is let through: the pause waits for one that does)."""
        writes = [i for i, e in enumerate(effects) if isinstance(e, (AppendLog, AppendDest))]
        if not writes:
            return None
        dest = [i for i, e in enumerate(effects) if isinstance(e, AppendDest)]
        if dest and self.rng.random() < 0.7:
            return dest[0]
        return self.rng.randrange(writes[0], len(effects))

    def on_resume(self, address: str, effects: list) -> None:
        self.execute(self.attempts[address], effects)

    def on_report(self, task: TaskId, epoch: int, stats: dict, source_done: bool,
                  leader_epoch: int = 1) -> None:
        if leader_epoch == self.leader_epoch:
            self.leader(self.core.report(self.now, task, epoch, stats, source_done))
            self.record["sources_done"] = set(self.core.sources_done)
            self.record["done_stats"] = self.core.done_stats()
        elif self.zombie_core is not None and self.now < self.zombie_until:
            self.leader(self.zombie_core.report(self.now, task, epoch, stats, source_done),
                        leader_epoch)      # a report to the old leader's address

    def deliver(self, address: str, message: dict, payload: bytes = b"",
                reliable: bool = False) -> None:
        if not reliable and self.rng.random() < self.k.drop:
            return
        copies = 2 if not reliable and self.rng.random() < self.k.duplicate else 1
        for _ in range(copies):
            self.at(self.now + self.rng.uniform(*self.k.latency), "message", address,
                    message, payload)

    # -- the nemesis ------------------------------------------------------------------------

    def crash(self, a: Attempt, why: str) -> None:
        self.crashes[a.spec.task] += 1
        a.alive = False
        self.say(f"{a.address} crashes {why}")
        self.at(self.now + self.rng.uniform(0.01, 0.2), "exited", a.spec.task, a.spec.epoch)

    def on_exited(self, task: TaskId, epoch: int) -> None:
        if self.rng.random() < self.k.exit_drop:
            self.say(f"the word that {task}@{epoch} exited is lost")
            return
        self.leader(self.core.exited(self.now, task, epoch, 1))

    def on_fault(self, kind: str, vm: str) -> None:
        busy = sorted({a.vm for a in self.attempts.values() if a.alive and not a.zombie})
        if busy and self.rng.random() < 0.8:       # mostly a worker that runs something
            vm = self.rng.choice(busy)
        victims = [a for a in self.attempts.values() if a.vm == vm and a.alive and not a.zombie]
        if kind == "crash":
            if victims:
                self.crash(self.rng.choice(victims), "(kill of its process)")
            return
        if kind == "freeze":
            self.armed[vm] = self.rng.uniform(0.3, 3.0)
            return
        if kind == "restart":     # killed and back before detection: a new member, same vm
            self.say(f"nemesis: vm{vm} restarted")
            for a in victims:
                a.alive = False
            self.leader(self.core.members(self.now, list(self.live), failed=[vm]))
            return
        if vm not in self.live or len(self.live) < 2:
            return
        self.say(f"nemesis: vm{vm} declared failed ({kind})")
        self.live.remove(vm)
        for a in victims:
            if kind == "zombie":
                a.zombie = True           # runs on: it was only cut off
                self.at(self.now + self.rng.uniform(0.2, 3.0), "zombie_ends", a.address)
            else:
                a.alive = False
        self.leader(self.core.members(self.now, list(self.live)))
        if kind in ("fail_and_return", "zombie"):
            self.at(self.now + self.rng.uniform(0.3, 2.0), "returns", vm)

    def _freeze(self, vm: str, before: str) -> None:
        """SIGSTOP of worker `vm` with its task processes, as one of them is about to
        write: the group declares it failed; its attempts resume later, as zombies, and
        finish what they were doing, late."""
        pause = self.armed.pop(vm)
        declared = vm in self.live and len(self.live) > 1
        self.say(f"nemesis: vm{vm} paused for {pause:.3f} s before {before}"
                 + (", declared failed" if declared else ""))
        for a in self.attempts.values():
            if a.vm == vm and a.alive:
                a.frozen_until = self.now + pause
                if declared:          # replaced meanwhile: when it resumes, a zombie
                    a.zombie = True
                    self.at(a.frozen_until + self.rng.uniform(0.05, 1.0), "zombie_ends",
                            a.address)
        if declared:
            self.live.remove(vm)
            self.leader(self.core.members(self.now, list(self.live)))
            self.at(self.now + pause + self.rng.uniform(0.1, 1.0), "returns", vm)

    def on_zombie_ends(self, address: str) -> None:
        a = self.attempts[address]
        if a.frozen_until > self.now:       # it learns nothing while it is paused
            self.at(a.frozen_until + self.rng.uniform(0.05, 0.5), "zombie_ends", address)
            return
        if a.alive:
            self.say(f"{address}: its node learns it was declared failed and kills it")
        a.alive = False

    def on_returns(self, vm: str) -> None:
        if vm not in self.live:
            self.live.append(vm)
            self.say(f"nemesis: vm{vm} rejoins")
            self.leader(self.core.members(self.now, list(self.live)))


def run(seed: int, follow: bool = False) -> Outcome:
    return World(seed, follow=follow).run()


def main(argv=None) -> int:
    """`python -m tests.stream_sim [--follow] SEED [SEED ...]`: replay seeds, print their
    transcripts (`--follow`: following jobs)."""
    import sys
    args = list(argv if argv is not None else sys.argv[1:])
    follow = "--follow" in args
    for seed in [int(a) for a in args if a != "--follow"]:
        outcome = run(seed, follow)
        print(outcome.explain() if not outcome.exact else
              f"seed {seed}: exact ({sum(outcome.got.values())} rows)\n"
              + "\n".join(outcome.transcript))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
