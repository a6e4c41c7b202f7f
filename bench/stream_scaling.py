"""The scaling part of the stream benchmark: more tasks, and ten times the lines.

On one fresh ten-node cluster, after the warm-up job:

- App 2 on the 1M-line file with NUM_TASKS 1, 3, 6 and 9 (`--task-counts`): more tasks
  must never make a job slower;
- both apps on the 1M-line file and on the `--big` one (10M lines by default, 2 GB; 0 skips
  it), and the single-process loop on both, all after the big file was made (three copies
  of 2 GB in the page cache slow this VM down by up to 2x: the ratio compares runs made in
  the same state): the time must grow no more than linearly (10M / 1M <= 11x), and no
  process may grow with the input: each run reports the largest RSS of a node process and
  of a task process.

Every output is checked against the oracle, as in the throughput part.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench import peers
from bench.harness import log, running_cluster, timed
from bench.stream_job import first_job, rainstorm_run
from bench.stream_measure import QuietGate, settle
from bench.stream_throughput import peer_run
from bench.stream_setup import APPS, LEADER, MEMBERSHIP, NODES, Oracle, data_file, size_label

BASE_LINES = 1_000_000
TASK_COUNTS = (1, 3, 6, 9)


class Scaling:
    def __init__(self, args, workdir: Path, oracle: Oracle, gate: QuietGate):
        self.args, self.workdir, self.oracle, self.gate = args, workdir, oracle, gate

    def run(self) -> dict:
        runs, files = [], {}
        sizes = [BASE_LINES] + ([self.args.big] if self.args.big else [])
        with running_cluster(self.workdir / "scaling", NODES, MEMBERSHIP,
                             attempts=3) as cluster:
            first_job(cluster, self.oracle)
            base = files[BASE_LINES] = self._create(cluster, BASE_LINES)
            for tasks in self.args.task_counts:
                for rep in range(self.args.reps):
                    runs.append(rainstorm_run(cluster, 2, BASE_LINES, rep,
                                              f"TrafficSigns_{BASE_LINES}",
                                              self.oracle.rows(base, 2), self.gate, tasks))
            for n in sizes[1:]:
                files[n] = self._create(cluster, n)
                for app in APPS:             # the oracle reads it before any timing
                    self.oracle.rows(files[n], app)
                for app in APPS:
                    expected = self.oracle.rows(files[n], app)
                    runs.append(rainstorm_run(cluster, app, n, 0, f"TrafficSigns_{n}",
                                              expected, self.gate))
                    runs.append(self._loop(cluster, app, n, files[n]))
                    runs.append(self._loop(cluster, app, BASE_LINES, base))
                    runs.append(dict(rainstorm_run(cluster, app, BASE_LINES, 0,  # same state
                                                   f"TrafficSigns_{BASE_LINES}",
                                                   self.oracle.rows(base, app), self.gate,
                                                   tag="_after_big"),
                                     after_big=True))
        return {"runs": runs, "task_counts": list(self.args.task_counts),
                "big": self.args.big, "base": BASE_LINES, "reps": self.args.reps}

    def _create(self, cluster, n: int) -> Path:
        """SRC of n lines in HyDFS, its written pages flushed (writing 3 copies of 2 GB
        leaves the kernel gigabytes to write back, which would slow the next runs)."""
        path, _ = data_file(n)
        create_s, _ = timed(cluster.query, LEADER, "create", str(path), f"TrafficSigns_{n}",
                            timeout=1800)
        os.sync()
        log(f"{size_label(n)}: created in HyDFS in {create_s:.2f} s")
        settle(cluster, timeout=10)
        return path

    def _loop(self, cluster, app: int, n: int, path: Path) -> dict:
        return peer_run(cluster, self.gate, self.oracle, self.workdir, self.args.peers_venv,
                        peers.PLAIN, app, n, 0, path)
