"""Metrics (cluster/metrics.py, stream/metrics.py) and the strict text-format reader that
checks every node's /metrics in the integration tests (tests/prometheus_text.py)."""

from __future__ import annotations

import math

import pytest

from cluster.metrics import TIME_BUCKETS, Counter, Registry
from stream.metrics import BatchLatency, LatencyTotals
from tests import prometheus_text as pt

pytestmark = pytest.mark.timeout(30)


def test_a_registry_renders_what_the_strict_reader_accepts():
    r = Registry()
    ops = r.counter("rainstorm_x_operations_total", "ops\nby kind \\ outcome", ("op", "outcome"))
    ops.inc(op="get", outcome="ok")
    ops.inc(3, op="get", outcome='we"ird\\\n')
    r.gauge("rainstorm_x_bytes", "bytes").set(12.5)
    h = r.histogram("rainstorm_x_seconds", "latency", ("op",))
    for v in (0.0001, 0.003, 0.003, 7.0, 100.0):
        h.observe(v, op="get")
    families = pt.parse(r.render())
    assert pt.value(families, "rainstorm_x_operations_total", op="get", outcome="ok") == 1
    assert pt.value(families, "rainstorm_x_operations_total", op="get",
                    outcome='we"ird\\\n') == 3
    assert families["rainstorm_x_operations_total"]["help"] == "ops\\nby kind \\\\ outcome"
    assert pt.value(families, "rainstorm_x_seconds_count", op="get") == 5
    assert pt.value(families, "rainstorm_x_seconds_bucket", op="get", le="+Inf") == 5
    assert pt.value(families, "rainstorm_x_seconds_bucket", op="get", le="0.005") == 3
    assert pt.value(families, "rainstorm_x_seconds_sum", op="get") == pytest.approx(107.0061)


def test_collectors_are_read_at_each_scrape():
    r, seen = Registry(), []

    def collect():
        seen.append(1)
        c = Counter("rainstorm_y_total", "y")
        c.set_total(len(seen))
        return [c]
    r.collect(collect)
    assert pt.value(pt.parse(r.render()), "rainstorm_y_total") == 1
    assert pt.value(pt.parse(r.render()), "rainstorm_y_total") == 2


@pytest.mark.parametrize("make", [
    lambda r: r.counter("rainstorm_no_suffix", "x"),
    lambda r: r.counter("other_prefix_total", "x"),
    lambda r: r.gauge("rainstorm_Bad-Name", "x"),
    lambda r: r.gauge("rainstorm_ok", "x", ("le",)),
])
def test_bad_names_are_refused_at_once(make):
    with pytest.raises(ValueError):
        make(Registry())


def test_a_counter_never_goes_down():
    c = Registry().counter("rainstorm_z_total", "z")
    with pytest.raises(ValueError):
        c.inc(-1)


GOOD = ('# HELP rainstorm_a_total a\n# TYPE rainstorm_a_total counter\n'
        'rainstorm_a_total{op="get"} 1\n')
HIST = ('# HELP rainstorm_h_seconds h\n# TYPE rainstorm_h_seconds histogram\n'
        'rainstorm_h_seconds_bucket{le="0.1"} {b1}\nrainstorm_h_seconds_bucket{le="+Inf"} {b2}\n'
        'rainstorm_h_seconds_sum 1.5\nrainstorm_h_seconds_count {c}\n')


@pytest.mark.parametrize("text, why", [
    (GOOD[:-1], "end with a newline"),
    (GOOD.replace("# HELP rainstorm_a_total a\n", ""), "TYPE must follow"),
    ('rainstorm_a_total 1\n', "before its HELP"),
    (GOOD.replace("rainstorm_a", "other_a"), "prefix"),
    (GOOD.replace("_total", "_count_ms_total"), "base units"),
    (GOOD.replace("counter", "gauge").replace("_total", "_x").replace(
        'rainstorm_a_x{op="get"} 1', 'rainstorm_a_x{key="k1"} 1'), "high-cardinality"),
    (GOOD.replace("_total", "_x"), "must end in _total"),
    (GOOD + 'rainstorm_a_total{op="get"} 2\n', "duplicate"),
    (GOOD.replace('{op="get"} 1', '{op="get"} -1'), ">= 0"),
    (GOOD.replace('"get"', '"g\\et"'), "bad escape"),
    (GOOD.replace('{op="get"}', '{op="get",op="x"}'), "twice"),
    (GOOD.replace(' 1\n', ' one\n'), "bad value"),
    (GOOD + "\n", "empty line"),
    (HIST.replace("{b1}", "3").replace("{b2}", "2").replace("{c}", "2"), "cumulative"),
    (HIST.replace("{b1}", "1").replace("{b2}", "2").replace("{c}", "3"), "_count"),
    (HIST.replace("{b1}", "1").replace('le="+Inf"', 'le="1"').replace("{b2}", "2")
     .replace("{c}", "2"), r"\+Inf"),
])
def test_the_strict_reader_refuses(text, why):
    with pytest.raises(pt.FormatError, match=why):
        pt.parse(text)


def test_batch_latency_sums_over_attempts_and_never_falls():
    first, second = BatchLatency(), BatchLatency()
    for v in (0.002, 0.3):
        first.observe(v)
    totals = LatencyTotals()
    totals.update("op1-0", 5, **_report(first))
    second.observe(20.0)
    totals.update("op1-0", 6, **_report(second))          # the attempt was replaced
    counts, total = totals.of("op1-0")
    assert sum(counts) == 3 and counts[-1] == 1 and total == pytest.approx(20.302)
    late = BatchLatency()
    late.observe(0.01)
    totals.update("op1-0", 5, **_report(late))            # a late report of the old attempt
    totals.update("op1-0", 6, **_report(BatchLatency()))  # older than the one before
    totals.update("op1-0", 5, **_report(first))           # ... and again: epochs 5, 6, 5, 6
    totals.update("op1-0", 6, **_report(second))
    assert totals.of("op1-0")[0] == counts
    totals.update("op1-0", 6, [1], 0.0)                   # malformed: ignored
    assert totals.of("op1-0")[0] == counts
    assert len(counts) == len(TIME_BUCKETS) + 1 and not math.isnan(total)


def _report(latency: BatchLatency) -> dict:
    wire = latency.to_report()
    return {"counts": wire["latency"], "total": wire["latency_sum"]}


def test_a_jobs_metrics_add_up_and_never_fall_and_a_job_being_set_up_is_listed():
    """The leader's per-task figures are peaks (a replacement went back to its last commit:
    its figures fall, then come back) and the job's are their sums; a job without a core
    yet (being set up) breaks neither the metrics nor its documents (review regression:
    `jobs` raised on it, so the page showed no jobs at all)."""
    from stream.job import Job, listing, summary, task_docs
    from stream.job_core import JobCore
    from stream.job_spec import parse_job
    from stream.metrics import job_metrics
    from stream.scheduler import TaskId
    spec = parse_job(["a", "b", "s", "d", "2"])
    setting_up = Job("new", spec)
    assert listing(setting_up)["records_out"] == 0 and summary(setting_up)["records_in"] == 0
    assert task_docs(setting_up) == []
    job = Job("j1", spec, core=JobCore(2, ["02", "03"], 0.0, 60.0))
    stats = {TaskId(0, 0): {"in": 10}, TaskId(0, 1): {"in": 5},
             TaskId(2, 0): {"in": 4, "out": 4}, TaskId(2, 1): {"in": 3, "out": 3}}
    for task, figures in stats.items():
        job.core.tasks[task].stats = figures
    first = pt.parse(_render(job_metrics([job, setting_up], 0.0)))
    job.core.tasks[TaskId(2, 0)].stats = {"in": 2, "out": 2}     # its replacement's, lower
    job.core.tasks[TaskId(2, 1)].stats = {"in": 6, "out": 6}
    second = pt.parse(_render(job_metrics([job, setting_up], 1.0)))
    assert pt.value(first, "rainstorm_stream_job_records_out_total", job="j1") == 7
    assert pt.value(second, "rainstorm_stream_job_records_out_total", job="j1") == 10
    outs = pt.series(second, "rainstorm_stream_task_records_out_total")
    assert sum(v for k, v in outs.items() if dict(k)["stage"] == "op2") == 10
    assert pt.value(second, "rainstorm_stream_job_records_in_total", job="j1") == 15
    assert pt.value(second, "rainstorm_stream_jobs", state="starting") == 2
    assert pt.value(second, "rainstorm_stream_jobs", state="failed") == 0


def _render(metrics: list) -> str:
    r = Registry()
    r.collect(lambda: metrics)
    return r.render()


def test_a_broken_collector_leaves_the_other_metrics_served():
    r = Registry()
    r.counter("rainstorm_fine_total", "fine").inc()
    r.collect(lambda: 1 / 0)
    assert pt.value(pt.parse(r.render()), "rainstorm_fine_total") == 1
    assert r.collector_errors.total == 1


@pytest.mark.timeout(30)
def test_a_chained_op1_is_listed_as_its_tasks_where_its_sources_run():
    """`job JOBID` still shows the job's three stages when OP1 runs in the sources: each
    op1-N with its source's node and state, OP1's counts and `"chained": "source-N"`."""
    from stream.job import Job, task_docs
    from stream.job_core import JobCore
    from stream.job_spec import parse_job
    from stream.scheduler import CHAINED_STAGES, TaskId
    from stream.task_spec import TaskSpec
    spec = parse_job(["grep", "count", "s", "d", "2"])
    job = Job("j1", spec, core=JobCore(2, ["02", "03"], 0.0, 60.0, stages=CHAINED_STAGES))
    for task in job.core.tasks:
        job.templates[task] = TaskSpec("j1", task, 2, "s", "d", 0.1, 0.1, chained=True)
    job.core.tasks[TaskId(0, 1)].stats = {"in": 10, "op1_in": 8, "out": 3}
    job.sample(0.0)
    job.core.tasks[TaskId(0, 1)].stats = {"in": 20, "op1_in": 20, "out": 7}
    job.sample(2.0)
    docs = {d["task"]: d for d in task_docs(job)}
    assert list(docs) == ["source-0", "source-1", "op1-0", "op1-1", "op2-0", "op2-1"]
    source, op1 = docs["source-1"], docs["op1-1"]
    assert (source["records_in"], source["records_out"]) == (20, 20)
    assert (op1["records_in"], op1["records_out"], op1["chained"]) == (20, 7, "source-1")
    assert op1["vm"] == source["vm"] and op1["state"] == source["state"]
    assert op1["rate"] == 2.0 and source["rate"] == 5.0


@pytest.mark.timeout(30)
def test_a_sinks_op1_and_op2_are_listed_as_their_tasks_and_counted_in_the_totals():
    """A stateless OP2 runs in the sources too (a sink): op2-N is shown like op1-N, with
    what OP1 put out as its input and OP2's own counters, in `job JOBID` and the metrics."""
    from cluster.metrics import Registry
    from stream.job import Job, summary, task_docs
    from stream.job_core import JobCore
    from stream.job_spec import parse_job
    from stream.metrics import job_metrics
    from stream.scheduler import SINK_STAGES, TaskId
    from stream.task_spec import TaskSpec
    spec = parse_job(["grep", "signs_select", "s", "d", "2"])
    job = Job("j1", spec, core=JobCore(2, ["02", "03"], 0.0, 60.0, stages=SINK_STAGES))
    for task in job.core.tasks:
        job.templates[task] = TaskSpec("j1", task, 2, "s", "d", 0.1, 0.1, chained=True,
                                       sink=True, last_operator="signs_select")
    job.core.tasks[TaskId(0, 1)].stats = {"in": 20, "op1_in": 20, "out": 7, "op2_out": 6,
                                          "op2_errors": 1}
    docs = {d["task"]: d for d in task_docs(job)}
    assert list(docs) == ["source-0", "source-1", "op1-0", "op1-1", "op2-0", "op2-1"]
    op2 = docs["op2-1"]
    assert (op2["records_in"], op2["records_out"], op2["chained"]) == (7, 6, "source-1")
    assert op2["vm"] == docs["source-1"]["vm"]
    assert summary(job)["records_out"] == 6 and summary(job)["errors"] == 1
    registry = Registry()
    registry.collect(lambda: job_metrics([job], 0.0))
    text = registry.render()
    assert 'rainstorm_stream_task_records_out_total{job="j1",stage="op2",task="1"} 6' in text
