"""The throughput part of the stream benchmark: RainStorm against its peers, file by file.

On one ten-node cluster, after an idle-CPU sample and the warm-up job: each size's file is
created in HyDFS once (timed apart), then per app and repetition one RainStorm run and,
interleaved with it, one run of every peer engine (bench/peers.py) on the same file, each
behind the quiet-machine gate and each output checked against the oracle.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bench import peers
from bench.harness import log, running_cluster, timed
from bench.stream_job import first_job, rainstorm_run
from bench.stream_measure import OthersMeter, QuietGate, idle_cpu, settle
from bench.stream_setup import (APPS, LEADER, MEMBERSHIP, NODES, Oracle, data_file,
                                size_label, spark_dir)


class Throughput:
    """The throughput part, for the sizes and repetitions in `args` (see stream_bench)."""

    def __init__(self, args, workdir: Path, oracle: Oracle, gate: QuietGate):
        self.args, self.workdir, self.oracle, self.gate = args, workdir, oracle, gate
        if args.peers == "none":
            self.peers = [peers.PLAIN]
            self.peer_notes = ["Bytewax and PySpark not run (--peers none)"]
        else:
            self.peers, self.peer_notes = peers.available(args.peers_venv)
        for note in self.peer_notes:
            log(note)

    def run(self) -> dict:
        files, runs = [], []
        with running_cluster(self.workdir / "cluster", NODES, MEMBERSHIP,
                             attempts=3) as cluster:
            idle = idle_cpu(cluster)
            log(f"cluster up; idle, its ten nodes use {idle:.1%} of a core")
            cold = first_job(cluster, self.oracle)
            for n in self.args.sizes:
                path, gen_s = data_file(n)
                src = f"TrafficSigns_{n}"
                create_s, _ = timed(cluster.query, LEADER, "create", str(path), src,
                                    timeout=600)
                info = {"n": n, "bytes": path.stat().st_size, "generate_s": round(gen_s, 2),
                        "create_s": round(create_s, 3),
                        "expected_rows": {str(app): sum(self.oracle.rows(path, app).values())
                                          for app in APPS}}
                files.append(info)
                log(f"{size_label(n)}: {info['bytes']:,} bytes, created in HyDFS in "
                    f"{create_s:.2f} s")
                settle(cluster, timeout=10)
                for app in APPS:
                    expected = self.oracle.rows(path, app)
                    for rep in range(self.args.reps):
                        runs.append(rainstorm_run(cluster, app, n, rep, src, expected,
                                                  self.gate))
                        for peer in self.peers:
                            runs.append(self._peer_run(cluster, peer, app, n, rep, path))
        return {"idle_cluster_cpu": idle, "first_job": cold, "files": files, "runs": runs,
                "reps": self.args.reps,
                "peers": [p.name for p in self.peers], "peer_notes": self.peer_notes}

    def _peer_run(self, cluster, peer: peers.Peer, app: int, n: int, rep: int,
                  path: Path) -> dict:
        return peer_run(cluster, self.gate, self.oracle, self.workdir, self.args.peers_venv,
                        peer, app, n, rep, path)


def peer_run(cluster, gate: QuietGate, oracle: Oracle, workdir: Path, venv: Path,
             peer: peers.Peer, app: int, n: int, rep: int, path: Path) -> dict:
    """One checked run of a peer engine on `path` behind the quiet gate (its output, in
    `workdir`, removed after)."""
    out = workdir / "peers" / f"{peer.name}-app{app}-{n}"
    in_dir = spark_dir(path) if peer.engine == "spark" else path.parent
    gate.wait(cluster)
    others = OthersMeter(cluster).start()
    r = peers.run_peer(peer, app, path, in_dir, out, APPS[app][2], venv)
    r["others_cpu"] = others.stop(r.get("cpu_s", 0.0))
    ok, verdict = (False, f"exit status {r['rc']}: {r.get('error', '')[-300:]}") if r["rc"] \
        else peers.check_output(peer, app, out, oracle.rows(path, app),
                                oracle.counts(path) if app == 2 and peer.micro_batch
                                else None)
    shutil.rmtree(out, ignore_errors=True)
    rec = {"engine": peer.name, "app": app, "n": n, "rep": rep,
           "seconds": round(r.pop("wall_s"), 3), "ok": ok, "verdict": verdict, **r}
    log(f"{peer.name} app{app} {size_label(n)} rep {rep}: {rec['seconds']:.2f} s, {verdict}")
    return rec
