"""The stream benchmark's report: its results (the JSON document) as markdown tables.

`summarize` groups the runs by (engine, app, lines) into min / median figures;
`render_throughput` and `render_recovery` turn each part's results into its tables, and
`render` the whole document, with a header that states the settings it ran with.
"""

from __future__ import annotations

import os
import statistics

from bench.report import md_table
from bench.stream_setup import APPS, MEMBERSHIP, size_label


def summarize(runs: list) -> dict:
    """(engine, app, n) -> min/median seconds, runs ok, and RainStorm's extras."""
    groups = {}
    for r in runs:
        groups.setdefault((r["engine"], r["app"], r["n"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        secs = [r["seconds"] for r in rs]
        s = {"runs": len(rs), "ok": sum(r["ok"] for r in rs), "min": min(secs),
             "median": statistics.median(secs),
             "others": statistics.median(r.get("others_cpu", 0) for r in rs),
             "cpu_s": statistics.median(r.get("cpu_s", 0) for r in rs)}
        if key[0] == "rainstorm":
            walls = [r["wall_s"] for r in rs]
            s.update(wall_min=min(walls), wall_median=statistics.median(walls),
                     records_out=rs[0]["records_out"])
            mid = sorted(rs, key=lambda r: r["seconds"])[(len(rs) - 1) // 2]
            s["phases"], s["cpu"] = mid["phases"], mid["cpu"]
        out[key] = s
    return out


def fmt_rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}" if seconds > 0 else "-"


def render_throughput(r: dict, reps: int) -> str:
    summary = summarize(r["runs"])
    sizes = [f["n"] for f in r["files"]]
    out = []
    files = [[size_label(f["n"]), f"{f['bytes']:,}", f"{f['generate_s']:.1f}" if f["generate_s"]
              else "cached", f"{f['create_s']:.2f}", f"{f['expected_rows']['1']:,}",
              f"{f['expected_rows']['2']:,}"] for f in r["files"]]
    out.append("### Input files\n\n" + md_table(
        ["lines", "bytes", "generated in s", "HyDFS create s", "App 1 rows", "App 2 rows"],
        files))
    rows = []
    for app in APPS:
        prev = None
        for n in sizes:
            s = summary.get(("rainstorm", app, n))
            if not s:
                continue
            marginal = ""
            if prev is not None and s["min"] > prev[1]:
                marginal = f"{(n - prev[0]) / (s['min'] - prev[1]):,.0f}"
            prev = (n, s["min"])
            ph = s["phases"]
            rows.append([app, size_label(n), f"{s['ok']}/{s['runs']}", f"{s['min']:.2f}",
                         f"{s['median']:.2f}", f"{s['wall_median']:.2f}",
                         fmt_rate(n, s["median"]), marginal, f"{s['records_out']:,}",
                         " / ".join(f"{ph[k]:.2f}" for k in ("plan", "launch", "stream", "stop"))
                         if ph else "-", f"{s['others']:.0%}"])
    cold = r.get("first_job")
    first = "" if not cold else (
        f"The cluster's first job (App 1 on 10k lines, not in the table) took "
        f"{cold['seconds']:.2f} s (launch {cold['phases'].get('launch', 0):.2f} s; output "
        f"{cold['verdict']}): it starts every task process cold, while later jobs take warm "
        "spare task processes that the nodes start as a job ends.\n\n")
    out.append(f"### RainStorm end to end ({reps} runs per cell; 3 tasks per stage, 10 nodes)\n\n"
               + first +
               "\"job s\" is the leader's `seconds`; \"call s\" the REPL call around it. "
               "Verified = output equal to the oracle's (App 1 multiset; App 2 rows "
               "`Category,1..N` exactly once). Marginal = extra lines / extra min seconds vs "
               "the previous size (start-up cancelled out). Phases are those of the median "
               "run. \"others' CPU\": the median share of the machine that processes outside "
               "this benchmark used during the runs (it slows every figure).\n\n" + md_table(
                   ["app", "lines", "verified", "job s min", "job s median", "call s median",
                    "lines/s (median)", "marginal lines/s", "rows out",
                    "plan / launch / stream / stop s", "others' CPU"], rows))
    engines = [p for p in r["peers"]]
    rows = []
    for app in APPS:
        for name in engines:
            for n in sizes:
                s = summary.get((name, app, n))
                if s:
                    rows.append([app, name, size_label(n), f"{s['ok']}/{s['runs']}",
                                 f"{s['min']:.2f}", f"{s['median']:.2f}",
                                 fmt_rate(n, s["median"]), f"{s['cpu_s']:.2f}",
                                 f"{s['others']:.0%}"])
    notes = "".join(f"\n\n{note}." for note in r["peer_notes"])
    out.append("### Peers on the same files, same run\n\nWall time of the whole command "
               "(interpreter / JVM start-up included), every output checked (Spark App 2: "
               "final counts, since it emits per micro-batch). CPU s: all the engine's "
               "processes (the JVM included)." + notes + "\n\n" + md_table(
                   ["app", "engine", "lines", "verified", "wall s min", "wall s median",
                    "lines/s (median)", "CPU s (median)", "others' CPU"], rows))
    rows = []
    for app in APPS:
        for n in sizes:
            rs = summary.get(("rainstorm", app, n))
            if not rs:
                continue
            row = [app, size_label(n), f"{rs['median']:.2f}"]
            for name in engines:
                s = summary.get((name, app, n))
                row.append(f"{s['median']:.2f}" if s else "-")
            for name in engines:
                s = summary.get((name, app, n))
                row.append(f"{rs['median'] / s['median']:.1f}x" if s and s["median"] else "-")
            rows.append(row)
    out.append("### Ratios (medians): RainStorm time / peer time\n\n" + md_table(
        ["app", "lines", "RainStorm s"] + [f"{e} s" for e in engines] +
        [f"RS / {e}" for e in engines], rows))
    # OP1 runs in the source tasks when it is stateless ([stream] chain): no op1 tasks
    chained = not any(s.get("cpu", {}).get("op1 tasks") for s in summary.values())
    roles = ["leader node", "worker nodes", "source tasks"] + \
        ([] if chained else ["op1 tasks"]) + ["op2 tasks"]
    labels = {"source tasks": "source tasks (with OP1)"} if chained else {}
    for extra in ("mixed tasks", "spare tasks"):
        if any(s.get("cpu", {}).get(extra) for s in summary.values()):
            roles.append(extra)
    rows = []
    for app in APPS:
        for n in sizes:
            s = summary.get(("rainstorm", app, n))
            if not s:
                continue
            cpu = s["cpu"]
            rows.append([app, size_label(n), f"{s['median']:.2f}"] +
                        [f"{cpu.get(k, 0):.2f}" for k in roles] +
                        [f"{cpu['total']:.2f}",
                         f"{cpu['total'] / (s['median'] * (os.cpu_count() or 1)):.0%}"])
    out.append("### Where RainStorm's CPU goes (median run, CPU seconds)\n\n"
               "From /proc, from the call to its return: each node's own CPU time (its HyDFS, "
               "membership, and the task plumbing), and the CPU time of its task processes "
               "(the tasks it ran, and the warm spare task processes it starts as a job ends, "
               "as far as they got by then). "
               f"Idle, the ten nodes use {r['idle_cluster_cpu']:.1%} of one core.\n\n" +
               md_table(["app", "lines", "job s"] + [labels.get(k, k) for k in roles] +
                        ["total", f"share of {os.cpu_count()} cores"], rows))
    return "\n\n".join(out)


def render_recovery(r: dict) -> str:
    def s(x, unit=" s"):
        return "-" if x is None else f"{x:.2f}{unit}"

    def gap(row):
        if row.get("gap_from_s") is None:
            return "-"
        return (f"{row['gap_from_s']:.2f} -> {row['gap_to_s']:.2f} s"
                + (" (job end)" if row.get("gap_until_job_end") else ""))
    rows = []
    for row in r["runs"]:
        victims = ", ".join(f"vm{v}" for v in row["victims"]) or "none"
        tasks = ", ".join(row.get("killed_tasks", [])) or "-"
        if row["victims"] and not row.get("killed_tasks"):
            tasks = "none (killed before its tasks started)"
        rows.append([row["scenario"], victims, tasks, row["verdict"].split(" rows")[0],
                     f"{row['seconds']:.2f}", s(row.get("extra_s")),
                     s(row.get("killed_at_s")), s(row.get("kill_to_fail_s")),
                     s(row.get("kill_to_move_s")), s(row.get("kill_to_ready_s")),
                     gap(row), s(row.get("kill_to_more_output_s")) +
                     (" (job end)" if row.get("more_output_is_job_end") else ""),
                     s(row.get("kill_to_caught_up_s")),
                     f"{row['base_rate_kill_to_move']:,} / {row['rate_kill_to_move']:,}"
                     if row.get("base_rate_kill_to_move") is not None
                     and row.get("rate_kill_to_move") is not None else "-",
                     f"{row['others_cpu']:.0%}"])
    return (f"App 2 on {r['lines']:,} lines at --rate {r['rate']:,.0f} lines/s, fresh cluster "
            f"per run, kill -9 {r['kill_after_s']} s after the call (or, if the job's tasks are "
            "not all started by then, once they are). Times are seconds after "
            "the kill. \"no output\": the longest gap after the kill between output events "
            "(rows the leader prints, from the tasks' reports every 0.5 s, and progress lines "
            "with more output): its end is when output resumed. \"output increasing again\": "
            "from the leader's progress lines (1 s apart), the first line after the stall "
            "with more output than the one before. \"caught up\": when the output count first "
            "reaches what the failure-free run had emitted by the same time into the job. "
            "Task ids are [stage, index] (stage 1 = OP1, 2 = OP2).\n\n" + md_table(
                ["failure", "killed", "tasks killed", "output", "job s", "extra s",
                 "killed at (s into job)", "-> FAIL at leader", "-> task moves",
                 "-> replacements ready", "no output", "-> output increasing again",
                 "-> caught up", "rows/s kill -> move: failure-free / this run",
                 "others' CPU"], rows))


def render_scaling(r: dict) -> str:
    runs = [x for x in r["runs"] if x["engine"] == "rainstorm"]
    rows = []
    for x in sorted((x for x in runs if x["app"] == 2 and x["n"] == r["base"]
                     and not x.get("after_big")),
                    key=lambda x: (x["tasks"], x["rep"])):
        rows.append([x["tasks"], x["rep"] + 1, "OK" if x["ok"] else "WRONG",
                     f"{x['seconds']:.2f}", f"{x['peak_rss_mb']['node']:.0f}",
                     f"{x['peak_rss_mb']['task']:.0f}", f"{x['others_cpu']:.0%}"])
    out = [f"### App 2 at {size_label(r['base'])} lines by NUM_TASKS\n\n" + md_table(
        ["tasks per stage", "run", "output", "job s", "largest node RSS MB",
         "largest task RSS MB", "others' CPU"], rows)]
    if r.get("big"):
        rows = []
        for app in APPS:
            for n in (r["base"], r["big"]):
                rs = [x for x in runs if x["app"] == app and x["n"] == n and x["tasks"] == 3
                      and (n != r["base"] or x.get("after_big"))]
                loop = [x for x in r["runs"] if x["engine"] != "rainstorm"
                        and x["app"] == app and x["n"] == n]
                if not rs or not loop:
                    continue
                x = min(rs, key=lambda x: x["seconds"])
                rows.append([app, size_label(n), "OK" if x["ok"] else "WRONG",
                             f"{x['seconds']:.2f}", f"{loop[0]['seconds']:.2f}",
                             f"{x['seconds'] / loop[0]['seconds']:.2f}x",
                             f"{x['peak_rss_mb']['node']:.0f}",
                             f"{x['peak_rss_mb']['task']:.0f}"])
        out.append(f"### {size_label(r['base'])} and {size_label(r['big'])} lines (3 tasks "
                   "per stage, every run after the big file was made)\n\n" + md_table(
                       ["app", "lines", "output", "RainStorm s", "python-loop s", "RS / loop",
                        "largest node RSS MB", "largest task RSS MB"], rows))
    return "\n\n".join(out)


def targets(results: dict) -> list[tuple[str, str, bool]]:
    """Issue 14's targets, from whatever parts ran: (what, the figures, met)."""
    out = []
    if "throughput" in results:
        s = summarize(results["throughput"]["runs"])
        for app in APPS:
            rs = s.get(("rainstorm", app, 1_000_000))
            for peer, bound in (("python-loop", 0.7), ("bytewax-p2", 0.75)):
                p = s.get((peer, app, 1_000_000))
                if rs and p:
                    ratio = rs["median"] / p["median"]
                    out.append((f"App {app} at 1M lines <= {bound}x {peer}",
                                f"{rs['median']:.2f} s / {p['median']:.2f} s = {ratio:.2f}x",
                                ratio <= bound))
            small = s.get(("rainstorm", app, 10_000))
            if rs and small:
                ratio = small["median"] / rs["median"]
                out.append((f"App {app}: a 10k-line job <= 0.15x the 1M-line job",
                            f"{small['median']:.2f} s / {rs['median']:.2f} s = {ratio:.2f}x",
                            ratio <= 0.15))
    if "scaling" in results:
        r = results["scaling"]
        runs = [x for x in r["runs"] if x["engine"] == "rainstorm"]
        by_tasks = {}
        for x in runs:
            if x["app"] == 2 and x["n"] == r["base"] and not x.get("after_big"):
                by_tasks.setdefault(x["tasks"], []).append(x["seconds"])
        medians = [(t, statistics.median(v)) for t, v in sorted(by_tasks.items())]
        if len(medians) > 1:
            slower = [f"{a}->{b}" for (a, ta), (b, tb) in zip(medians, medians[1:]) if tb > ta]
            out.append(("App 2 at 1M: never slower with more tasks",
                        " / ".join(f"{t}: {m:.2f} s" for t, m in medians), not slower))
        if r.get("big"):
            for app in APPS:
                small = [x["seconds"] for x in runs if x["app"] == app and x["n"] == r["base"]
                         and x["tasks"] == 3 and x.get("after_big")]
                big = [x for x in runs if x["app"] == app and x["n"] == r["big"]]
                if small and big:
                    ratio = big[0]["seconds"] / min(small)
                    out.append((f"App {app}: {size_label(r['big'])} / 1M <= 11x",
                                f"{big[0]['seconds']:.2f} s / {min(small):.2f} s = "
                                f"{ratio:.1f}x; largest task {big[0]['peak_rss_mb']['task']:.0f}"
                                f" MB, node {big[0]['peak_rss_mb']['node']:.0f} MB",
                                ratio <= 11))
    return out


def render_targets(results: dict) -> str:
    rows = [[what, figures, "met" if met else "NOT met"] for what, figures, met in
            targets(results)]
    return md_table(["target", "this run", ""], rows) if rows else ""


def render(results: dict) -> str:
    meta = results["meta"]
    out = [f"# RainStorm stream benchmark\n\n{meta['date']}, code {meta['code']}, Python "
           f"{meta['python']}, {meta['cpus']} CPUs (load {meta['load_before']} before), "
           f"{'quick' if meta['quick'] else 'full'} run. 10 local nodes; membership period "
           f"{MEMBERSHIP['protocol_period']} s, ping timeout "
           f"{MEMBERSHIP['ping_timeout']} s, suspicion timeout "
           f"{MEMBERSHIP['suspicion_timeout']} s. App 1 = grep \"{APPS[1][2]}\" | "
           f"signs_select, App 2 = signs_by_category \"{APPS[2][2]}\" | count.\n"]
    def ran(part):
        run = results[part].get("run")
        if not run:
            return ""
        return (f"Run {run['date']}, code {run['code']}, {run['elapsed_s']:.0f} s (of which "
                f"{run['quiet_wait_s']:.0f} s waiting for other processes to quieten down).\n\n")
    if "throughput" in results:
        out.append("## Throughput\n\n" + ran("throughput") +
                   render_throughput(results["throughput"],
                                     results["throughput"].get("reps", meta["reps"])) + "\n")
    if "scaling" in results:
        out.append("## Scaling\n\n" + ran("scaling") + render_scaling(results["scaling"]) +
                   "\n")
    if targets(results):
        out.append("## Targets\n\n" + render_targets(results) + "\n")
    if "recovery" in results:
        out.append("## Recovery from kill -9 of two workers\n\n" + ran("recovery") +
                   render_recovery(results["recovery"]) + "\n")
    return "\n".join(out)
