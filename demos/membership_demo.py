"""Membership demo: ten local nodes join, two are killed -9, a third is paused and resumed.

Runs in a scratch directory with fast timings and prints what each step shows, as one would
on the course VMs with `list_mem`. Usage: python -m demos.membership_demo [--keep DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from cluster.local_cluster import LocalCluster, wait_until
from membership.commands import members_table


def show(cluster: LocalCluster, vm: str, title: str) -> None:
    print(f"\n== {title}: list_mem on vm{vm}")
    print(members_table(list(cluster.members(vm).values())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", help="run in this directory and keep its logs")
    args = parser.parse_args()
    root = args.keep or tempfile.mkdtemp(prefix="rainstorm-membership-")
    cluster = LocalCluster(root, 10, membership={"protocol_period": 0.5, "ping_timeout": 0.4,
                                                 "suspicion_timeout": 3.0})
    try:
        started = time.monotonic()
        cluster.start_all()
        show(cluster, "05", f"ten nodes joined in {time.monotonic() - started:.1f} s")
        cluster.kill("03")
        cluster.kill("08")
        started = time.monotonic()
        survivors = [vm for vm in cluster.vms if vm not in ("03", "08")]
        cluster.wait_converged(survivors, timeout=15)
        show(cluster, "01", f"kill -9 of 03 and 08 seen by all in {time.monotonic() - started:.1f} s")
        cluster.pause("06")
        wait_until(lambda: cluster.members("01")["06"]["status"] == "suspect", 10)
        show(cluster, "01", "06 paused (SIGSTOP): suspected")
        cluster.resume("06")
        wait_until(lambda: cluster.members("01")["06"]["status"] == "alive", 10)
        show(cluster, "01", "06 resumed (SIGCONT) within the suspicion timeout: alive, higher incarnation")
        print(f"\nlogs: {root}/logs/vmNN.log   (try: grep -h 'FAIL\\|SUSPECT\\|REFUTE' {root}/logs/*.log)")
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
