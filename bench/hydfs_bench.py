"""HyDFS benchmark on real node processes on 127.0.0.1 (`make bench-hydfs`).

Every number comes from real `rainstorm.py` node processes started by
`cluster.local_cluster.LocalCluster` with fast membership timings (period 0.5 s, ping timeout
0.5 s, suspicion on with a 2 s timeout). Operations are the REPL commands, sent over each
node's TCP port with `LocalCluster.query`, so a latency includes the control round trip
(measured on its own as "ctl round trip"). MB means 2**20 bytes throughout.

Parts (select with `--parts`):

- throughput: `create` and `get` of 1, 10 and 100 MB files on a 10-node cluster, issued from
  nodes that are not replicas of the file (so the bytes cross a socket): the median of 3
  creates (3 files) and of 9 gets (3 distinct client nodes per file, so none is served from
  a cache; `--quick`: 2 and 4). "get" runs with the default client cache, so each get is a
  miss that also keeps a copy in memory; "get, cache off" repeats it on a second cluster
  with `cache_mb = 0` (bytes moved, nothing kept). The reference is a raw Python socket copy
  of the same bytes over loopback in this process (sender `sendall`, receiver `recv_into` a
  1 MB buffer), also with the receiver writing a local file, and with a final fsync; median
  of 9. The headline ratio is HyDFS MB/s over raw-socket MB/s (target: get >= 50 %); a get
  also writes a local file, so get over "raw + file" is shown too. Every timed transfer
  starts after `os.sync()`, so one run's dirty pages do not slow the next, and every file
  written is a new one (`fresh_path`). "extra pulls" counts `REPLICATE` log lines for these
  files: a replica's re-replicator pulling a file that the create is pushing to it anyway.
- append: p50/p99 latency of a few hundred 4 KB appends from one client node.
- merge: 1000 appends (4 KB or 40 KB) to a fresh file from 1, 2, 5 or 10 client nodes at
  once (one thread per client node, the appends split between them), then `merge`: the
  command's wall time and the `seconds` the coordinator reports; median of 3 files each.
- rerep: per file size, a fresh 10-node cluster, one file whose replicas exclude the
  introducer 01, kill -9 of two of its replicas; kill -> first `FAIL` log line about a
  victim on any survivor (detection), and detection -> the last `REPLICATE` log line of the
  file on its new replicas (re-replicated), confirmed by polling `store` on them.
- cache: `get` latency of 4 KB files on a 4-node cluster whose `cache_mb` is 0, 10, 20, 50
  and 100 % of the working set (one cluster per size), reads keyed uniformly and Zipfian
  (a = 1.2, rank 0 most popular), read-only and with 10 % appends from the same client
  (which invalidate its cache entry). A cached entry is served for 5 s without asking a
  replica, then revalidated, so "cached" counts both fresh hits and not-modified answers.
  The first ops of each workload warm the cache and are not measured.

Output: a markdown table per part on stdout and in `--out`.md, raw numbers in `--out`.json
(default bench/results/hydfs for a full run of every part; a `--quick` run or a subset of
`--parts` writes nothing unless `--out` is given). Scratch
data lives in a temporary directory that is removed at the end (`--keep` keeps it).
"""

from __future__ import annotations

import argparse
import bisect
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from itertools import accumulate
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.report import write_report  # noqa: E402
from cluster.local_cluster import CommandFailed, LocalCluster, wait_until  # noqa: E402
from hydfs.ring import Ring  # noqa: E402

MB = 1 << 20
KB = 1 << 10
RING_BITS = 11
REPLICAS = 3
MEMBERSHIP = {"protocol_period": 0.5, "ping_timeout": 0.5, "suspicion": "on",
              "suspicion_timeout": 2.0}
RAW_CHUNK = MB
SOCK_BUF = 4 * MB
RAW_REPS = 9
ZIPF_A = 1.2
SEED = 1234
PARTS = ("throughput", "append", "merge", "rerep", "cache")
DEFAULT_OUT = REPO / "bench" / "results" / "hydfs"


@dataclass(frozen=True)
class Settings:
    throughput_mb: tuple = (1, 10, 100)
    throughput_reps: int = 3
    appends: int = 500
    merge_total: int = 1000
    merge_clients: tuple = (1, 2, 5, 10)
    merge_kb: tuple = (4, 40)
    merge_reps: int = 3
    rerep_mb: tuple = (1, 5, 20, 50, 100)
    cache_files: int = 200
    cache_fractions: tuple = (0.0, 0.1, 0.2, 0.5, 1.0)
    cache_ops: int = 1000
    cache_warmup: int = 200
    cache_nodes: int = 4


QUICK = Settings(throughput_mb=(1, 10), throughput_reps=2, appends=50, merge_total=100,
                 merge_clients=(1, 10), merge_reps=1, rerep_mb=(1, 5), cache_files=50,
                 cache_fractions=(0.0, 0.5, 1.0), cache_ops=150, cache_warmup=30)


# -- small helpers ----------------------------------------------------------------------------

def code_version() -> str:
    """The git commit of the code under test, "+changes" if hydfs/ or cluster/ differ."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        dirty = git("status", "--porcelain", "--", "hydfs", "cluster")
        return git("rev-parse", "--short", "HEAD") + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks."""
    ordered = sorted(samples)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def latency_stats(seconds: list[float]) -> dict:
    """mean/p50/p99/max in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "mean_ms": statistics.fmean(ms), "p50_ms": percentile(ms, 50),
            "p99_ms": percentile(ms, 99), "max_ms": max(ms)}


def settle() -> None:
    """Write back dirty pages, so that one measurement's writes do not slow the next."""
    os.sync()


def timed(fn, *args, **kwargs):
    """(seconds, result) of fn(*args, **kwargs)."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def timed_settled(fn, *args, **kwargs):
    """`timed`, started with no dirty pages pending (for bulk transfers)."""
    settle()
    return timed(fn, *args, **kwargs)


def random_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        for offset in range(0, size, 16 * MB):
            f.write(os.urandom(min(16 * MB, size - offset)))
    return path


def name_avoiding(ring: Ring, prefix: str, avoid: set[str]) -> str:
    """The first `prefix`, `prefix-1`, ... whose replicas include none of `avoid`."""
    for i in range(10000):
        name = prefix if i == 0 else f"{prefix}-{i}"
        if not avoid & set(ring.replicas(name, REPLICAS)):
            return name
    raise RuntimeError(f"no file name avoids {sorted(avoid)}")


def non_replicas(cluster: LocalCluster, name: str) -> list[str]:
    replicas = Ring(cluster.vms, RING_BITS).replicas(name, REPLICAS)
    return [vm for vm in cluster.vms if vm not in replicas]


def holds(cluster: LocalCluster, vm: str, name: str) -> bool:
    return name in {f["name"] for f in cluster.query(vm, "store", timeout=5)["files"]}


@contextmanager
def running_cluster(root: Path, n: int, hydfs: dict | None = None):
    """A started LocalCluster; stopped, and its data directory removed, on exit."""
    cluster = LocalCluster(root, n, membership=MEMBERSHIP, hydfs=hydfs or {})
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.close()
        shutil.rmtree(root / "data", ignore_errors=True)


def run_threads(jobs: list) -> None:
    threads = [threading.Thread(target=job, daemon=True) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# -- the raw socket reference -----------------------------------------------------------------

def raw_socket_copy(data: bytes, sink: Path | None = None, fsync: bool = False) -> float:
    """Seconds to copy `data` over a fresh loopback TCP connection (optionally into `sink`)."""
    finished = {}
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCK_BUF)

        def receive():
            conn, _ = server.accept()
            with conn, (open(sink, "wb") if sink else nullcontext()) as f:
                buf = memoryview(bytearray(RAW_CHUNK))
                left = len(data)
                while left:
                    n = conn.recv_into(buf, min(RAW_CHUNK, left))
                    if not n:
                        raise ConnectionError("sender closed early")
                    if f is not None:
                        f.write(buf[:n])
                    left -= n
                if f is not None and fsync:
                    f.flush()
                    os.fsync(f.fileno())
            finished["at"] = time.perf_counter()
        receiver = threading.Thread(target=receive, daemon=True)
        receiver.start()
        start = time.perf_counter()
        with socket.create_connection(server.getsockname()) as sender:
            sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCK_BUF)
            sender.sendall(data)
        receiver.join()
    return finished["at"] - start


def raw_references(path: Path, scratch: Path) -> dict:
    """MB/s of the raw copy, the copy into a file, and the copy into a file plus fsync.
    Each copy into a file writes a new one, as a get does (see `fresh_path`)."""
    data = path.read_bytes()
    mb = len(data) / MB
    out = {}
    for label, kwargs in (("raw", {}), ("raw_file", {}), ("raw_file_fsync", {"fsync": True})):
        runs = []
        for rep in range(RAW_REPS):
            sink = fresh_path(scratch / f"raw-sink-{rep}") if label != "raw" else None
            runs.append(timed_settled(raw_socket_copy, data, sink=sink, **kwargs)[0])
            if sink is not None:
                sink.unlink()
        out[label] = mb / statistics.median(runs)
    return out


def fresh_path(path: Path) -> Path:
    """`path`, with no file there. Replacing an existing file costs far more than writing a new
    one on ext4 (a rename over a file, or a truncation, makes it allocate and start writing
    back the new data at once: auto_da_alloc), and that is the file system, not the protocol,
    so the timed copies and gets all write new files; the old ones go before `settle`."""
    path.unlink(missing_ok=True)
    return path


# -- the benchmark ------------------------------------------------------------------------------

class Bench:
    def __init__(self, settings: Settings, workdir: Path):
        self.s = settings
        self.workdir = workdir
        self._shared = None
        self._uncached = None
        self._exit = ExitStack()

    def shared(self) -> LocalCluster:
        """The 10-node cluster that throughput, append and merge share (started once)."""
        if self._shared is None:
            self._shared = self._exit.enter_context(running_cluster(self.workdir / "shared", 10))
        return self._shared

    def uncached(self) -> LocalCluster:
        """A 10-node cluster with the client cache off (cache_mb = 0), for gets that only
        move bytes: with the cache on, a miss also keeps a copy in fresh memory."""
        if self._uncached is None:
            self._uncached = self._exit.enter_context(
                running_cluster(self.workdir / "uncached", 10, hydfs={"cache_mb": 0}))
        return self._uncached

    def close(self) -> None:
        self._exit.close()

    # -- part 1: create / get throughput ----------------------------------------------------

    def part_throughput(self) -> dict:
        cluster = self.shared()
        rows = []
        for mb in self.s.throughput_mb:
            src = random_file(cluster.root / f"src-{mb}", mb * MB)
            started = time.time()
            row = {"mb": mb, **raw_references(src, cluster.root)}
            row.update(self._create_and_get(cluster, src, mb))
            plain = self._create_and_get(self.uncached(), src, mb)
            row.update(get_uncached=plain["get"], get_uncached_s=plain["get_s"])
            row["create_ratio"] = row["create"] / row["raw"]
            row["get_ratio"] = row["get"] / row["raw"]
            row["get_uncached_ratio"] = row["get_uncached"] / row["raw"]
            row["get_file_ratio"] = row["get"] / row["raw_file"]
            # A create pushes the file to its replicas; a replicator that pulls it as well
            # (it saw the new file in the primary's manifest) doubles the work.
            row["extra_pulls"] = len(cluster.log_events(cluster.vms,
                                                rf"^REPLICATE tput-{mb}-", started))
            src.unlink()
            log(f"throughput {mb} MB: raw {row['raw']:.0f} MB/s, create {row['create']:.0f}, "
                f"get {row['get']:.0f} MB/s, with the cache off {row['get_uncached']:.0f}")
            rows.append(row)
        return {"rows": rows}

    def _create_and_get(self, cluster: LocalCluster, src: Path, mb: int) -> dict:
        """Create the files, then get each from client nodes that are not its replicas
        (creates first: on this VM, the first get after a create, writing a new file while
        ext4 still digests the create's 3 x fsync'd copies, is sometimes 3x slower)."""
        names = [f"tput-{mb}-{rep}" for rep in range(self.s.throughput_reps)]
        creates, gets = [], []
        for name in names:
            creator = non_replicas(cluster, name)[0]
            creates.append(timed_settled(cluster.query, creator, "create", str(src), name,
                                         timeout=600)[0])
        for name in names:
            for client in non_replicas(cluster, name)[1:1 + self.s.throughput_reps]:
                out = fresh_path(cluster.root / "get-out")
                seconds, doc = timed_settled(cluster.query, client, "get", name, str(out),
                                             timeout=600)
                assert not doc["cached"] and doc["size"] == mb * MB, doc
                gets.append(seconds)
                out.unlink()
        return {"create": mb / statistics.median(creates), "get": mb / statistics.median(gets),
                "create_s": creates, "get_s": gets}

    # -- part 2: append latency -------------------------------------------------------------

    def part_append(self) -> dict:
        cluster = self.shared()
        name = "append-latency"
        client = non_replicas(cluster, name)[0]
        empty = random_file(cluster.root / "empty", 0)
        chunk = random_file(cluster.root / "append-4k", 4 * KB)
        cluster.query("01", "create", str(empty), name)
        appends = [timed(cluster.query, client, "append", str(chunk), name)[0]
                   for _ in range(self.s.appends)]
        ctl = [timed(cluster.query, client, "list_self")[0] for _ in range(self.s.appends)]
        result = {"client": client, "append": latency_stats(appends), "ctl": latency_stats(ctl),
                  "append_samples_ms": [round(s * 1000, 3) for s in appends]}
        log(f"append 4 KB: p50 {result['append']['p50_ms']:.2f} ms, "
            f"p99 {result['append']['p99_ms']:.2f} ms")
        return result

    # -- part 3: merge after concurrent appends ----------------------------------------------

    def part_merge(self) -> dict:
        cluster = self.shared()
        rows = []
        for kb in self.s.merge_kb:
            for clients in self.s.merge_clients:
                runs = [self._merge_once(cluster, kb, clients, rep)
                        for rep in range(self.s.merge_reps)]
                rows.append({"kb": kb, "clients": clients, "appends": self.s.merge_total,
                             "failed": sum(r["failed"] for r in runs),
                             "merged": min(r["merged"] for r in runs), "runs": runs,
                             **{key: statistics.median(r[key] for r in runs)
                                for key in ("append_s", "merge_wall_s", "merge_seconds")}})
        return {"reps": self.s.merge_reps, "rows": rows}

    def _merge_once(self, cluster: LocalCluster, kb: int, clients: int, rep: int) -> dict:
        name = f"merge-{kb}k-{clients}c-{rep}"
        cluster.query("01", "create", str(random_file(cluster.root / "empty", 0)), name)
        vms = cluster.vms[:clients]
        paths = {vm: random_file(cluster.root / f"merge-{vm}-{kb}k", kb * KB) for vm in vms}
        shares = [self.s.merge_total // clients + (i < self.s.merge_total % clients)
                  for i in range(clients)]
        failures = []

        def client_job(vm: str, count: int):
            def job():
                for _ in range(count):
                    try:
                        cluster.query(vm, "append", str(paths[vm]), name, timeout=60)
                    except (CommandFailed, OSError) as exc:
                        failures.append(str(exc))
            return job
        append_s, _ = timed(run_threads, [client_job(vm, n) for vm, n in zip(vms, shares)])
        wall, doc = timed(cluster.query, vms[0], "merge", name, timeout=600)
        log(f"merge {kb} KB x {clients} clients: appends {append_s:.2f} s, merge {wall:.3f} s "
            f"(reported {doc['seconds']:.3f} s, {doc['merged']} merged)")
        return {"failed": len(failures), "append_s": append_s, "merge_wall_s": wall,
                "merge_seconds": doc["seconds"], "merged": doc["merged"]}

    # -- part 4: re-replication ----------------------------------------------------------------

    def part_rerep(self) -> dict:
        rows = []
        for mb in self.s.rerep_mb:
            with running_cluster(self.workdir / f"rerep-{mb}", 10) as cluster:
                rows.append(self._rereplicate(cluster, mb))
        return {"rows": rows}

    def _rereplicate(self, cluster: LocalCluster, mb: int) -> dict:
        ring = Ring(cluster.vms, RING_BITS)
        name = name_avoiding(ring, f"rerep-{mb}", {"01"})
        src = random_file(cluster.root / "src", mb * MB)
        cluster.query("01", "create", str(src), name, timeout=600)
        src.unlink()
        victims = ring.replicas(name, REPLICAS)[:2]
        survivors = [vm for vm in cluster.vms if vm not in victims]
        new_replicas = Ring(survivors, RING_BITS).replicas(name, REPLICAS)
        settle()
        killed_at = time.time()
        for vm in victims:
            cluster.kill(vm)
        wait_until(lambda: all(holds(cluster, vm, name) for vm in new_replicas),
                   60 + mb, interval=0.1, what=f"{name} on {new_replicas}")
        seen_at = time.time()
        fails = cluster.log_events(survivors, rf"^FAIL ({'|'.join(victims)})@", killed_at - 1)
        copies = cluster.log_events(new_replicas, rf"^REPLICATE {re.escape(name)} from",
                            killed_at)
        detected = fails[0][0] if fails else float("nan")
        done = copies[-1][0] if copies else seen_at
        row = {"mb": mb, "victims": victims, "new_replicas": new_replicas,
               "kill_to_detect_s": detected - killed_at, "detect_to_done_s": done - detected,
               "kill_to_done_s": done - killed_at, "kill_to_poll_s": seen_at - killed_at,
               "copies": [f"{vm}: {msg}" for _, vm, msg in copies]}
        log(f"rerep {mb} MB: detect {row['kill_to_detect_s']:.2f} s after kill, "
            f"re-replicated {row['detect_to_done_s']:.2f} s after detection")
        return row

    # -- part 5: get latency vs cache size --------------------------------------------------

    def part_cache(self) -> dict:
        working_set_mb = self.s.cache_files * 4 * KB / MB
        rows = []
        for fraction in self.s.cache_fractions:
            cache_mb = round(fraction * working_set_mb, 6)
            root = self.workdir / f"cache-{int(fraction * 100)}"
            with running_cluster(root, self.s.cache_nodes, {"cache_mb": cache_mb}) as cluster:
                rows += self._cache_workloads(cluster, fraction, cache_mb)
        return {"working_set_mb": working_set_mb, "rows": rows}

    def _cache_workloads(self, cluster: LocalCluster, fraction: float, cache_mb: float) -> list:
        names = [f"c{i:04d}" for i in range(self.s.cache_files)]
        chunk = random_file(cluster.root / "chunk-4k", 4 * KB)
        for name in names:
            cluster.query("01", "create", str(chunk), name)
        settle()                  # the creates' writeback must not slow the first workload
        rows = []
        for mix in (0.0, 0.1):
            for dist in ("uniform", "zipf"):
                row = self._cache_workload(cluster, names, dist, mix, chunk)
                row.update(fraction=fraction, cache_mb=cache_mb)
                log(f"cache {fraction:.0%} {dist} appends {mix:.0%}: get mean "
                    f"{row['get']['mean_ms']:.2f} ms, cached {row['cached_share']:.0%}")
                rows.append(row)
        return rows

    def _cache_workload(self, cluster, names, dist, mix, chunk) -> dict:
        rng = random.Random(f"{SEED}-{dist}-{mix}")
        pick = zipf_sampler(len(names), ZIPF_A, rng) if dist == "zipf" else \
            (lambda: rng.randrange(len(names)))
        client, out = cluster.vms[1], cluster.root / "get-out"
        gets, appends, cached = [], [], 0
        for i in range(self.s.cache_warmup + self.s.cache_ops):
            name = names[pick()]
            measured = i >= self.s.cache_warmup
            if rng.random() < mix:
                seconds, _ = timed(cluster.query, client, "append", str(chunk), name)
                appends += [seconds] if measured else []
                continue
            seconds, doc = timed(cluster.query, client, "get", name, str(fresh_path(out)))
            if measured:
                gets.append(seconds)
                cached += doc["cached"]
        return {"dist": dist, "append_share": mix, "get": latency_stats(gets),
                "cached_share": cached / len(gets),
                "append": latency_stats(appends) if appends else None}


def zipf_sampler(n: int, a: float, rng: random.Random):
    """A function drawing ranks 0..n-1 with P(k) proportional to 1 / (k + 1) ** a."""
    cumulative = list(accumulate(1 / (k + 1) ** a for k in range(n)))
    return lambda: bisect.bisect_left(cumulative, rng.random() * cumulative[-1])


# -- markdown --------------------------------------------------------------------------------

def md_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_throughput(r: dict) -> str:
    def meets(ratio):
        return "yes" if ratio >= 0.5 else "no"
    rows = [[row["mb"], f"{row['raw']:.0f}", f"{row['raw_file']:.0f}",
             f"{row['raw_file_fsync']:.0f}", f"{row['create']:.0f}",
             f"{row['create_ratio']:.1%}", row["extra_pulls"], f"{row['get']:.0f}",
             f"{row['get_ratio']:.1%}", meets(row["get_ratio"]),
             f"{row['get_uncached']:.0f}", f"{row['get_uncached_ratio']:.1%}",
             meets(row["get_uncached_ratio"]), f"{row['get_file_ratio']:.1%}"]
            for row in r["rows"]]
    return md_table(["size MB", "raw socket MB/s", "raw + file MB/s", "raw + file + fsync MB/s",
                     "create MB/s", "create / raw", "extra pulls", "get MB/s", "get / raw",
                     "get >= 50 %", "get, cache off MB/s", "get, cache off / raw",
                     "cache off >= 50 %", "get / (raw + file)"], rows)


def render_append(r: dict) -> str:
    rows = [[label, r[key]["n"], f"{r[key]['mean_ms']:.2f}", f"{r[key]['p50_ms']:.2f}",
             f"{r[key]['p99_ms']:.2f}", f"{r[key]['max_ms']:.2f}"]
            for label, key in (("append 4 KB", "append"), ("ctl round trip (list_self)", "ctl"))]
    return (f"Client node {r['client']} (not a replica).\n\n" +
            md_table(["operation", "n", "mean ms", "p50 ms", "p99 ms", "max ms"], rows))


def render_merge(r: dict) -> str:
    rows = [[f"{row['kb']} KB", row["clients"], row["appends"], row["failed"],
             f"{row['append_s']:.2f}", f"{row['appends'] / row['append_s']:.0f}",
             row["merged"], f"{row['merge_wall_s']:.3f}", f"{row['merge_seconds']:.3f}"]
            for row in r["rows"]]
    return (f"Median of {r['reps']} runs, each on a fresh file.\n\n" +
            md_table(["append size", "clients", "appends", "failed", "append phase s",
                      "appends/s", "merged", "merge wall s", "merge reported s"], rows))


def render_rerep(r: dict) -> str:
    rows = [[row["mb"], ",".join(row["victims"]), ",".join(row["new_replicas"]),
             f"{row['kill_to_detect_s']:.2f}", f"{row['detect_to_done_s']:.2f}",
             f"{row['kill_to_done_s']:.2f}", f"{row['mb'] / row['detect_to_done_s']:.0f}"]
            for row in r["rows"]]
    return md_table(["size MB", "killed", "replicas after", "kill -> detect s",
                     "detect -> 3 replicas s", "kill -> 3 replicas s", "MB/s after detect"],
                    rows)


def render_cache(r: dict) -> str:
    rows = []
    for row in r["rows"]:
        g, a = row["get"], row["append"]
        rows.append([f"{row['fraction']:.0%}", f"{row['cache_mb']:.4f}", row["dist"],
                     f"{row['append_share']:.0%}", g["n"], f"{g['mean_ms']:.2f}",
                     f"{g['p50_ms']:.2f}", f"{g['p99_ms']:.2f}", f"{row['cached_share']:.0%}",
                     f"{a['mean_ms']:.2f}" if a else "-"])
    return (f"Working set {r['working_set_mb'] * 1024:.0f} KB (4 KB files).\n\n" +
            md_table(["cache", "cache_mb", "keys", "appends", "gets", "get mean ms",
                      "get p50 ms", "get p99 ms", "served from cache", "append mean ms"], rows))


SECTIONS = {
    "throughput": ("Create / get throughput vs a raw loopback socket copy", render_throughput),
    "append": ("Append latency (4 KB, one client)", render_append),
    "merge": ("Merge after concurrent appends", render_merge),
    "rerep": ("Re-replication after kill -9 of two replicas", render_rerep),
    "cache": ("Get latency vs client cache size (4 KB files)", render_cache),
}


def render(results: dict) -> str:
    meta = results["meta"]
    out = [f"# HyDFS benchmark\n\n{meta['date']}, code {meta['code']}, Python {meta['python']}, "
           f"{meta['cpus']} CPUs (load average {meta['load_before']} before, "
           f"{meta['load_after']} after), "
           f"{'quick' if meta['quick'] else 'full'} run, "
           f"{meta['elapsed_s']:.0f} s. MB = 2^20 bytes.\n"]
    for part, (title, renderer) in SECTIONS.items():
        if part in results:
            out.append(f"## {title}\n\n{renderer(results[part])}\n")
    return "\n".join(out)


# -- command line ----------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes and fewer ops")
    p.add_argument("--parts", default=",".join(PARTS),
                   help=f"comma-separated subset of {','.join(PARTS)} (default: all)")
    p.add_argument("--out", type=Path, help="write OUT.md and OUT.json (default for a full "
                   f"run of every part: {DEFAULT_OUT.relative_to(REPO)}; else none)")
    p.add_argument("--workdir", type=Path,
                   help="scratch directory, kept afterwards (default: a temp dir, removed)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (node logs)")
    args = p.parse_args(argv)
    args.parts = [x for x in args.parts.split(",") if x]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}; choose from {','.join(PARTS)}")
    if args.out is None and not args.quick and set(args.parts) == set(PARTS):
        args.out = DEFAULT_OUT
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    settings = QUICK if args.quick else Settings()
    own_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="hydfs-bench-")) if own_workdir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    results = {"meta": {"date": time.strftime("%Y-%m-%d %H:%M"), "code": code_version(),
                        "python": platform.python_version(),
                        "load_before": round(os.getloadavg()[0], 2),
                        "cpus": os.cpu_count(), "quick": args.quick, "membership": MEMBERSHIP,
                        "settings": asdict(settings)}}
    bench = Bench(settings, workdir)
    started = time.monotonic()
    try:
        for part in (p for p in PARTS if p in args.parts):
            log(f"part {part}")
            results[part] = getattr(bench, f"part_{part}")()
    finally:
        bench.close()
        if own_workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    results["meta"]["elapsed_s"] = time.monotonic() - started
    results["meta"]["load_after"] = round(os.getloadavg()[0], 2)
    write_report(render(results), results, args.out, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
