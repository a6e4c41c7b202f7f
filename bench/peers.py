"""The engines a user would pick instead of RainStorm, on the two traffic-signs applications.

RainStorm's stream benchmark (bench/stream_bench.py) runs these on the same file in the same
run, checks every output against the oracle (bench/reference_apps.py) and prints ratios.

- `plain`: one process, one `for line in file` loop, with the oracle's own per-line functions
  (`reference_apps.parse`, the same header and 20-field rule, rows written by csv.writer):
  the "no distribution" bound. Stdlib only; runs with any Python 3.10+.
- `bytewax`: a Bytewax dataflow. Its source cuts the file into 2 byte ranges at line
  boundaries (so 2 workers both read); run with 1 worker, or as 2 cooperating processes.
  App 1 is one `filter_map`; App 2 is `filter_map` (record -> Category) -> `key_on` ->
  `stateful_map` (running count), so like RainStorm it emits one row per kept record.
- `spark`: PySpark Structured Streaming, `readStream.text(DIR)` (DIR holds the one CSV file)
  with `trigger(availableNow=True)`, so the whole file is one micro-batch; the CSV is parsed
  in the JVM (`from_csv`, RFC 4180 quotes). App 2 is `groupBy(Category).count()` in update
  mode, so it emits one row per changed key per micro-batch: only the final counts compare.

Bytewax and PySpark live in their own virtual environment, never in the project's:

    python3 -m venv /tmp/rainstorm-peers && /tmp/rainstorm-peers/bin/pip install bytewax==0.21.1 pyspark==4.3.0

(PySpark needs Java 17: JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64.) By hand, from the
repository root:

    python -m bench.peers plain {1|2} IN.csv OUT_DIR --arg ARG
    VENV/bin/python -m bytewax.run "bench.peers:bytewax_flow(APP, 'IN.csv', 'OUT_DIR', 'ARG')" -w 1
    VENV/bin/python -m bench.peers spark {1|2} IN_DIR OUT_DIR --arg ARG [--master local[2]]

Each writes its output rows (`key,value`, csv.writer quoting) into files in OUT_DIR; files
whose names start with `_` or `.` are bookkeeping (Spark's) and not output. `run_peer` runs
one configuration as a subprocess and times it; `check_output` compares OUT_DIR with the
oracle.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):                  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import reference_apps  # noqa: E402
from bench.gen_traffic_signs import HEADER  # noqa: E402
from bench.reference_apps import (HEADER_PREFIX, I_CATEGORY, I_OBJECTID, I_SIGN_POST,  # noqa: E402
                                  I_SIGN_TYPE, NUM_FIELDS)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_VENV = Path(os.environ.get("RAINSTORM_PEERS_VENV", "/tmp/rainstorm-peers"))
VENV_SETUP = ("python3 -m venv /tmp/rainstorm-peers && "
              "/tmp/rainstorm-peers/bin/pip install bytewax==0.21.1 pyspark==4.3.0")
JAVA_HOME = "/usr/lib/jvm/java-17-openjdk-amd64"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_stat_fields():
    """(pid, fields of /proc/PID/stat after the command name) of every live process."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                yield int(name), f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
SPARK_COLUMNS = HEADER.split(",")


# -- the per-line functions (the oracle's rules, one line at a time) --------------------------

def record(line: str):
    """The parsed record of one line, or None for the header and unparsable lines."""
    if line.startswith(HEADER_PREFIX):
        return None
    try:
        fields = reference_apps.parse(line)
    except ValueError:
        return None
    return fields if len(fields) == NUM_FIELDS else None


def app1(line: str, pattern: str):
    """App 1: (OBJECTID, Sign_Type) of a line whose raw text contains pattern, else None."""
    if pattern not in line:
        return None
    r = record(line)
    return None if r is None else (r[I_OBJECTID], r[I_SIGN_TYPE])


def app2_key(line: str, post: str):
    """App 2: the Category of a record whose Sign_Post equals post exactly, else None."""
    r = record(line)
    return r[I_CATEGORY] if r is not None and r[I_SIGN_POST] == post else None


# -- plain: the single-process loop ---------------------------------------------------------

def plain(app: int, inp: str, out_dir: str, arg: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(inp, newline="", encoding="utf-8") as f, \
            open(os.path.join(out_dir, "part-0"), "w", newline="", encoding="utf-8") as o:
        write = csv.writer(o, lineterminator="\n").writerow
        if app == 1:
            for line in f:
                row = app1(line.rstrip("\n"), arg)
                if row is not None:
                    write(row)
        else:
            counts = {}
            for line in f:
                key = app2_key(line.rstrip("\n"), arg)
                if key is not None:
                    n = counts[key] = counts.get(key, 0) + 1
                    write((key, n))          # one running-count row per kept record


# -- bytewax --------------------------------------------------------------------------------

def bytewax_flow(app: int, inp: str, out_dir: str, arg: str, parts: int = 2, batch: int = 1000):
    """The Bytewax dataflow of App 1 or App 2 (imports bytewax: peers venv only)."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
    from bytewax.outputs import DynamicSink, StatelessSinkPartition

    class RangePartition(StatefulSourcePartition):
        """Lines of byte range i of n; a line belongs to the range holding its first byte."""

        def __init__(self, i: int):
            size = os.path.getsize(inp)
            self._f = open(inp, "rb")
            self._end = size * (i + 1) // parts
            start = size * i // parts
            if start:
                self._f.seek(start - 1)
                self._f.readline()
            self._pos = self._f.tell()

        def next_batch(self):
            if self._pos >= self._end:
                raise StopIteration()
            out, readline = [], self._f.readline
            while len(out) < batch and self._pos < self._end:
                b = readline()
                if not b:
                    self._pos = self._end
                    break
                self._pos += len(b)
                out.append(b.decode("utf-8").rstrip("\n"))
            return out

        def snapshot(self):
            return None

        def close(self):
            self._f.close()

    class RangeSource(FixedPartitionedSource):
        def list_parts(self):
            return [str(i) for i in range(parts)]

        def build_part(self, step_id, for_part, resume_state):
            return RangePartition(int(for_part))

    class RowsPartition(StatelessSinkPartition):
        def __init__(self, path: str):
            self._f = open(path, "w", newline="", encoding="utf-8")
            self._write = csv.writer(self._f, lineterminator="\n").writerows

        def write_batch(self, items):
            self._write(items)

        def close(self):
            self._f.close()

    class RowsSink(DynamicSink):
        def build(self, step_id, worker_index, worker_count):
            os.makedirs(out_dir, exist_ok=True)
            return RowsPartition(os.path.join(out_dir, f"part-{worker_index}"))

    def running_count(state, _):
        state = (state or 0) + 1
        return state, state

    flow = Dataflow(f"traffic_signs_app{app}")
    lines = op.input("in", flow, RangeSource())
    if app == 1:
        rows = op.filter_map("app1", lines, lambda line: app1(line, arg))
    else:
        categories = op.filter_map("app2_key", lines, lambda line: app2_key(line, arg))
        keyed = op.key_on("key", categories, lambda k: k)
        rows = op.stateful_map("running_count", keyed, running_count)
    op.output("out", rows, RowsSink())
    return flow


# -- spark ----------------------------------------------------------------------------------

def spark(app: int, in_dir: str, out_dir: str, arg: str, master: str) -> None:
    """App 1 or 2 as a Structured Streaming query over the files of in_dir (peers venv only)."""
    t0 = time.time()
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F
    t_import = time.time()
    schema = ", ".join(f"`{c}` STRING" for c in SPARK_COLUMNS)
    ckpt = out_dir.rstrip("/") + ".ckpt"
    for d in (out_dir, ckpt):
        shutil.rmtree(d, ignore_errors=True)
    session = (SparkSession.builder.master(master).appName(f"traffic_signs_app{app}")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.streaming.schemaInference", "false")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    t_session = time.time()
    lines = session.readStream.text(in_dir).filter(~F.col("value").startswith(HEADER_PREFIX))
    opts = {"escape": '"'}
    if app == 1:
        recs = lines.filter(F.col("value").contains(arg)) \
            .select(F.from_csv("value", schema, opts).alias("r"))
        rows = recs.select(F.concat_ws(",", "r.OBJECTID", "r.Sign_Type").alias("value"))
        writer = rows.writeStream.format("text").option("path", out_dir)
    else:
        os.makedirs(out_dir)
        recs = lines.select(F.from_csv("value", schema, opts).alias("r")).select("r.*")
        counts = recs.filter(F.col("Sign_Post") == arg).groupBy("Category").count()

        def write_batch(df, batch_id):
            with open(os.path.join(out_dir, f"batch-{batch_id}"), "w", newline="") as f:
                csv.writer(f, lineterminator="\n").writerows(
                    (r["Category"], r["count"]) for r in df.collect())

        writer = counts.writeStream.outputMode("update").foreachBatch(write_batch)
    query = writer.option("checkpointLocation", ckpt).trigger(availableNow=True).start()
    query.awaitTermination()
    t_end = time.time()
    progress = query.recentProgress
    print(json.dumps({"import_s": round(t_import - t0, 3),
                      "session_s": round(t_session - t_import, 3),
                      "query_s": round(t_end - t_session, 3), "batches": len(progress),
                      "input_rows": sum(p["numInputRows"] for p in progress)}), flush=True)
    session.stop()
    shutil.rmtree(ckpt, ignore_errors=True)


# -- running and checking peers (used by stream_bench) ---------------------------------------

@dataclass(frozen=True)
class Peer:
    name: str            # e.g. "bytewax-w1"
    engine: str          # plain, bytewax, spark
    processes: int = 1   # bytewax: cooperating processes of 1 worker each
    master: str = ""     # spark master
    micro_batch: bool = False   # App 2 emits final counts per micro-batch, not every update


PLAIN = Peer("python-loop", "plain")
BYTEWAX_W1 = Peer("bytewax-w1", "bytewax")
BYTEWAX_P2 = Peer("bytewax-p2", "bytewax", processes=2)
SPARK_L2 = Peer("spark-local2", "spark", master="local[2]", micro_batch=True)
ALL_PEERS = (PLAIN, BYTEWAX_W1, BYTEWAX_P2, SPARK_L2)


def venv_python(venv: Path = DEFAULT_VENV) -> Path:
    return Path(venv) / "bin" / "python"


def available(venv: Path = DEFAULT_VENV) -> tuple[list[Peer], list[str]]:
    """(peers that can run here, notes on those that cannot)."""
    peers, notes = [PLAIN], []
    py = venv_python(venv)
    if not py.exists():
        return peers, [f"Bytewax and PySpark skipped: no peers venv at {venv} "
                       f"(set it up with `{VENV_SETUP}`, or `make bench-peers-venv`)"]

    def importable(module: str) -> bool:
        return subprocess.run([str(py), "-c", f"import {module}"], capture_output=True,
                              timeout=120).returncode == 0
    if importable("bytewax"):
        peers += [BYTEWAX_W1, BYTEWAX_P2]
    else:
        notes.append(f"Bytewax skipped: {py} cannot import bytewax")
    if not importable("pyspark"):
        notes.append(f"PySpark skipped: {py} cannot import pyspark")
    elif not Path(JAVA_HOME, "bin", "java").exists():
        notes.append(f"PySpark skipped: no Java 17 at {JAVA_HOME}")
    else:
        peers.append(SPARK_L2)
    return peers, notes


def _env() -> dict:
    return dict(os.environ, JAVA_HOME=JAVA_HOME, SPARK_LOCAL_IP="127.0.0.1",
                PYTHONHASHSEED="0", PYTHONPATH=str(REPO))


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _listening_ports() -> set[int]:
    """Local TCP ports in LISTEN state on this machine (from /proc/net/tcp)."""
    ports = set()
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    except OSError:
        pass
    return ports


def _wait_listening(ports: list[int], procs, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not set(ports) <= _listening_ports() and time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return
        time.sleep(0.005)


def commands(peer: Peer, app: int, inp: Path, in_dir: Path, out: Path, arg: str,
             venv: Path = DEFAULT_VENV, ports: list[int] = ()) -> list[list[str]]:
    """The command lines (one per process) that run `peer` (`ports`: one per process)."""
    if peer.engine == "plain":
        return [[sys.executable, "-m", "bench.peers", "plain", str(app), str(inp), str(out),
                 "--arg", arg]]
    py = str(venv_python(venv))
    if peer.engine == "spark":
        return [[py, "-m", "bench.peers", "spark", str(app), str(in_dir), str(out), "--arg", arg,
                 "--master", peer.master]]
    flow = f"bench.peers:bytewax_flow({app}, {str(inp)!r}, {str(out)!r}, {arg!r})"
    if peer.processes == 1:
        return [[py, "-m", "bytewax.run", flow, "-w", "1"]]
    addresses = ";".join(f"127.0.0.1:{p}" for p in ports or _free_ports(peer.processes))
    return [[py, "-m", "bytewax.run", flow, "-i", str(i), "-a", addresses]
            for i in range(peer.processes)]


def run_peer(peer: Peer, app: int, inp: Path, in_dir: Path, out: Path, arg: str,
             venv: Path = DEFAULT_VENV, timeout: float = 600) -> dict:
    """Run one configuration; wall seconds (process start-up included), exit status, extras."""
    for d in (out, Path(str(out) + ".ckpt")):
        shutil.rmtree(d, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    ports = _free_ports(peer.processes) if peer.processes > 1 else []
    cmds = commands(peer, app, inp, in_dir, out, arg, venv, ports)
    logs = [open(f"{out}.{i}.stdout", "w+") for i in range(len(cmds))]
    start = time.perf_counter()
    procs = []
    meter = SessionCpu(procs)
    for i, (cmd, f) in enumerate(zip(cmds, logs)):
        if i:       # Bytewax process i dials 0..i-1, sleeping 1 s after a refusal: start
            _wait_listening(ports[:i], procs)       # it once they listen
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=f,
                                      stderr=subprocess.STDOUT, text=True,
                                      start_new_session=True))
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, timeout - (time.perf_counter() - start))))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    wall = time.perf_counter() - start
    meter.stop()
    extra, tail = {}, ""
    for f in logs:
        f.seek(0)
        text = f.read()
        f.close()
        for line in text.splitlines():
            if line.startswith("{"):
                try:
                    extra.update(json.loads(line))
                except ValueError:
                    pass
        if any(codes):
            tail += text[-600:]
    rc = next((c for c in codes if c), 0)
    return {"wall_s": wall, "rc": rc, "cpu_s": round(meter.seconds(), 2), **extra,
            **({"error": tail.strip()} if rc else {})}


class SessionCpu(threading.Thread):
    """CPU seconds used by every process in the sessions the given processes lead (each peer
    process starts a session, so this includes the JVM that PySpark starts), sampled every
    50 ms: a process that lives less than that between two samples may be missed."""

    def __init__(self, procs: list):
        super().__init__(daemon=True)
        self.procs = procs
        self.used: dict[int, float] = {}
        self._done = threading.Event()
        self.start()

    def _sample(self) -> None:
        sessions = {p.pid for p in self.procs}
        if not sessions:
            return
        for pid, fields in proc_stat_fields():
            if int(fields[3]) in sessions:
                self.used[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK

    def run(self) -> None:
        while not self._done.wait(0.05):
            self._sample()

    def stop(self) -> None:
        self._sample()
        self._done.set()
        self.join()

    def seconds(self) -> float:
        return sum(self.used.values())


def output_files(out: Path) -> list[Path]:
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir()
                  if p.is_file() and not p.name.startswith(("_", ".")))


def output_rows(out: Path) -> Counter:
    rows = Counter()
    for path in output_files(out):
        rows.update(reference_apps.output_rows(str(path)))
    return rows


def final_counts(rows: Counter) -> dict:
    """Category -> the largest count among rows `Category,count` (counts only grow)."""
    best = {}
    for category, count in csv.reader(rows.elements()):
        best[category] = max(best.get(category, 0), int(count))
    return best


def check_output(peer: Peer, app: int, out: Path, expected_rows: Counter,
                 expected_counts: dict | None) -> tuple[bool, str]:
    """(ok, one line): App 1 multiset; App 2 rows 1..N exactly once (record-at-a-time
    engines) or the final counts (micro-batch engines)."""
    rows = output_rows(out)
    if app == 2 and peer.micro_batch:
        got = final_counts(rows)
        if got == expected_counts:
            return True, f"OK final counts of {len(got)} categories ({len(rows)} rows)"
        return False, f"MISMATCH final counts {got} != {expected_counts}"
    return reference_apps.verdict(expected_rows, rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Run one peer engine on a traffic-signs app.")
    ap.add_argument("engine", choices=("plain", "spark"))
    ap.add_argument("app", type=int, choices=(1, 2))
    ap.add_argument("inp", help="the CSV file (plain) or a directory holding it (spark)")
    ap.add_argument("out", help="output directory")
    ap.add_argument("--arg", required=True, help="App 1 pattern or App 2 Sign_Post value")
    ap.add_argument("--master", default="local[2]")
    a = ap.parse_args(argv)
    if a.engine == "plain":
        plain(a.app, a.inp, a.out, a.arg)
    else:
        spark(a.app, a.inp, a.out, a.arg, a.master)
    return 0


if __name__ == "__main__":
    sys.exit(main())
