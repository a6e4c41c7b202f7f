"""The node process: every subsystem, wired together, behind one address.

One node is one OS process. It binds its configured host:port twice (UDP for membership, TCP
for everything else) and runs, bottom to top:

    membership   MembershipService: who is alive (its own UDP socket and thread)
    hydfs        HydfsService (the replica and re-replicator), Coordinator, HydfsClient
    stream       StreamWorker (task processes), Leadership (who leads) and the Leader
                 (active only while this node leads)
    commands     the REPL registry every subsystem adds its commands to; `ctl` runs them
    http         HttpApi (cluster/http_api.py): the live page at / (node/web_page.html),
                 /metrics (every subsystem counts into one Registry, cluster/metrics.py),
                 and the commands' JSON documents at /api/...

This module is the composition root: the only one that imports every subsystem. It creates
them, hands each its collaborators, gives the TCP server each one's dispatch table
(`routes()`), and subscribes the ones that follow membership (`on_membership`). Nothing
below it knows what sits beside it. The REPL on standard input is node/repl.py.

End of input does not stop the node; SIGTERM or SIGINT makes it leave the group and exit 0.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from cluster import ctl, wire
from cluster.commands import CommandRegistry, Context, Result
from cluster.config import Config
from cluster.heap import start_trimming
from cluster.http_api import HttpApi, Response
from cluster.metrics import CONTENT_TYPE, Registry
from cluster.logs import setup_logging
from cluster.messages import CTL
from cluster.server import MessageServer
from hydfs import commands as hydfs_commands
from hydfs.client import HydfsClient
from hydfs.coordinator import Coordinator
from hydfs.ring import ring_position
from hydfs.service import HydfsService
from membership import commands as membership_commands
from membership.service import MembershipService
from membership.suspicion import detection_bound
from node.repl import repl
from stream import commands as stream_commands
from stream.leader import Leader
from stream.leadership import Leadership
from stream.worker import StreamWorker

log = logging.getLogger("node")

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web_page.html")


class Node:
    def __init__(self, config: Config, vm: str):
        self.config = config
        self.vm = vm
        host, port = config.address(vm)
        os.makedirs(config.node_data_dir(vm), exist_ok=True)
        self.server = MessageServer(host, port, wire.secret_key(config.secret))
        self.metrics = Registry()
        self.membership = MembershipService(config, vm, metrics=self.metrics)
        self.hydfs = HydfsService(config, vm, self.membership, self.metrics)
        self.coordinator = Coordinator(self.hydfs)
        self.hydfs_client = HydfsClient(self.hydfs, config.hydfs.cache_mb, write_deadline(config))
        self.leadership = Leadership(config, vm, self.membership, self.hydfs_client,
                                     settle=detection(config))
        self.worker = StreamWorker(config, vm, self.hydfs_client, self.leadership,
                                   self.metrics)
        self.leader = Leader(config, vm, self.membership, self.hydfs_client, detection(config),
                             self.leadership)
        self.leadership.leader = self.leader
        self.metrics.collect(self.leader.metrics)
        self.commands = CommandRegistry()
        self.stopped = threading.Event()
        self.http = self._http_api()
        self._wire()

    def _wire(self) -> None:
        """Dispatch tables to the server, membership changes to those that follow them,
        commands to the registry."""
        routes = [self.hydfs.routes(), self.coordinator.routes(),
                  hydfs_commands.routes(self.hydfs_client), self.worker.routes(),
                  {CTL: lambda conn, msg: ctl.serve(conn, msg, self.run_command)}]
        self.membership.add_listener(self.hydfs.on_membership)
        self.membership.add_listener(self.worker.on_membership)
        self.membership.add_listener(self.leadership.on_membership)
        routes.append(self.leader.routes())
        self.membership.add_listener(self.leader.on_membership)
        for table in routes:
            self.server.add_routes(table)
        bits = self.config.hydfs.ring_bits
        membership_commands.register(self.commands, self.membership,
                                     lambda vm: ring_position(vm, bits))
        hydfs_commands.register(self.commands, self.hydfs_client, self.membership)
        stream_commands.register(self.commands, self.config, self.leadership, self.leader,
                                 detection(self.config))
        self.commands.add("help", self._help, "help", "this list")

    def _http_api(self) -> HttpApi | None:
        """The HTTP server at port + http_offset; None if off, or if that port is taken
        (the node runs on without it, and says so)."""
        if not self.config.http_offset:
            return None
        host, port = self.config.address(self.vm)
        with open(PAGE, "rb") as f:
            page = Response("text/html; charset=utf-8", f.read())
        routes = {"/": lambda: page,
                  "/metrics": lambda: Response(CONTENT_TYPE, self.metrics.render().encode()),
                  "/api/members": lambda: self._doc(["list_mem_ids"]),
                  "/api/jobs": lambda: self._doc(["jobs"]),
                  "/api/jobs/": lambda job: self._doc(["job", job]),
                  "/api/files": self._files_doc,
                  "/api/events": lambda: {"events": self.membership.metrics.timeline()},
                  "/api/node": self._node_doc}
        try:
            return HttpApi(host, port + self.config.http_offset, routes)
        except (OSError, OverflowError) as exc:
            log.warning("HTTP not served: cannot bind %s:%s: %s", host,
                        port + self.config.http_offset, exc)
            return None

    def _node_doc(self) -> dict:
        """What the page needs to know of the cluster beyond the commands' documents."""
        claim = self.leadership.current()
        return {"vm": self.vm, "address": self.membership.address,
                "ring_size": 1 << self.config.hydfs.ring_bits,
                "replicas": self.config.hydfs.replicas,
                "leader": claim.vm if claim else None,
                "detection": round(detection(self.config), 3),
                "departed": [{"vm": m.vm, "status": m.status, "incarnation": m.incarnation,
                              "id": m.id} for m in self.membership.departed()],
                "nodes": sorted(self.config.nodes), "time": time.time()}

    def _doc(self, argv: list[str]) -> dict:
        return self.run_command(Context(json=True), argv).doc

    def _files_doc(self) -> dict:
        """Every file in HyDFS and the live nodes that hold it (each node's `store`)."""
        vms = sorted(m.vm for m in self.membership.members())
        key = wire.secret_key(self.config.secret)

        def store(vm):
            if vm == self.vm:
                return self._doc(["store"])
            try:
                reply = ctl.request(self.config.address(vm), key, ["store"], ".", True,
                                    timeout=5)
            except (OSError, wire.ProtocolError):
                return {"files": []}
            return reply.get("doc") or {"files": []}
        with ThreadPoolExecutor(max_workers=max(len(vms), 1)) as pool:
            stores = dict(zip(vms, pool.map(store, vms)))
        files: dict = {}
        for vm, doc in stores.items():
            for f in doc.get("files", []):
                entry = files.setdefault(f["name"], {"name": f["name"], "ring_id": f.get(
                    "ring_id"), "replicas": []})
                entry["replicas"].append(vm)
                entry["size"] = max(entry.get("size") or 0, f.get("size") or 0)
        return {"files": sorted(files.values(), key=lambda f: f["name"])}

    def start(self) -> None:
        if self.http is not None:
            self.http.start()
        self.server.start()
        self.membership.start()
        self.hydfs.start()
        self.coordinator.start()
        self.leadership.start()
        log.info("START node %s at %s (introducer %s, leader %s, config %s)", self.vm,
                 self.membership.address, self.config.introducer, self.config.leader,
                 self.config.source)
        if self.http is not None:
            log.info("START HTTP at http://%s:%s/ (the live page; also /metrics, /api/...)",
                     *self.http.address[:2])

    def shutdown(self) -> None:
        """Leave the group (so others log a leave, not a failure) and stop serving."""
        if self.membership.leave():
            log.info("STOP leaving the group and exiting")
        self.leadership.stop()
        self.worker.stop()
        self.coordinator.stop()
        self.hydfs.stop()
        self.membership.stop()
        self.server.stop()
        if self.http is not None:
            self.http.stop()

    def run_command(self, ctx: Context, argv: list[str]) -> Result:
        return self.commands.run(ctx, argv)

    def _help(self, ctx: Context, args: list) -> Result:
        return Result(self.commands.help_text(), {"ok": True, "commands": self.commands.names()})


def detection(config: Config) -> float:
    """How long the cluster takes at most to declare a crashed node failed."""
    m = config.membership
    return detection_bound(m.protocol_period, m.ping_timeout, m.suspicion, m.suspicion_timeout)


def write_deadline(config: Config) -> float:
    """How long a write keeps retrying: until a failed replica must have been detected."""
    return detection(config) + 2 * config.membership.protocol_period + 2.0


def run_node(config: Config, vm: str) -> int:
    """The `introducer` and `node` commands: run until SIGTERM/SIGINT; exit status."""
    setup_logging(config.node_log_path(vm), vm)
    start_trimming()
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
