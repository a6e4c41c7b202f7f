"""The HyDFS benchmark's experiments, each run on real node processes: create / get
throughput, append latency, merge after concurrent appends, re-replication after two
replicas die, and get latency against the client cache's size.

`Bench` holds them, one `part_<name>` method per part, each returning its results as a
JSON-ready dict (rendered by bench/hydfs_render.py). Throughput, append and merge share one
10-node cluster (`shared`); gets with the cache off use a second one (`uncached`); every
re-replication and every cache size starts a fresh cluster of its own. The small helpers
before it make the inputs (random files, names placed away from given nodes, Zipfian keys)
and summarize latencies.
"""

from __future__ import annotations

import bisect
import os
import random
import re
import statistics
import threading
import time
from contextlib import ExitStack
from itertools import accumulate
from pathlib import Path

from bench.harness import REPLICAS, RING_BITS, log, running_cluster, timed
from bench.hydfs_raw_socket import (fresh_path, raw_references, settle, small_get_reference,
                                     timed_settled)
from bench.hydfs_settings import KB, MB, MEMBERSHIP, SEED, ZIPF_A, Settings
from cluster.local_cluster import CommandFailed, LocalCluster, wait_until
from hydfs.ring import Ring


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


def random_file(path: Path, size: int) -> Path:
    """`path`, written with `size` random bytes (16 MB at a time)."""
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
    """The cluster's nodes that are not replicas of `name`, in order."""
    replicas = Ring(cluster.vms, RING_BITS).replicas(name, REPLICAS)
    return [vm for vm in cluster.vms if vm not in replicas]


def holds(cluster: LocalCluster, vm: str, name: str) -> bool:
    """Whether node `vm`'s store lists a replica of `name`."""
    return name in {f["name"] for f in cluster.query(vm, "store", timeout=5)["files"]}


def run_threads(jobs: list) -> None:
    """Run every job in a thread of its own, all at once; return when all have ended."""
    threads = [threading.Thread(target=job, daemon=True) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def zipf_sampler(n: int, a: float, rng: random.Random):
    """A function drawing ranks 0..n-1 with P(k) proportional to 1 / (k + 1) ** a."""
    cumulative = list(accumulate(1 / (k + 1) ** a for k in range(n)))
    return lambda: bisect.bisect_left(cumulative, rng.random() * cumulative[-1])


class Bench:
    """The experiments, with the clusters they share; `close` stops those."""

    def __init__(self, settings: Settings, workdir: Path):
        self.s = settings
        self.workdir = workdir
        self._shared = None
        self._uncached = None
        self._exit = ExitStack()

    def shared(self) -> LocalCluster:
        """The 10-node cluster that throughput, append and merge share (started once)."""
        if self._shared is None:
            self._shared = self._exit.enter_context(
                running_cluster(self.workdir / "shared", 10, MEMBERSHIP))
        return self._shared

    def uncached(self) -> LocalCluster:
        """A 10-node cluster with the client cache off (cache_mb = 0), for gets that only
        move bytes: with the cache on, a miss also keeps a copy in fresh memory."""
        if self._uncached is None:
            self._uncached = self._exit.enter_context(
                running_cluster(self.workdir / "uncached", 10, MEMBERSHIP, hydfs={"cache_mb": 0}))
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
            with running_cluster(self.workdir / f"rerep-{mb}", 10, MEMBERSHIP) as cluster:
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
            with running_cluster(root, self.s.cache_nodes, MEMBERSHIP,
                                 hydfs={"cache_mb": cache_mb}) as cluster:
                rows += self._cache_workloads(cluster, fraction, cache_mb)
        reference = small_get_reference(self.workdir)
        log(f"small get reference: p50 {reference['p50_ms']:.3f} ms")
        return {"working_set_mb": working_set_mb, "rows": rows, "reference": reference}

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
