"""Real nodes on a real (virtual) network: each node in its own network namespace with its own
IP address, all on one port, joined by a Linux bridge. What loopback hides shows here:
a node cut off from the others while its process and clients run on, partitions healing,
addresses that are not 127.0.0.1. Needs root (`ip netns`); `make test-netns` runs the tier.

Layout, for a cluster with tag T (from the process id, so runs never share names):

    bridge  T-b0   198.S.254/24 in the root namespace (the tests talk to nodes from here)
    bridge  T-b1   no address: where a cut-off group is moved (they reach each other only)
    node NN namespace T-nNN, its veth eth0 = 198.S.NN/24, peer T-vNN on a bridge

Nodes start as a user starts them: `python rainstorm.py node --vm NN --config ...`, run in
their namespace with `ip netns exec` (and with libfaketime for a skewed wall clock).
`cut(vms)` moves those nodes' links to T-b1 (a partition: each side works on), `heal()`
moves them back. A client inside a cut-off side runs `rainstorm.py ctl` in that side's
namespace (`ctl_in`), as a user on that machine would.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

from cluster.local_cluster import RAINSTORM, LocalCluster, wait_until

PORT = 7000
# libfaketime (Debian package faketime), which skews a process's wall clock; None if absent.
FAKETIME_LIB = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), None)
_made = 0                 # clusters made by this process


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def netns_available() -> str | None:
    """Why this tier cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no 'ip' command (iproute2)"
    probe = f"rsprobe{os.getpid() % 10000}"
    made = ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    ip("netns", "del", probe, check=False)
    return None


class NetnsCluster(LocalCluster):
    def __init__(self, root: Path, n: int = 10, membership: dict | None = None,
                 hydfs: dict | None = None, stream: dict | None = None, secret: str = ""):
        global _made
        _made += 1                # a namespace may outlive its close() briefly: new names
        self.tag = f"r{os.getpid() % 1000}{_made % 100:02d}"
        # 198.18.0.0/15 is set aside for benchmarking networks (RFC 2544): no real route
        # of the machine's is shadowed by the bridge's address.
        self.subnet = f"198.{18 + _made % 2}.{(os.getpid() + _made // 2) % 250}"
        self._links_made = False
        self.skew: dict[str, str] = {}          # vm -> wall clock offset in s, e.g. "+40"
        super().__init__(root, n, secret=secret, membership=membership, hydfs=hydfs,
                         stream=stream)
        self.ports = {vm: PORT for vm in self.vms}

    # -- the network --------------------------------------------------------------------

    def ns(self, vm: str) -> str:
        return f"{self.tag}-n{vm}"

    def veth(self, vm: str) -> str:
        return f"{self.tag}-v{vm}"

    def host(self, vm: str) -> str:
        return f"{self.subnet}.{int(vm)}"

    def address(self, vm: str) -> tuple[str, int]:
        return self.host(vm), PORT

    def build(self) -> None:
        """The bridges, namespaces and links; `close` removes them."""
        self._links_made = True
        for bridge in ("b0", "b1"):
            ip("link", "add", f"{self.tag}-{bridge}", "type", "bridge")
            ip("link", "set", f"{self.tag}-{bridge}", "up")
        ip("addr", "add", f"{self.subnet}.254/24", "dev", f"{self.tag}-b0")
        for vm in self.vms:
            ns, veth = self.ns(vm), self.veth(vm)
            ip("netns", "add", ns)
            ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("link", "set", veth, "master", f"{self.tag}-b0", "up")
            ip("-n", ns, "addr", "add", f"{self.host(vm)}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")

    def start_all(self) -> None:
        """The network first, then every node (as `with` does)."""
        self.build()
        super().start_all()

    def cut(self, vms: list[str]) -> None:
        """Partition: `vms` reach each other and nobody else (nor the root namespace)."""
        for vm in vms:
            ip("link", "set", self.veth(vm), "master", f"{self.tag}-b1")

    def heal(self) -> None:
        for vm in self.vms:
            ip("link", "set", self.veth(vm), "master", f"{self.tag}-b0")

    def close(self) -> None:
        super().close()
        if self._links_made:
            for vm in self.vms:
                ip("link", "del", self.veth(vm), check=False)
                ip("netns", "del", self.ns(vm), check=False)
            for bridge in ("b0", "b1"):
                ip("link", "del", f"{self.tag}-{bridge}", check=False)

    # -- nodes ----------------------------------------------------------------------------

    def _write_config(self, hydfs: dict, stream: dict) -> None:
        lines = ["[cluster]", "introducer = 01", "leader = 01", "data_dir = data",
                 f"secret = {self.secret}", "log_dir = logs", "", "[nodes]"]
        lines += [f"{vm} = {self.host(vm)}:{PORT}" for vm in self.vms]
        for name, values in (("membership", self.membership), ("hydfs", hydfs),
                             ("stream", stream)):
            lines += ["", f"[{name}]"] + [f"{k} = {v}" for k, v in values.items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    def command(self, vm: str, *argv: str) -> list[str]:
        """`argv` of rainstorm.py, run in node `vm`'s namespace (and clock)."""
        prefix = ["ip", "netns", "exec", self.ns(vm)]
        if vm in self.skew:
            # libfaketime preloaded directly: the `faketime` wrapper's semaphore clashes
            # when several wrapped processes start at once ("sem_open: File exists").
            prefix += ["env", f"LD_PRELOAD={FAKETIME_LIB}", f"FAKETIME={self.skew[vm]}",
                       "FAKETIME_DONT_FAKE_MONOTONIC=1"]
        return prefix + [sys.executable, str(RAINSTORM), *argv]

    def start(self, vm: str, wait: bool = True) -> subprocess.Popen:
        role = ["introducer"] if vm == "01" else ["node", "--vm", vm]
        out = open(self.root / f"vm{vm}.out", "ab")
        proc = subprocess.Popen(self.command(vm, *role, "--config", str(self.config_path)),
                                cwd=self.root, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
        out.close()
        self.procs[vm] = proc
        if wait:
            wait_until(lambda: self.is_joined(vm), 20, what=f"node {vm} to join")
        return proc

    def ctl_in(self, vm: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """`rainstorm.py ctl --vm VM --json ARGV` from inside node `vm`'s namespace."""
        return subprocess.run(self.command(vm, "ctl", "--vm", vm, "--config",
                                           str(self.config_path), "--json", *argv),
                              cwd=self.root, capture_output=True, text=True, timeout=timeout)

