"""Start real RainStorm node processes on 127.0.0.1 and poke at them: tests, demos, benchmarks.

`LocalCluster` writes a config.ini with fast timings and free ports into a directory, starts
nodes exactly as a user would (`python rainstorm.py introducer|node --vm NN --config ...`),
and can kill -9, SIGSTOP/SIGCONT and restart any of them. `query` sends a REPL command over
the node's TCP port in-process (fast, for polling); `ctl` runs the real `rainstorm.py ctl`
command line. `wait_until` polls a condition against a deadline: no test sleeps on a guess.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from cluster import ctl, wire
from cluster.messages import CTL_RESULT

REPO = Path(__file__).resolve().parent.parent
RAINSTORM = REPO / "rainstorm.py"

FAST_MEMBERSHIP = {"protocol_period": 0.2, "ping_timeout": 0.3, "suspicion": "on",
                   "suspicion_timeout": 1.5, "monitors": 4}


LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) vm\d+ \w+ \w+: (.*)$")


class CommandFailed(Exception):
    pass


HTTP_OFFSET = 1000            # [cluster] http_offset's default: each node's HTTP port
PORT_RANGE = (20000, 32000)   # below Linux's ephemeral range, so no outgoing connection
                              # can take a port between our check and the node's bind


def free_ports(count: int, http_offset: int = HTTP_OFFSET) -> list[int]:
    """Ports free for both TCP and UDP on 127.0.0.1 right now, each with its HTTP port
    (port + `http_offset`) free for TCP too, and no port another one's HTTP port."""
    ports, held, taken = [], [], set()
    while len(ports) < count:
        port = random.randrange(*PORT_RANGE)
        wanted = [port, port + http_offset] if http_offset else [port]
        if taken & set(wanted):
            continue
        sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM),
                   socket.socket(socket.AF_INET, socket.SOCK_DGRAM)]
        if http_offset:
            sockets.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        try:
            for sock, at in zip(sockets, [port, port, port + http_offset]):
                sock.bind(("127.0.0.1", at))
        except OSError:
            for sock in sockets:
                sock.close()
            continue
        held += sockets
        taken.update(wanted)
        ports.append(port)
    for s in held:
        s.close()
    return ports


def wait_until(condition, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll `condition()` until it returns a truthy value; return it, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except (OSError, CommandFailed, wire.ProtocolError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_error})" if last_error else ""
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}{extra}")
        time.sleep(interval)


class LocalCluster:
    def __init__(self, root: Path, n: int = 10, secret: str = "", membership: dict | None = None,
                 hydfs: dict | None = None, stream: dict | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.n = n
        self.secret = secret
        self.vms = [f"{i:02d}" for i in range(1, n + 1)]
        self.ports = dict(zip(self.vms, free_ports(n)))
        self.membership = dict(FAST_MEMBERSHIP, **(membership or {}))
        self.config_path = self.root / "config.ini"
        self._write_config(hydfs or {}, stream or {})
        self.procs: dict[str, subprocess.Popen] = {}
        self.key = wire.secret_key(secret)

    def _write_config(self, hydfs: dict, stream: dict) -> None:
        lines = ["[cluster]", "introducer = 01", "leader = 01", "data_dir = data",
                 f"secret = {self.secret}", "log_dir = logs", "", "[nodes]"]
        lines += [f"{vm} = 127.0.0.1:{port}" for vm, port in self.ports.items()]
        for name, values in (("membership", self.membership), ("hydfs", hydfs),
                             ("stream", stream)):
            lines += ["", f"[{name}]"] + [f"{k} = {v}" for k, v in values.items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    # -- processes --------------------------------------------------------------------------

    def __enter__(self) -> "LocalCluster":
        """`with LocalCluster(...) as cluster:` starts every node, and stops them after."""
        try:
            self.start_all()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, vm: str, wait: bool = True) -> subprocess.Popen:
        role = ["introducer"] if vm == "01" else ["node", "--vm", vm]
        out = open(self.root / f"vm{vm}.out", "ab")
        proc = subprocess.Popen(
            [sys.executable, str(RAINSTORM), *role, "--config", str(self.config_path)],
            cwd=self.root, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        self.procs[vm] = proc
        if wait:
            wait_until(lambda: self.is_joined(vm), 15, what=f"node {vm} to join")
        return proc

    def start_all(self) -> None:
        self.start("01")
        for vm in self.vms[1:]:
            self.start(vm, wait=False)
        self.wait_converged(self.vms, timeout=20)

    def kill(self, vm: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[vm]
        proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            proc.wait(timeout=15)

    def crash(self, vm: str) -> None:
        """kill -9 of node `vm` and of its task processes at once, as when its machine dies
        (`kill` alone leaves the tasks running until their lease runs out)."""
        pid = self.procs[vm].pid
        for child in children_of(pid):
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.kill(vm)

    def pause(self, vm: str) -> None:
        self.procs[vm].send_signal(signal.SIGSTOP)

    def resume(self, vm: str) -> None:
        self.procs[vm].send_signal(signal.SIGCONT)

    def restart(self, vm: str, wait: bool = True) -> subprocess.Popen:
        if vm in self.procs and self.procs[vm].poll() is None:
            self.kill(vm)
        return self.start(vm, wait=wait)

    def running(self) -> list[str]:
        return [vm for vm, p in self.procs.items() if p.poll() is None]

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def log(self, vm: str) -> str:
        path = self.root / "logs" / f"vm{vm}.log"
        return path.read_text() if path.exists() else ""

    def log_events(self, vms, pattern: str, since: float = 0.0) -> list:
        """(epoch seconds, vm, message) of the log lines of `vms` whose message matches
        `pattern`, at or after `since` (log timestamps are local time, in milliseconds)."""
        wanted = re.compile(pattern)
        events = []
        for vm in vms:
            for line in self.log(vm).splitlines():
                m = LOG_LINE.match(line)
                if m and wanted.search(m.group(2)):
                    at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
                    if at >= since:
                        events.append((at, vm, m.group(2)))
        return sorted(events)

    # -- talking to nodes -------------------------------------------------------------------

    def address(self, vm: str) -> tuple[str, int]:
        return "127.0.0.1", self.ports[vm]

    def query(self, vm: str, *argv: str, timeout: float = 10.0, on_output=None) -> dict:
        """Run a REPL command on node `vm` in-process; its JSON document, or CommandFailed.
        `on_output(line)` sees the command's progress lines as they come."""
        reply = ctl.request(self.address(vm), self.key, list(argv), str(self.root), True,
                            on_output, timeout)
        if reply.get("t") != CTL_RESULT or not reply.get("ok"):
            raise CommandFailed(reply.get("error", str(reply)))
        return reply["doc"]

    def ctl(self, vm: str, *argv: str, json: bool = True, timeout: float = 60,
            options: list[str] = ()) -> subprocess.CompletedProcess:
        """Run `rainstorm.py ctl` as a user would (`options` go before the command)."""
        cmd = [sys.executable, str(RAINSTORM), "ctl", "--vm", vm, "--config",
               str(self.config_path), *options]
        cmd += (["--json"] if json else []) + list(argv)
        return subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, timeout=timeout)

    def holders(self, name: str) -> list[str]:
        """The running nodes that hold a copy of HyDFS file `name` (by their `store`)."""
        return sorted(vm for vm in self.running()
                      if name in {f["name"] for f in self.query(vm, "store")["files"]})

    def members(self, vm: str) -> dict[str, dict]:
        """vm -> member document, as node `vm` lists them."""
        return {m["vm"]: m for m in self.query(vm, "list_mem", timeout=2)["members"]}

    def is_joined(self, vm: str) -> bool:
        try:
            return self.query(vm, "list_self", timeout=2)["status"] in ("alive", "suspect")
        except (OSError, CommandFailed, wire.ProtocolError):
            return False

    def wait_converged(self, expected: list[str], timeout: float, on: list[str] | None = None):
        """Wait until every node in `on` (default: `expected`) lists exactly `expected`."""
        want = set(expected)
        observers = on or expected

        def agreed():
            return all(set(self.members(vm)) == want for vm in observers)
        wait_until(agreed, timeout, what=f"{sorted(observers)} to list exactly {sorted(want)}")


PAGE = os.sysconf("SC_PAGE_SIZE")


def process_table() -> dict[int, tuple[int, int]]:
    """Every process now: pid -> (parent pid, resident bytes), from Linux's /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue              # it ended meanwhile
        table[int(entry)] = (int(fields[1]), int(fields[21]) * PAGE)
    return table


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a node's task processes)."""
    return [child for child, (parent, _) in process_table().items() if parent == pid]
