"""The live page (node/web_page.html) in a real browser: headless Chromium loads it from a
node of a running 10-node cluster with a following job, and we read the DOM it rendered.

Every member, every task (with its node and state) and the job's state must be on the page;
after a kill -9 of a worker, the page must show that node failed within the detection bound
and its tasks running elsewhere soon after. A screenshot is saved (docs/web_page.png is one).

Chromium is the Debian package `chromium`; `.ci/run` installs it and sets
RAINSTORM_REQUIRE_BROWSER=1, so that in CI a missing browser fails instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from html.parser import HTMLParser

import pytest

from bench.gen_traffic_signs import iter_lines
from cluster.local_cluster import LocalCluster, wait_until
from tests.bounds import detection

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]

OFFSET = 1000
PAGE_VM = "03"                  # the node whose page the browser reads (not the leader)
BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(b)), None)
LOAD_MS = 2500                  # virtual time the page gets: its first readings, drawn
FETCH_MARGIN = 0.3              # between a node stamping /api/node and answering the rest
MOVE_BOUND = 3.0                # after detection: the leader restarts the tasks elsewhere


@pytest.fixture(scope="module")
def browser():
    if BROWSER is None:
        if os.environ.get("RAINSTORM_REQUIRE_BROWSER"):
            pytest.fail("no chromium: .ci/run should have installed the Debian package")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    return BROWSER


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalCluster(tmp_path_factory.mktemp("web"), 10) as cluster:
        yield cluster


def chromium(browser: str, url: str, *args: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={profile}", "--window-size=1280,800",
             f"--virtual-time-budget={LOAD_MS}", *args, url],
            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


class Rendered(HTMLParser):
    """What the page drew: members, tasks and jobs by their data-* attributes."""

    def __init__(self, html: str):
        super().__init__()
        self.members, self.tasks, self.jobs, self.ready, self.read_at = {}, {}, {}, False, 0.0
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body" and a.get("data-ready") == "yes":
            self.ready = True
            self.read_at = float(a.get("data-read-at", 0))   # the node's wall clock
        if "data-member" in a:
            self.members[a["data-member"]] = a.get("data-state")
        if "data-task" in a:
            self.tasks[a["data-task"]] = (a.get("data-vm"), a.get("data-state"))
        if "data-job" in a:
            self.jobs[a["data-job"]] = a.get("data-state")


def page(cluster, browser) -> Rendered:
    url = f"http://127.0.0.1:{cluster.ports[PAGE_VM] + OFFSET}/"
    rendered = Rendered(chromium(browser, url, "--dump-dom"))
    assert rendered.ready, "the page did not finish drawing"
    return rendered



def test_the_page_shows_the_cluster_and_a_job_and_follows_a_failure(cluster, browser,
                                                                    tmp_path):
    lines = list(iter_lines(4000, seed=11))
    src = cluster.root / "web_src"
    src.write_text("".join(line + "\n" for line in lines[:2001]))
    cluster.query("01", "create", str(src), "web_src", timeout=60)
    job = cluster.query("02", "RainStorm", "signs_by_category", "count", "web_src", "web_out",
                        "3", "--op1-args", "Punched Telespar", "--follow", "--detach",
                        timeout=60)["job"]
    wait_until(lambda: cluster.query("04", "job", job)["state"] == "running", 30,
               what="the job to run")
    shown = page(cluster, browser)
    assert shown.members == {vm: "alive" for vm in cluster.vms}
    doc = cluster.query("04", "job", job)
    assert shown.jobs.get(job) == "running"
    assert shown.tasks == {t["task"]: (t["vm"], "running") for t in doc["tasks"]}

    leader = cluster.query("01", "leader")["leader"]
    # an op2 task runs to the job's end (a source that read its partition is done, and
    # is not started again)
    victim = next(t["vm"] for t in doc["tasks"] if t["task"].startswith("op2-")
                  and t["vm"] not in (leader, PAGE_VM))
    moved = {t["task"] for t in doc["tasks"] if t["vm"] == victim}
    killed = time.time()
    cluster.crash(victim)
    # Readings of the page, each stamped with the time its node answered, until well past
    # the bounds: every one read after the detection bound must show the node failed, and
    # every one read MOVE_BOUND later its tasks running elsewhere.
    readings = []
    while not readings or readings[-1][0] < detection(cluster) + MOVE_BOUND + 2:
        shown = page(cluster, browser)
        readings.append((shown.read_at - killed, shown.members.get(victim) == "failed",
                         all(shown.tasks.get(t, (victim,))[0] != victim and
                             shown.tasks[t][1] == "running" for t in moved)))
    print("readings (seconds after the kill, shown failed, tasks moved):",
          [(round(t, 2), f, m) for t, f, m in readings])
    late = [r for r in readings if r[0] > detection(cluster) + FETCH_MARGIN]
    assert late and all(failed for _, failed, _ in late), \
        f"vm{victim} not shown failed after the detection bound: {readings}"
    later = [r for r in readings if r[0] > detection(cluster) + MOVE_BOUND]
    assert later and all(on_others for _, _, on_others in later), \
        f"tasks {sorted(moved)} of vm{victim} not shown moved: {readings}"
    assert shown.jobs.get(job) == "running" and set(shown.members) == set(cluster.vms)
    more = cluster.root / "web_src.more"
    more.write_text("".join(line + "\n" for line in lines[2001:]))
    cluster.query("06", "append", str(more), "web_src", timeout=60)
    wait_until(lambda: cluster.query("04", "job", job)["records_in"] == len(lines), 60,
               interval=0.2, what="the appended lines read")

    shot = tmp_path / "page.png"
    chromium(browser, f"http://127.0.0.1:{cluster.ports[PAGE_VM] + OFFSET}/#file=web_src",
             f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if os.environ.get("RAINSTORM_SCREENSHOT"):
        shutil.copy(shot, os.environ["RAINSTORM_SCREENSHOT"])
    cluster.query("03", "stop", job, timeout=60)
