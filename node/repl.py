"""The REPL on a node's standard input: one command per line, as `ctl` would run it.

`--json CMD ...` prints the command's JSON document instead of its text. End of input ends
the REPL, not the node (so `... </dev/null &` runs a node in the background). On a
terminal, lines are read with editing, history and Tab completion (line_editing.py).
"""

from __future__ import annotations

import json
import os
import shlex
import sys

from cluster.commands import CommandError, Context
from node.line_editing import LineEditor


def repl(node, stream=sys.stdin, out=sys.stdout) -> None:
    """Run commands from `stream` on `node` until the stream ends or the node stops."""
    interactive = stream.isatty()
    editor = None
    if interactive and stream is sys.stdin:
        editor = LineEditor.for_terminal(
            os.path.join(node.config.node_data_dir(node.vm), ".repl_history"),
            node.commands.names, node.hydfs.store.names)
    while not node.stopped.is_set():
        if editor is not None:
            line = editor.read(f"vm{node.vm}> ")
            if line is None:
                return
        else:
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


def run_repl_line(node, argv: list[str]) -> str:
    as_json = argv[0] == "--json"
    argv = argv[1:] if as_json else argv
    ctx = Context(cwd=os.getcwd(), json=as_json, emit=lambda text: print(text, flush=True))
    try:
        result = node.run_command(ctx, argv)
    except CommandError as exc:
        return json.dumps({"ok": False, "error": str(exc)}) if as_json else f"error: {exc}"
    return json.dumps(result.doc, indent=2) if as_json else result.text
