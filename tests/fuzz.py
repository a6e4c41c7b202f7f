"""A seeded fuzzer for every port of a node: UDP membership, TCP (control and data: one
port) and HTTP. `make fuzz` runs 100,000 frames per node and port; the test suite runs
10,000 (tests/integration/test_fuzz.py). One seed replays a run exactly (`--seed`).

What it sends, per port (the frame kinds are `UDP_KINDS`, `TCP_KINDS`, `HTTP_KINDS`):
random bytes; truncated, endless and oversized lines; JSON of every message type of every
catalogue with wrong types, missing keys, huge numbers, NaN and deep nesting, and hostile
names (`../`, absolute paths, NUL); bulk headers whose length lies; valid-looking messages
from unknown, failed and departed members; replays of authentic messages that nodes sent
before (older pings, acks, gossip, a departed member's leave). HTTP gets junk request
lines, unknown methods, traversal paths, huge and endless headers.

Who may send what: the cluster runs with a secret. Frames are unauthenticated, signed with
a wrong key, or signed with the cluster's key; the signed ones are junk content, replays,
or claims about members that are gone, never a well-formed order with effects (a holder of
the secret is a member of the cluster: an authentic `leave` order is obeyed, as it must be).

After the run (`check`), every node must be up and answer, list the same members (same ids:
nobody failed falsely, nobody bogus joined), hold the HyDFS file made before the run byte for
byte on every replica, and have logged its rejections (rate-limited: far fewer log lines
than frames).

    python -m tests.fuzz [--frames 100000] [--nodes 4] [--seed N]
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

from cluster import wire
from cluster.local_cluster import HTTP_OFFSET, LocalCluster, wait_until
from cluster.messages import CLUSTER, CTL
from hydfs.messages import HYDFS
from membership.messages import MEMBERSHIP
from stream.messages import STREAM

SECRET = "fuzz-secret"
KEY = wire.secret_key(SECRET)
TYPES = [t for catalogue in (CLUSTER, HYDFS, STREAM) for t in
         (catalogue[name] for name in catalogue.names())]
UDP_TYPES = [MEMBERSHIP[name] for name in MEMBERSHIP.names()]
HOSTILE_NAMES = ["../../etc/passwd", "/etc/passwd", "a/../../b", "..", ".", "", "x\x00y",
                 "rainstorm/../../../x", "a" * 5000, "~root/.ssh", "C:\\windows", "%2e%2e/x"]
UDP_KINDS = ("random", "oversized", "bad_json", "wrong_types", "unsigned_valid",
             "wrong_key", "from_the_dead", "replay")
TCP_KINDS = ("random", "truncated", "endless", "bad_json", "wrong_types", "hostile_names",
             "lying_bulk", "unsigned_valid", "wrong_key", "deep_nesting")
HTTP_KINDS = ("random", "bad_method", "traversal", "huge_header", "many_headers",
              "no_end", "bad_version")
MAX_UDP = 65507               # the most one IPv4 datagram holds (a node refuses > 60 KiB)
PACE = 4000                   # frames per second per port at most: a flood is another test


class Frames:
    """Seeded frame makers. `known`: member records of the cluster now; `dead`: records of
    members that failed or left (their ids are tombstones); `captured`: authentic messages
    nodes sent before, to replay."""

    def __init__(self, seed: int, known: list, dead: list, captured: list):
        self.rng = random.Random(seed)
        self.known, self.dead, self.captured = known, dead, captured

    # -- values -------------------------------------------------------------------------

    def weird(self, depth: int = 0):
        r = self.rng
        pick = r.randrange(14)
        if pick == 0:
            return None
        if pick == 1:
            return r.choice([True, False])
        if pick == 2:
            return r.choice([-1, 0, 2 ** 63, -(2 ** 63), 10 ** 400, 2 ** 1000])
        if pick == 3:
            return r.choice([float("nan"), float("inf"), -float("inf"), 1e308, -0.0])
        if pick == 4:
            return r.choice(HOSTILE_NAMES)
        if pick == 5:
            return "".join(chr(r.randrange(32, 0x2FFF)) for _ in range(r.randrange(40)))
        if pick == 6 and depth < 3:
            return [self.weird(depth + 1) for _ in range(r.randrange(5))]
        if pick == 7 and depth < 3:
            return {self.text(): self.weird(depth + 1) for _ in range(r.randrange(5))}
        if pick == 8:
            return self.nested(r.randrange(10, 3000))
        if pick == 9:
            return [r.randrange(-5, 5)] * r.randrange(1000)
        if pick == 10:
            return r.randrange(-10, 10 ** 6)
        if pick == 11:
            return "x" * r.choice([0, 1, 64, 65536])
        if pick == 12:
            return self.rng.choice(self.known or [{}])
        return {"id": 5, "addr": [], "st": "alive", "inc": "0"}

    def text(self) -> str:
        return self.rng.choice(["t", "from", "name", "seq", "id", "bulk", "job", "task", "m",
                                "g", "epoch", "argv", "x" * 50, "", "\u0000"])

    def nested(self, depth: int):
        value: object = 0
        for _ in range(depth):
            value = [value] if self.rng.random() < 0.5 else {"a": value}
        return value

    def message(self, types, hostile: bool = False) -> dict:
        """A message of a real type, its fields filled with junk (at least one wrong)."""
        kind = self.rng.choice(types)
        msg = {"t": kind}
        for name in kind.fields:
            if self.rng.random() < 0.85:
                msg[name] = self.weird()
        if hostile:
            msg["name"] = self.rng.choice(HOSTILE_NAMES)
        if kind == CTL:             # never a well-formed order (see the module docstring)
            msg["argv"] = self.rng.choice([None, 5, "leave", [[]], {"a": 1}, [None]])
        return msg

    def dumps(self, msg: dict) -> bytes:
        try:
            return json.dumps(msg, separators=(",", ":")).encode("utf-8", "surrogatepass")
        except (ValueError, RecursionError):
            return b'{"t":"ping","seq":' + b"[" * 5000 + b"]" * 5000 + b"}"

    def signed(self, body: bytes, key: bytes | None) -> bytes:
        """`body` as one line, with a MAC by `key` (None: without one)."""
        if key is None:
            return body + b"\n"
        import hashlib
        import hmac
        return hmac.new(key, body, hashlib.sha256).hexdigest().encode() + b" " + body + b"\n"

    def any_key(self):
        return self.rng.choice([None, b"not the secret", KEY, KEY])

    # -- per port -----------------------------------------------------------------------

    def udp(self, kind: str) -> bytes:
        r = self.rng
        if kind == "random":
            return r.randbytes(r.randrange(1, 1500))
        if kind == "oversized":
            return b"{" + b"a" * r.choice([60 * 1024 + 1, 65000])
        if kind == "bad_json":
            return self.signed(r.choice([b"{", b"[]", b"null", b'{"t":}', b"\xff\xfe",
                                         b'{"t": NaN}', b"1e999999"]), self.any_key())
        if kind == "wrong_types":
            return self.signed(self.dumps(self.message(UDP_TYPES)), self.any_key())
        if kind == "unsigned_valid":            # a perfect join, ping, update: no MAC
            return self.signed(self.dumps(self.lookalike()), None)
        if kind == "wrong_key":
            return self.signed(self.dumps(self.lookalike()), b"guessed secret")
        if kind == "from_the_dead":             # authentic, from members that are gone
            return self.signed(self.dumps(self.from_dead()), KEY)
        return self.signed(self.dumps(self.replay()), KEY)

    def lookalike(self) -> dict:
        """A well-formed membership message about a member nobody knows."""
        stranger = {"id": f"{self.rng.randrange(11, 99)}@127.0.0.1:{self.rng.randrange(1, 9)}"
                          f"@{self.rng.randrange(10 ** 12)}", "addr": "127.0.0.1:1",
                    "st": "alive", "inc": self.rng.randrange(100)}
        return self.rng.choice([
            {"t": "join", "m": stranger},
            {"t": "ping", "seq": 1, "from": stranger["id"], "m": stranger, "g": [stranger]},
            {"t": "update", "from": stranger["id"],
             "g": [dict(m, st="failed") for m in self.known]},
            {"t": "sync_req", "from": stranger["id"], "m": stranger}])

    def from_dead(self) -> dict:
        if not self.dead:
            return {"t": "ack", "seq": 0, "from": "nobody"}
        ghost = dict(self.rng.choice(self.dead), st="alive")
        ghost["inc"] = ghost.get("inc", 0) + self.rng.randrange(3)
        return self.rng.choice([
            {"t": "ping", "seq": self.rng.randrange(10 ** 6), "from": ghost["id"], "m": ghost,
             "g": [ghost]},
            {"t": "update", "from": ghost["id"], "g": [ghost]},
            {"t": "join", "m": ghost},
            {"t": "sync_req", "from": ghost["id"], "m": ghost}])

    def replay(self) -> dict:
        return self.rng.choice(self.captured) if self.captured else self.from_dead()

    def tcp(self, kind: str) -> list[bytes]:
        """The pieces to send on one connection, in order."""
        r = self.rng
        if kind == "random":
            return [r.randbytes(r.randrange(1, 4000))]
        if kind == "truncated":
            line = self.signed(self.dumps(self.message(TYPES)), self.any_key())
            return [line[:r.randrange(1, max(2, len(line) - 1))]]
        if kind == "endless":                  # past wire.MAX_LINE_BYTES, never a newline
            return [b"x" * (1 << 20)] * 17
        if kind == "bad_json":
            return [self.signed(r.choice([b"{", b"[1,2]", b'{"t":5}', b"\xc3\x28", b'"t"',
                                          b'{"t":"hydfs.get","name":NaN}']), self.any_key())]
        if kind == "wrong_types":
            return [self.signed(self.dumps(self.message(TYPES)), self.any_key())]
        if kind == "hostile_names":
            return [self.signed(self.dumps(self.message(TYPES, hostile=True)), KEY)]
        if kind == "lying_bulk":                # valid names: the payload handling runs
            msg = self.message([t for t in TYPES if t.startswith("hydfs.")])
            msg["name"] = f"fuzz_lie_{r.randrange(100)}"
            msg["bulk"] = r.choice([10, 1 << 20, 1 << 40, -5, "12", 1 << 41])
            sent = r.choice([0, 3, 100, 5000])
            return [self.signed(self.dumps(msg), r.choice([KEY, None])), r.randbytes(sent)]
        if kind == "unsigned_valid":
            return [self.signed(self.dumps({"t": "hydfs.summary", "name": "fuzz_file"}), None)]
        if kind == "wrong_key":
            return [self.signed(self.dumps({"t": "ctl", "argv": ["leave"], "cwd": "/",
                                            "json": True}), b"guessed secret")]
        return [self.signed(self.dumps({"t": r.choice(TYPES), "x": self.nested(
            r.randrange(500, 20000))}), r.choice([KEY, None]))]

    def http(self, kind: str) -> bytes:
        r = self.rng
        if kind == "random":
            return r.randbytes(r.randrange(1, 3000))
        if kind == "bad_method":
            return (r.choice([b"POST", b"DELETE", b"PUT", b"BREW", b"\x00\x01"]) +
                    b" /api/members HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        if kind == "traversal":
            path = r.choice([b"/../../etc/passwd", b"/%2e%2e/%2e%2e/etc/passwd",
                             b"/api/jobs/../../../config.ini", b"//etc/passwd",
                             b"/api/jobs/%00", b"/api/files/x", b"/metrics/../api"])
            return b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        if kind == "huge_header":
            return b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n"
        if kind == "many_headers":
            return b"GET / HTTP/1.1\r\n" + b"X-A: 1\r\n" * 150 + b"\r\n"
        if kind == "no_end":
            return b"GET /api/members HTTP/1.1\r\nHost: x\r\n"      # then close
        return b"GET / HTTP/9.9\r\n\r\n"


def send_tcp(address, pieces: list[bytes]) -> bool:
    """Send `pieces` on a new connection; False if it could not even connect."""
    try:
        sock = socket.create_connection(address, timeout=5)
    except OSError:
        return False
    try:
        with sock:
            for piece in pieces:
                sock.sendall(piece)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(2)
            while sock.recv(65536):
                pass
    except OSError:
        pass                          # refused mid-way: what a node may do to junk
    return True


def _ask_raw(address, line: bytes) -> bytes:
    """What a node answers one raw request line with (b"" if nothing)."""
    try:
        with socket.create_connection(address, timeout=5) as sock:
            sock.sendall(line)
            sock.settimeout(5)
            return sock.recv(65536)
    except OSError:
        return b""


def run(cluster: LocalCluster, vms: list, frames: int, seed: int, frames_of) -> dict:
    """`frames` frames to each of UDP, TCP and HTTP of every node in `vms`; counts by kind."""
    counts: dict = {}
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rng = random.Random(seed)
    try:
        for port, kinds in (("udp", UDP_KINDS), ("tcp", TCP_KINDS), ("http", HTTP_KINDS)):
            for vm in vms:
                started = time.monotonic()
                host, base = cluster.address(vm)
                for i in range(frames):
                    kind = rng.choice(kinds)
                    counts[f"{port} {kind}"] = counts.get(f"{port} {kind}", 0) + 1
                    if port == "udp":
                        udp.sendto(frames_of.udp(kind)[:MAX_UDP], (host, base))
                        sent = True
                    elif port == "tcp":
                        sent = send_tcp((host, base), frames_of.tcp(kind))
                    else:
                        sent = send_tcp((host, base + HTTP_OFFSET), [frames_of.http(kind)])
                    if not sent:
                        counts["unsent"] = counts.get("unsent", 0) + 1
                    ahead = (i + 1) / PACE - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
    finally:
        udp.close()
    return counts


# -- the cluster around a run ----------------------------------------------------------------

def prepare(cluster: LocalCluster) -> tuple[list, list, list, bytes, tuple]:
    """A HyDFS file to check afterwards, and what the frames need: the members now, the
    records of a departed and of a failed member (a node left, another was killed -9, both
    restarted under new ids), and messages to replay (authentic, older than now)."""
    content = random.Random(7).randbytes(200_000)
    path = cluster.root / "fuzz_file.bin"
    path.write_bytes(content)
    cluster.query("01", "create", str(path), "fuzz_file", timeout=60)
    before = {m["vm"]: m for m in cluster.query("01", "list_mem")["members"]}
    cluster.query(cluster.vms[-1], "leave")
    cluster.restart(cluster.vms[-1])
    cluster.crash(cluster.vms[-2])
    cluster.restart(cluster.vms[-2])
    cluster.wait_converged(cluster.vms, timeout=30)
    now = cluster.query("01", "list_mem")["members"]
    record = lambda m, st: {"id": m["id"], "addr": m["address"], "st": st,  # noqa: E731
                            "inc": m["incarnation"]}
    known = [record(m, "alive") for m in now]
    dead = [record(before[vm], "alive") for vm in cluster.vms[-2:]]
    captured = [{"t": "ping", "seq": 1, "from": m["id"], "to": now[0]["id"],
                 "m": record(m, "alive"), "g": []} for m in now]
    captured += [{"t": "ack", "seq": 3, "from": m["id"], "g": [record(m, "alive")]}
                 for m in now]
    captured += [{"t": "update", "from": now[0]["id"],
                  "g": [record(before[cluster.vms[-1]], "left")]},
                 {"t": "update", "from": now[1]["id"],
                  "g": [record(before[cluster.vms[-2]], "failed")]}]
    wait_until(lambda: cluster.query("01", "leader")["epoch"] > 0, 30, what="a leader")
    leader = cluster.query("01", "leader")
    return known, dead, captured, content, (leader["leader"], leader["epoch"])


def check(cluster: LocalCluster, known: list, content: bytes, frames: int,
          fuzzed: list, leader_epoch: tuple) -> list[str]:
    """What is wrong with the cluster after a run (nothing, if it held); `fuzzed`: the
    nodes that were sent `frames` frames a port; `leader_epoch`: (leader, its epoch)
    before."""
    problems = []
    ids = {m["id"] for m in known}
    leaders = {(d["leader"], d["epoch"]) for d in
               (cluster.query(vm, "leader", timeout=20) for vm in cluster.vms)}
    if leaders != {leader_epoch}:
        problems.append(f"the leader changed: {sorted(leaders)}, not {leader_epoch}")
    for vm in cluster.vms:
        if cluster.procs[vm].poll() is not None:
            problems.append(f"vm{vm} exited")
            continue
        listed = {m["id"] for m in cluster.query(vm, "list_mem", timeout=20)["members"]}
        if listed != ids:
            problems.append(f"vm{vm} lists {sorted(listed ^ ids)} differently")
        conn = http.client.HTTPConnection("127.0.0.1", cluster.ports[vm] + HTTP_OFFSET,
                                          timeout=10)
        conn.request("GET", "/api/members")
        if conn.getresponse().status != 200:
            problems.append(f"vm{vm}: HTTP no longer answers")
        conn.close()
        log = cluster.log(vm)
        if vm not in fuzzed:
            continue
        if "BADINPUT udp" not in log or "BADINPUT tcp" not in log or "HTTP from" not in log:
            problems.append(f"vm{vm}: rejections not logged")
        if "Traceback" in log:
            problems.append(f"vm{vm}: an exception escaped to the log: "
                            f"{log[log.index('Traceback'):][:600]}")
        if log.count("\n") > max(frames // 10, 200):
            problems.append(f"vm{vm}: {log.count(chr(10))} log lines for {frames} frames a "
                            f"port: rejections are not rate-limited")
        answer = _ask_raw(cluster.address(vm), Frames(0, [], [], []).signed(json.dumps(
            {"t": "stream.hydfs_fence", "name": "fuzz_file", "key": "k", "epoch": {}}).encode(),
            KEY))
        if b'"bad_request"' not in answer or b"malformed" not in answer:
            problems.append(f"vm{vm}: an authentic malformed request got {answer[:200]!r}")
    holders = cluster.holders("fuzz_file")
    if len(holders) != 3:
        problems.append(f"fuzz_file is held by {holders}, not 3 replicas")
    for replica in holders:
        out = cluster.root / f"fuzz_file.{replica}"
        cluster.query("01", "getfromreplica", replica, "fuzz_file", str(out), timeout=60)
        if out.read_bytes() != content:
            problems.append(f"fuzz_file differs on vm{replica}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100_000, help="per node and port")
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args(argv)
    print(f"fuzz: {args.frames} frames per node and port, {args.nodes} nodes, seed {args.seed}"
          f" (replay: --seed {args.seed})", flush=True)
    with LocalCluster(Path(tempfile.mkdtemp(prefix="rainstorm-fuzz-")), args.nodes,
                      secret=SECRET) as cluster:
        known, dead, captured, content, leader_epoch = prepare(cluster)
        started = time.monotonic()
        counts = run(cluster, cluster.vms, args.frames, args.seed,
                     Frames(args.seed, known, dead, captured))
        print(f"sent {sum(counts.values())} frames in {time.monotonic() - started:.0f} s:",
              ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), flush=True)
        time.sleep(2)
        problems = check(cluster, known, content, args.frames, cluster.vms, leader_epoch)
    for problem in problems:
        print("FAIL", problem)
    print("fuzz: OK, every node up and correct" if not problems else
          f"fuzz: {len(problems)} problems (seed {args.seed})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
