"""The REPL: Tab completion as a rule, and line editing with history under a real
pseudo-terminal (node/repl.py, node/line_editing.py); piped input as plain lines."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.line_editing import complete_words

pytestmark = pytest.mark.timeout(60)

COMMANDS = ["append", "create", "get", "job", "jobs", "leader", "ls", "store"]
NAMES = ["signs", "signs_out", "rainstorm/jobs"]


@pytest.mark.parametrize("line, begin, text, expected", [
    ("", 0, "", COMMANDS + ["--json"]),                 # nothing typed: every command
    ("jo", 0, "jo", ["job", "jobs"]),
    ("--json le", 7, "le", ["leader"]),                 # a command after --json
    ("--", 0, "--", ["--json"]),
    ("get si", 4, "si", ["signs", "signs_out"]),        # after the command: HyDFS names
    ("ls rainstorm/j", 3, "rainstorm/j", ["rainstorm/jobs"]),
    ("get signs ", 10, "", sorted(NAMES)),
    ("xyz", 0, "xyz", []),
])
def test_tab_completes_commands_first_then_hydfs_names(line, begin, text, expected):
    assert complete_words(line, begin, text, COMMANDS, NAMES) == sorted(expected)


FAKE_NODE = """
import sys, threading
from types import SimpleNamespace
from cluster.commands import CommandRegistry, Result
from node.repl import repl
registry = CommandRegistry()
for name in ("jobs", "join", "leader"):
    registry.add(name, lambda ctx, args, name=name: Result(f"ran {name} {args}"), name, "")
node = SimpleNamespace(vm="03", stopped=threading.Event(), commands=registry,
                       run_command=registry.run,
                       config=SimpleNamespace(node_data_dir=lambda vm: sys.argv[1]),
                       hydfs=SimpleNamespace(store=SimpleNamespace(names=lambda: ["signs"])))
reader = threading.Thread(target=repl, args=(node,), daemon=True)   # as node.py runs it
reader.start()
reader.join()
"""


def test_on_a_terminal_tab_completes_the_up_arrow_recalls_and_history_is_kept(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    output = _on_terminal(repo, tmp_path, b"lea\t\n\x1b[A\n\x04")
    assert output.count(b"ran leader []") == 2, output     # Tab, then the up arrow
    history = (tmp_path / ".repl_history").read_text()
    assert "leader" in history
    again = _on_terminal(repo, tmp_path, b"\x1b[A\n\x04")   # a new process reads it back
    assert b"ran leader []" in again, again


def _on_terminal(repo: Path, data_dir: Path, keys: bytes) -> bytes:
    pid, fd = pty.fork()
    if pid == 0:                                         # the child: a REPL on the terminal
        os.chdir(repo)
        os.execv(sys.executable, [sys.executable, "-c", FAKE_NODE, str(data_dir)])
    output = b""
    try:
        output += _read_until(fd, b"vm03> ")
        for key in keys.split(b"\n"):                    # a line at a time, at the prompt
            os.write(fd, key + (b"\n" if key != b"\x04" else b""))
            if key != b"\x04":
                output += _read_until(fd, b"vm03> ")
        os.waitpid(pid, 0)
    finally:
        os.close(fd)
    return output


def _read_until(fd: int, marker: bytes, timeout: float = 15.0) -> bytes:
    got, deadline = b"", time.monotonic() + timeout
    while marker not in got.split(b"\n")[-1] and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                got += os.read(fd, 4096)
            except OSError:
                break
    return got


def test_piped_input_is_read_as_plain_lines_without_prompts():
    out = io.StringIO()
    _piped_node(io.StringIO("leader\n--json leader\n"), out)
    assert out.getvalue().splitlines()[0] == "ran leader []" and "vm03>" not in out.getvalue()


def _piped_node(stream, out):
    import threading
    from types import SimpleNamespace
    from cluster.commands import CommandRegistry, Result
    from node.repl import repl
    registry = CommandRegistry()
    registry.add("leader", lambda ctx, args: Result(f"ran leader {args}", {"leader": "01"}),
                 "leader", "")
    node = SimpleNamespace(vm="03", stopped=threading.Event(), commands=registry,
                           run_command=registry.run)
    repl(node, stream, out)


def test_a_node_started_without_a_terminal_still_reads_its_stdin(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", FAKE_NODE, str(tmp_path)], cwd=repo,
                          input="jobs\n", capture_output=True, text=True, timeout=30)
    assert proc.stdout.strip() == "ran jobs []", proc
