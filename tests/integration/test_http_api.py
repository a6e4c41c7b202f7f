"""Every node's HTTP server (cluster/http_api.py): the `--json` documents at /api/..., and
bad requests refused with the right status while the node stays healthy."""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest

from cluster.local_cluster import LocalCluster, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

OFFSET = 1000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalCluster(tmp_path_factory.mktemp("http"), 4) as cluster:
        yield cluster


def get(cluster, vm: str, path: str, headers=None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", cluster.ports[vm] + OFFSET, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return response.status, (json.loads(body) if body.startswith(b"{") else {})
    finally:
        conn.close()


def test_the_api_serves_the_same_documents_as_the_commands(cluster):
    status, members = get(cluster, "02", "/api/members")
    assert status == 200 and members == cluster.query("02", "list_mem_ids")
    assert {m["vm"] for m in members["members"]} == set(cluster.vms)
    path = cluster.root / "small"
    path.write_text("a\nb\n")
    cluster.query("01", "create", str(path), "web_small", timeout=30)
    status, files = get(cluster, "03", "/api/files")
    mine = next(f for f in files["files"] if f["name"] == "web_small")
    holders = sorted(r["vm"] for r in cluster.query("03", "ls", "web_small")["replicas"])
    assert status == 200 and sorted(mine["replicas"]) == holders
    status, jobs = get(cluster, "04", "/api/jobs")
    assert status == 200 and jobs == cluster.query("04", "jobs")
    status, doc = get(cluster, "04", "/api/jobs/nosuchjob")
    assert status == 404 and doc["ok"] is False and "no such job" in doc["error"]


@pytest.mark.parametrize("path", ["/index.html", "/../../etc/passwd", "/api/members/../../x",
                                  "/api/jobs/a/b", "/%2e%2e/config.ini"])
def test_paths_that_are_not_routes_are_404_and_nothing_is_read_from_disk(cluster, path):
    status, doc = get(cluster, "02", path)
    assert status == 404 and doc["ok"] is False


def test_huge_headers_slow_clients_and_other_methods_are_refused_and_the_node_stays_healthy(
        cluster):
    port = cluster.ports["02"] + OFFSET
    status, _ = get(cluster, "02", "/api/members", headers={"X-Big": "x" * 70000})
    assert status == 431
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/api/members", body=b"{}")
    assert conn.getresponse().status == 501
    conn.close()
    slow = socket.create_connection(("127.0.0.1", port), timeout=15)
    slow.sendall(b"GET /api/mem")              # and then nothing: dropped after its timeout
    started = time.monotonic()
    assert slow.recv(100) == b""               # closed by the server
    assert 4.0 <= time.monotonic() - started < 12
    slow.close()
    assert get(cluster, "02", "/api/members")[0] == 200
    assert cluster.query("02", "list_self")["vm"] == "02"
    wait_until(lambda: "HTTP from" in cluster.log("02"), 10, what="a refusal in the log")
