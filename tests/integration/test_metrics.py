"""Every node's /metrics (Prometheus text 0.0.4), read by a strict parser while a following
job runs: names and types by the rules, histograms cumulative, counters that never fall
between two scrapes, and the last stage's per-task records out summing to the job's."""

from __future__ import annotations

import http.client

import pytest

from bench.gen_traffic_signs import iter_lines
from cluster.local_cluster import LocalCluster, wait_until
from tests import prometheus_text as pt

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

OFFSET = 1000
VMS = 5


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalCluster(tmp_path_factory.mktemp("metrics"), VMS) as cluster:
        yield cluster


def scrape(cluster, vm: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", cluster.ports[vm] + OFFSET, timeout=10)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read().decode()
        assert response.status == 200
        assert response.getheader("Content-Type").startswith("text/plain; version=0.0.4")
    finally:
        conn.close()
    return pt.parse(body)


def counters(families: dict) -> dict:
    """{(sample, labels): value} of every counter and histogram count of one scrape."""
    out = {}
    for family in families.values():
        if family["type"] in ("counter", "histogram"):
            for key, value in family["samples"].items():
                if family["type"] == "counter" or not key[0].endswith("_sum"):
                    out[key] = value
    return out


def append(cluster, name: str, lines: list[str], vm: str) -> None:
    path = cluster.root / f"{name}.{vm}.{len(lines)}"
    path.write_text("".join(line + "\n" for line in lines))
    cluster.query(vm, "append", str(path), name, timeout=60)


def test_every_nodes_metrics_follow_the_rules_and_add_up(cluster):
    lines = list(iter_lines(3000, seed=7))
    path = cluster.root / "metrics_src"
    path.write_text("".join(line + "\n" for line in lines[:1001]))
    cluster.query("01", "create", str(path), "metrics_src", timeout=60)
    job = cluster.query("02", "RainStorm", "signs_by_category", "count", "metrics_src",
                        "metrics_out", "3", "--op1-args", "Punched Telespar", "--follow",
                        "--detach", timeout=60)["job"]
    wait_until(lambda: cluster.query("03", "job", job)["records_in"] >= 1000, 60,
               interval=0.2, what="the first lines read")
    first = {vm: scrape(cluster, vm) for vm in cluster.vms}
    append(cluster, "metrics_src", lines[1001:2001], "04")
    append(cluster, "metrics_src", lines[2001:], "05")
    wait_until(lambda: cluster.query("03", "job", job)["records_in"] >= 3000, 60,
               interval=0.2, what="the appended lines read")
    second = {vm: scrape(cluster, vm) for vm in cluster.vms}
    for vm in cluster.vms:
        before, after = counters(first[vm]), counters(second[vm])
        fell = {k: (v, after[k]) for k, v in before.items() if k in after and after[k] < v}
        assert not fell, f"vm{vm}: counters fell between two scrapes: {fell}"
        m = second[vm]
        assert pt.value(m, "rainstorm_members", state="alive") == VMS
        assert pt.value(m, "rainstorm_membership_probes_total") > 0
        assert pt.value(m, "rainstorm_membership_acks_total") > 0
        assert pt.value(m, "rainstorm_membership_sent_bytes_total") > 0
        assert pt.value(m, "rainstorm_hydfs_stored_bytes") > 0
    leader = cluster.query("01", "leader")["leader"]
    stopped = cluster.query("03", "stop", job, timeout=60)
    wait_until(lambda: pt.value(scrape(cluster, leader), "rainstorm_stream_jobs",
                                state="stopped") == 1, 30, what="the job stopped")
    m = scrape(cluster, leader)
    outs = {dict(k)["task"]: v for k, v in
            pt.series(m, "rainstorm_stream_task_records_out_total").items()
            if dict(k)["job"] == job and dict(k)["stage"] == "op2"}
    assert len(outs) == 3
    assert sum(outs.values()) == stopped["records_out"] == pt.value(
        m, "rainstorm_stream_job_records_out_total", job=job) > 0
    assert pt.value(m, "rainstorm_stream_job_records_in_total", job=job) == len(lines) \
        == stopped["records_in"]
    series = {(dict(k)["stage"], int(dict(k)["task"])) for k in
              pt.series(m, "rainstorm_stream_task_records_in_total") if dict(k)["job"] == job}
    # signs_by_category is a filter: it runs in the source tasks ([stream] chain); its
    # counters are still op1's, as `job JOBID` shows them, and what op1 put out is what op2
    # took in
    assert series == {(stage, task) for stage in ("source", "op1", "op2") for task in range(3)}
    def stage_sum(name: str, stage: str) -> float:
        return sum(v for k, v in pt.series(m, name).items()
                   if dict(k)["job"] == job and dict(k)["stage"] == stage)
    assert stage_sum("rainstorm_stream_task_records_out_total", "op1") == \
        stage_sum("rainstorm_stream_task_records_in_total", "op2") > 0
    for stage in ("source", "op2"):          # op1's batches are its source's
        for task in range(3):
            took = pt.value(m, "rainstorm_stream_task_records_in_total", job=job,
                            stage=stage, task=task)
            batches = pt.value(m, "rainstorm_stream_task_batch_seconds_count", job=job,
                               stage=stage, task=task)
            assert batches is not None and (batches > 0 or took == 0), (stage, task)
    assert pt.value(m, "rainstorm_leader") == 1
    assert sum(pt.value(scrape(cluster, vm), "rainstorm_leader") for vm in cluster.vms) == 1
    ops = pt.series(m, "rainstorm_hydfs_operations_total")
    assert any(dict(k)["op"] == "append" and dict(k)["outcome"] == "ok" for k in ops)
