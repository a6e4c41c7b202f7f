"""The HyDFS benchmark's report: each part's results (the JSON document) as a markdown
table, under a header that states the machine, the code version and the run's length."""

from __future__ import annotations

from bench.report import md_table


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
    ref = r.get("reference")
    note = "" if ref is None else (
        f"Reference, same run: a 4 KB request/reply on a new loopback connection in Python, "
        f"written to a new local file, takes p50 {ref['p50_ms']:.3f} ms (mean "
        f"{ref['mean_ms']:.3f}): the least a get into a file can cost on this machine.\n\n")
    return (f"Working set {r['working_set_mb'] * 1024:.0f} KB (4 KB files).\n\n" + note +
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
