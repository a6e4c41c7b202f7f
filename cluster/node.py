"""The node process: config, logging, the services, the REPL and a graceful exit.

One node is one OS process. It binds its configured host:port twice (UDP for membership, TCP
for everything else), starts the services, and reads REPL commands from standard input. End
of input does not stop it (so `... </dev/null &` runs it in the background); SIGTERM or
SIGINT makes it leave the group and exit 0.

`ctl` requests arrive over TCP as ``{"t": "ctl", "argv": [...], "cwd": "...", "json": b}``;
the reply is zero or more ``ctl_output`` progress lines, then one ``ctl_result``. While a
command runs, an empty ``ctl_output`` goes out every `KEEPALIVE` seconds, so `ctl` can tell
a slow command from a node that stopped answering (e.g. a SIGSTOPped one).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shlex
import signal
import sys
import threading

from cluster import wire
from cluster.commands import CommandError, CommandRegistry, Context, Result, UsageError
from cluster.config import Config
from cluster.logs import setup_logging
from cluster.server import MessageServer
from hydfs import commands as hydfs_commands
from hydfs.client import HydfsClient
from hydfs.coordinator import Coordinator
from hydfs.service import HydfsService
from membership import commands as membership_commands
from stream import commands as stream_commands
from stream.leader import Leader
from stream.worker import StreamWorker
from membership.service import MembershipService
from membership.suspicion import detection_bound

log = logging.getLogger("node")

KEEPALIVE = 2.0


class Node:
    def __init__(self, config: Config, vm: str):
        self.config = config
        self.vm = vm
        host, port = config.address(vm)
        self.key = wire.secret_key(config.secret)
        self.data_dir = config.node_data_dir(vm)
        os.makedirs(self.data_dir, exist_ok=True)
        self.server = MessageServer(host, port, self.key)
        self.membership = MembershipService(config, vm)
        self.commands = CommandRegistry()
        membership_commands.register(self.commands, self.membership, config.hydfs.ring_bits)
        self.hydfs = HydfsService(config, vm, self.membership, self.server)
        self.coordinator = Coordinator(self.hydfs, self.server)
        self.hydfs_client = HydfsClient(self.hydfs, config.hydfs.cache_mb, write_deadline(config))
        hydfs_commands.register(self.commands, self.hydfs_client, self.server)
        self.worker = StreamWorker(config, vm, self.server, self.hydfs_client)
        self.leader = (Leader(config, vm, self.server, self.membership, self.hydfs_client)
                       if vm == config.leader else None)
        stream_commands.register(self.commands, config, vm, self.leader)
        self.commands.add("help", self._help, "help", "this list")
        self.server.route("ctl", self._handle_ctl)
        self.stopped = threading.Event()

    def start(self) -> None:
        self.server.start()
        self.membership.start()
        self.hydfs.start()
        log.info("START node %s at %s (introducer %s, leader %s, config %s)", self.vm,
                 self.membership.address, self.config.introducer, self.config.leader,
                 self.config.source)

    def shutdown(self) -> None:
        """Leave the group (so others log a leave, not a failure) and stop serving."""
        if self.membership.leave():
            log.info("STOP leaving the group and exiting")
        self.worker.stop()
        self.hydfs.stop()
        self.membership.stop()
        self.server.stop()

    # -- commands ---------------------------------------------------------------------------

    def _help(self, ctx: Context, args: list) -> Result:
        return Result(self.commands.help_text(), {"ok": True, "commands": self.commands.names()})

    def run_command(self, ctx: Context, argv: list[str]) -> Result:
        return self.commands.run(ctx, argv)

    def _handle_ctl(self, conn, message: dict) -> None:
        argv = message.get("argv")
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            conn.send({"t": "ctl_result", "ok": False, "usage": True, "error": "bad argv"})
            return
        outbox: queue.Queue = queue.Queue()
        ctx = Context(cwd=str(message.get("cwd") or "."), json=bool(message.get("json")),
                      emit=lambda line: outbox.put({"t": "ctl_output", "text": line}))
        threading.Thread(target=self._run_ctl, args=(ctx, argv, outbox), daemon=True,
                         name=f"ctl-{argv[0] if argv else ''}").start()
        while True:
            try:
                reply = outbox.get(timeout=KEEPALIVE)
            except queue.Empty:
                reply = {"t": "ctl_output", "keepalive": True}
            conn.send(reply)
            if reply["t"] == "ctl_result":
                return

    def _run_ctl(self, ctx: Context, argv: list, outbox: queue.Queue) -> None:
        try:
            result = self.run_command(ctx, argv)
        except CommandError as exc:
            outbox.put({"t": "ctl_result", "ok": False, "usage": isinstance(exc, UsageError),
                        "error": str(exc)})
        except Exception as exc:
            log.exception("command %s failed", argv)
            outbox.put({"t": "ctl_result", "ok": False, "error": f"internal error: {exc}"})
        else:
            outbox.put({"t": "ctl_result", "ok": True, "text": result.text, "doc": result.doc})


def write_deadline(config: Config) -> float:
    """How long a write keeps retrying: until a failed replica must have been detected."""
    m = config.membership
    return detection_bound(m.protocol_period, m.ping_timeout, m.suspicion,
                           m.suspicion_timeout) + 2 * m.protocol_period + 2.0


# -- the REPL on standard input -----------------------------------------------------------------

def repl(node: Node, stream=sys.stdin, out=sys.stdout) -> None:
    """Run commands from `stream` until it ends. `--json CMD ...` prints the JSON document."""
    interactive = stream.isatty()
    while not node.stopped.is_set():
        if interactive:
            out.write(f"vm{node.vm}> ")
            out.flush()
        line = stream.readline()
        if not line:
            return
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            print(f"error: {exc}", file=out, flush=True)
            continue
        if argv:
            print(run_repl_line(node, argv), file=out, flush=True)


def run_repl_line(node: Node, argv: list[str]) -> str:
    as_json = argv[0] == "--json"
    argv = argv[1:] if as_json else argv
    ctx = Context(cwd=os.getcwd(), json=as_json, emit=lambda text: print(text, flush=True))
    try:
        result = node.run_command(ctx, argv)
    except CommandError as exc:
        return json.dumps({"ok": False, "error": str(exc)}) if as_json else f"error: {exc}"
    return json.dumps(result.doc, indent=2) if as_json else result.text


def run_node(config: Config, vm: str) -> int:
    """The `introducer` and `node` commands: run until SIGTERM/SIGINT; exit status."""
    setup_logging(config.node_log_path(vm), vm)
    try:
        node = Node(config, vm)
    except OSError as exc:
        host, port = config.address(vm)
        what = (f"cannot bind {host}:{port}" if exc.filename is None
                else f"cannot use {exc.filename}")
        print(f"rainstorm: node {vm}: {what}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: node.stopped.set())
    node.start()
    print(f"node {vm} up at {node.membership.address}; log in {config.node_log_path(vm)}; "
          f"type 'help' for commands", flush=True)
    threading.Thread(target=repl, args=(node,), daemon=True, name="repl").start()
    while not node.stopped.wait(1.0):
        pass
    node.shutdown()
    return 0
