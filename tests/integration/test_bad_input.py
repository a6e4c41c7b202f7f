"""Garbage, truncated, oversized and unauthenticated input leaves every node up and correct."""

from __future__ import annotations

import json
import random
import socket

import pytest

from cluster import wire
from cluster.local_cluster import wait_until
from tests import fuzz

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

SECRET = "s3cret"


def udp_junk(rng: random.Random) -> list[bytes]:
    good_key = wire.secret_key(SECRET)
    return [
        bytes(rng.getrandbits(8) for _ in range(300)),
        b"\x00" * 1000,
        b"{not json}\n",
        wire.encode({"t": "ping", "seq": 1}),                       # no MAC
        wire.encode({"t": "ping", "seq": 1}, b"wrong secret"),      # wrong MAC
        wire.encode({"t": "ping", "m": 5, "g": "x"}, good_key),     # authentic but malformed
        wire.encode({"t": "update", "g": [{"id": "99@x:1@1", "addr": 3}]}, good_key),
        wire.encode({"t": "no_such_type"}, good_key),
        # Authentic, well-formed JSON with poisoned content that spreads by gossip:
        wire.encode({"t": "update", "from": "x", "g": [
            {"id": "99@127.0.0.1:bad@1", "addr": "127.0.0.1:bad", "st": "alive", "inc": 0},
            {"id": "98@127.0.0.1:99999@1", "addr": "127.0.0.1:99999", "st": "alive", "inc": 0}]},
            good_key),
        wire.encode({"t": "update", "from": "x", "g": [{"mode": True, "ver": 10**400}]}, good_key),
        b'{"t": "update", "from": "x", "g": [{"mode": true, "ver": Infinity}]}',
        wire.encode({"t": "update", "from": "x", "g": [{"mode": True, "ver": "7"}]}, good_key),
        b"a" * 65000,                                              # oversized
    ]


def tcp_junk(rng: random.Random) -> list[bytes]:
    good_key = wire.secret_key(SECRET)
    return [
        bytes(rng.getrandbits(8) for _ in range(5000)),
        b'{"t": "ctl", "argv": ["list_mem"]}\n',                   # no MAC
        wire.encode({"t": "ctl", "argv": ["list_mem"]}, b"wrong secret"),
        wire.encode({"t": "no_such_type", "bulk": 10**15}, good_key),
        wire.encode({"t": "ctl", "argv": "list_mem"}, good_key),  # authentic, bad argv
        wire.encode({"t": "ctl", "argv": ["list_mem"]}, good_key)[:20],    # truncated
    ]


def test_junk_on_every_port_is_rejected_and_logged_and_the_cluster_stays_correct(local_cluster):
    cluster = local_cluster(5, secret=SECRET)
    # A line that never ends: refused once it passes the size limit, not buffered forever.
    with socket.create_connection(cluster.address("02"), timeout=10) as sock:
        try:
            for _ in range(20):
                sock.sendall(b"x" * (1 << 20))
        except OSError:
            pass
    wait_until(lambda: "line longer than" in cluster.log("02"), timeout=10,
               what="the endless line to be refused")
    rng = random.Random(42)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for vm in cluster.vms:
        for datagram in udp_junk(rng):
            udp.sendto(datagram, cluster.address(vm))
        for data in tcp_junk(rng):
            assert fuzz.send_tcp(cluster.address(vm), [data]), f"vm{vm} refused a connection"
    udp.close()
    for vm in cluster.vms:
        assert cluster.procs[vm].poll() is None, f"node {vm} died"
        wait_until(lambda: "BADINPUT udp" in cluster.log(vm) and "BADINPUT tcp" in cluster.log(vm),
                   timeout=5, what=f"vm{vm} to log the junk")
    cluster.wait_converged(cluster.vms, timeout=5)
    cluster.kill("04")
    cluster.wait_converged(["01", "02", "03", "05"], timeout=6)


def test_ctl_with_the_wrong_secret_is_refused(local_cluster):
    cluster = local_cluster(2, secret=SECRET)
    wrong = cluster.root / "wrong.ini"
    wrong.write_text(cluster.config_path.read_text().replace(f"secret = {SECRET}", "secret = nope"))
    import subprocess
    import sys
    from cluster.local_cluster import RAINSTORM
    result = subprocess.run([sys.executable, str(RAINSTORM), "ctl", "--vm", "01", "--config",
                             str(wrong), "--json", "list_mem"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode != 0
    assert json.loads(result.stdout)["ok"] is False
    assert "members" not in result.stdout
    assert cluster.procs["01"].poll() is None
