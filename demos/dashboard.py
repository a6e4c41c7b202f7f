"""`make dashboard`: the live page with something to show.

Starts the ten nodes of the config (`make cluster`) unless they run already, puts a
traffic-signs file into HyDFS, starts a following App 2 on it (`--follow --detach`), prints
the page's URL, and then appends a batch of signs every second, so that the page shows the
job's rates moving, until Ctrl-C or --seconds. It then stops the job (its summary is
printed) and leaves the cluster running: `make stop` stops it.

    python -m demos.dashboard [--config config.ini] [--rate 200] [--seconds 600]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from bench.gen_traffic_signs import iter_lines
from cluster import ctl, wire
from cluster.config import load_config
from hydfs.messages import FILE_EXISTS

SRC, DEST = "dashboard_signs", "dashboard_by_category"


class Refused(Exception):
    """A command the node refused; `code` says why (hydfs/messages.py, cluster/errors.py)."""

    def __init__(self, reason: str, code: str | None):
        super().__init__(reason)
        self.code = code
APP2 = ("signs_by_category", "count", "Punched Telespar")


class Cluster:
    def __init__(self, config_path: str):
        self.path = config_path
        self.config = load_config(config_path)
        self.key = wire.secret_key(self.config.secret)
        self.vm = self.config.introducer

    def ask(self, *argv: str, timeout: float = 60) -> dict:
        """A command's JSON document on the introducer's node; Refused if it failed."""
        reply = ctl.request(self.config.address(self.vm), self.key, list(argv), os.getcwd(),
                            True, None, timeout)
        if not reply.get("ok"):
            raise Refused(reply.get("error", str(reply)), reply.get("code"))
        return reply["doc"]

    def members(self) -> int:
        try:
            return len(self.ask("list_mem", timeout=5)["members"])
        except (OSError, wire.ProtocolError, Refused):
            return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="config.ini")
    parser.add_argument("--rate", type=int, default=200, help="signs appended per second")
    parser.add_argument("--seconds", type=float, default=600, help="how long to append")
    args = parser.parse_args(argv)
    cluster = Cluster(args.config)
    if cluster.members() < len(cluster.config.nodes):
        print("starting the local cluster (make cluster) ...", flush=True)
        subprocess.run(["make", "--no-print-directory", "cluster", f"CONFIG={args.config}",
                        f"PYTHON={sys.executable}"], check=True)
    if not cluster.config.http_offset:
        print("http_offset is 0 in the config: no node serves the page", file=sys.stderr)
        return 1
    signs = iter(iter_lines(10 ** 7, seed=int(time.time())))
    work = tempfile.mkdtemp(prefix="rainstorm-dashboard-")
    first = os.path.join(work, "first.csv")
    with open(first, "w") as f:
        f.writelines(next(signs) + "\n" for _ in range(2001))
    try:
        cluster.ask("create", first, SRC)
    except Refused as exc:
        if exc.code != FILE_EXISTS:
            raise
        print(f"{SRC} is in HyDFS already: the job follows it from its start")
    op1, op2, arg = APP2
    dest = f"{DEST}_{int(time.time())}"
    job = cluster.ask("RainStorm", op1, op2, SRC, dest, "3", "--op1-args", arg, "--follow",
                      "--detach")["job"]
    host, port = cluster.config.address(cluster.vm)
    print(f"\njob {job} follows {SRC} (App 2: {op1} | {op2}) into {dest}\n"
          f"\n    open http://{host}:{port + cluster.config.http_offset}/\n"
          f"\n(every node serves the page at its port + {cluster.config.http_offset}). "
          f"Appending {args.rate} signs/s to {SRC}; Ctrl-C stops the appends and the job.",
          flush=True)
    batch = os.path.join(work, "batch.csv")
    try:
        ends = time.monotonic() + args.seconds
        while time.monotonic() < ends:
            started = time.monotonic()
            with open(batch, "w") as f:
                f.writelines(next(signs) + "\n" for _ in range(args.rate))
            cluster.ask("append", batch, SRC)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    except KeyboardInterrupt:
        pass
    summary = cluster.ask("stop", job, timeout=120)
    print(f"\nstopped job {job}: read {summary['records_in']} lines, "
          f"{summary['records_out']} rows in {dest}. The cluster runs on: 'make stop' stops it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
