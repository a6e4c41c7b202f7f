"""The HyDFS REPL commands (INTERFACE.md, "REPL commands: HyDFS").

`register` adds them to the node's command registry; `routes(client)` is the one message a
node serves for them (``hydfs.client_append``: a node appending its own local file, for
`multiappend`). `list_mem_ids` is the membership list with ring ids, so it lives here.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from cluster.commands import CommandError, CommandRegistry, Context, Result, UsageError, expect_args
from cluster.config import ConfigError, normalize_vm
from cluster.errors import HandlerError
from cluster.messages import OK
from hydfs.client import HydfsClient, HydfsError
from hydfs.messages import CLIENT_APPEND
from hydfs.ring import ring_position
from membership.commands import member_doc, members_table
from membership.service import MembershipService


def _run(fn, *args):
    try:
        return fn(*args)
    except HydfsError as exc:
        raise CommandError(str(exc), exc.code) from None


def routes(client: HydfsClient) -> dict:
    def handle_client_append(conn, msg: dict) -> None:
        try:
            info = client.append(str(msg["path"]), str(msg["name"]))
        except HydfsError as exc:
            raise HandlerError(exc.code, str(exc)) from None
        conn.send({"t": OK, "size": info["size"]})
    return {CLIENT_APPEND: handle_client_append}


def register(registry: CommandRegistry, client: HydfsClient,
             membership: MembershipService) -> None:
    service = client.service
    bits = service.bits

    def list_mem_ids(ctx: Context, args: list) -> Result:
        expect_args(args, 0, "list_mem_ids")
        members = sorted((member_doc(mb, ring_position(mb.vm, bits))
                          for mb in membership.members()),
                         key=lambda d: (d["ring_id"], d["vm"]))
        return Result(members_table(members), {"members": members})

    def create(ctx: Context, args: list) -> Result:
        local, name = expect_args(args, 2, "create LOCAL HYDFS")
        info = _run(client.create, ctx.local_path(local), name)
        return Result(f"created {name} ({info['size']} bytes) on vm{', vm'.join(info['replicas'])}",
                      dict(info, ok=True))

    def get(ctx: Context, args: list) -> Result:
        name, local = expect_args(args, 2, "get HYDFS LOCAL")
        info = _run(client.get, name, ctx.local_path(local))
        source = "the cache" if info["cached"] else f"vm{info['replica']}"
        return Result(f"got {name} ({info['size']} bytes) from {source} into {local}",
                      dict(info, ok=True))

    def append(ctx: Context, args: list) -> Result:
        local, name = expect_args(args, 2, "append LOCAL HYDFS")
        info = _run(client.append, ctx.local_path(local), name)
        return Result(f"appended {info['size']} bytes to {name}", dict(info, ok=True))

    def merge(ctx: Context, args: list) -> Result:
        (name,) = expect_args(args, 1, "merge HYDFS")
        info = _run(client.merge, name)
        text = (f"{name} already merged (generation {info['gen']})" if info["already"] else
                f"merged {info['merged']} appends of {name} into generation {info['gen']} "
                f"in {info['seconds']:.3f} s")
        return Result(text, dict(info, ok=True))

    def ls(ctx: Context, args: list) -> Result:
        (name,) = expect_args(args, 1, "ls HYDFS")
        doc = _run(client.ls, name)
        lines = [f"{name}  ring_id {doc['ring_id']}"]
        lines += [f"  vm{r['vm']}  ring_id {r['ring_id']}" + _holding(r) for r in doc["replicas"]]
        return Result("\n".join(lines), doc)

    def store(ctx: Context, args: list) -> Result:
        expect_args(args, 0, "store")
        files = [{"name": n, "ring_id": ring_position(n, bits), "size": _size(service, n)}
                 for n in service.store.names()]
        doc = {"vm": service.vm, "ring_id": ring_position(service.vm, bits), "files": files}
        lines = [f"vm{service.vm}  ring_id {doc['ring_id']}  {len(files)} files"]
        lines += [f"  {f['name']}  ring_id {f['ring_id']}" for f in files]
        return Result("\n".join(lines), doc)

    def getfromreplica(ctx: Context, args: list) -> Result:
        vm, name, local = expect_args(args, 3, "getfromreplica NN HYDFS LOCAL")
        vm = _vm(vm, service)
        info = _run(client.get_from_replica, vm, name, ctx.local_path(local))
        return Result(f"got {name} ({info['size']} bytes) as vm{vm} holds it into {local}",
                      dict(info, ok=True))

    def multiappend(ctx: Context, args: list) -> Result:
        if len(args) < 2 or not all("=" in a for a in args[1:]):
            raise UsageError("usage: multiappend HYDFS NN=LOCAL [NN=LOCAL ...]")
        name = args[0]
        jobs = [(_vm(a.split("=", 1)[0], service), ctx.local_path(a.split("=", 1)[1]))
                for a in args[1:]]
        # Its own threads: the shared pool must stay free for the appends' coordinators.
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            results = list(pool.map(lambda job: _call(service, job, name), jobs))
        lines, docs, failed = [], [], 0
        for (vm, path), r in zip(jobs, results):
            ok = isinstance(r, dict)
            failed += not ok
            lines.append(f"vm{vm}: " + (f"appended {r['size']} bytes" if ok else f"failed: {r}"))
            docs.append({"vm": vm, "ok": ok, **({"size": r["size"]} if ok else {"error": str(r)})})
        if failed:
            raise CommandError(f"{failed} of {len(jobs)} appends failed: " + "; ".join(lines))
        return Result("\n".join(lines), {"ok": True, "appends": docs})

    registry.add("list_mem_ids", list_mem_ids, "list_mem_ids",
                 "the membership list with ring ids, sorted by ring id")
    registry.add("create", create, "create LOCAL HYDFS", "copy a local file into HyDFS")
    registry.add("get", get, "get HYDFS LOCAL", "copy a HyDFS file to a local file")
    registry.add("append", append, "append LOCAL HYDFS", "append a local file to a HyDFS file")
    registry.add("merge", merge, "merge HYDFS", "make every replica of a file identical")
    registry.add("ls", ls, "ls HYDFS", "the file's ring id and its replicas")
    registry.add("store", store, "store", "the files this node holds")
    registry.add("getfromreplica", getfromreplica, "getfromreplica NN HYDFS LOCAL",
                 "the file as node NN holds it now")
    registry.add("multiappend", multiappend, "multiappend HYDFS NN=LOCAL ...",
                 "the named nodes append their local files at the same time")


def _holding(replica: dict) -> str:
    if replica["holds"]:
        return ""
    return "  (not answering)" if replica.get("reachable") is False else "  (copying)"


def _call(service, job, name: str):
    vm, path = job
    try:
        return service.peers.call(vm, {"t": CLIENT_APPEND, "name": name, "path": path},
                                  timeout=120)
    except Exception as exc:      # reported per node in the command's answer
        return exc


def _vm(text: str, service) -> str:
    """A node number of this cluster's config; a usage error otherwise."""
    try:
        service.config.address(text)
        return normalize_vm(text)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _size(service, name: str) -> int | None:
    """The size of this node's copy of the file, None if it went meanwhile."""
    st = service.store.get_state(name)
    return None if st is None else st.size
