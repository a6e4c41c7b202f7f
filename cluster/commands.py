"""REPL commands: one registry serves the node's stdin REPL and `rainstorm.py ctl`.

A command is a function `(ctx, args) -> Result`. It returns what a person reads (`text`) and
what a script reads (`doc`, printed by `--json`); a failure is a `CommandError` with a one-line
reason, a misuse a `UsageError`. Long commands report progress through `ctx.emit(line)`.
Each part of the node (membership, HyDFS, RainStorm) registers its own commands.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable


class CommandError(Exception):
    """The command ran and failed: the message is the one-line reason shown to the user;
    `code`, if any, is what a program decides by (a relaying node, for one)."""

    def __init__(self, message: str = "", code: str | None = None):
        super().__init__(message)
        self.code = code


class UsageError(CommandError):
    """The command was called wrongly (unknown name, wrong arguments)."""


@dataclass
class Result:
    text: str = ""
    doc: dict = field(default_factory=lambda: {"ok": True})


@dataclass
class Context:
    cwd: str = "."                                   # where the caller's local paths live
    emit: Callable[[str], None] = lambda line: None  # progress lines while a command runs
    json: bool = False                               # the caller wants a JSON document
    attached: Callable[[], bool] = lambda: True      # is the caller still listening?
    note: Callable[[dict], None] = lambda fields: None   # facts for a program, as it runs
    request: str = ""                                # the caller's id for this request

    # (`note`: e.g. {"job": id} once a job has started, so that a caller that loses the
    # node on the way knows which job to follow. `request`: a request sent again, to
    # another node, carries the same id, so that what it starts is started once.)

    def local_path(self, path: str) -> str:
        return os.path.normpath(os.path.join(self.cwd, os.path.expanduser(path)))


@dataclass(frozen=True)
class Command:
    name: str
    run: Callable[[Context, list], Result]
    usage: str
    help: str


HELP_WIDTH = 40    # usage column of `help`


class CommandRegistry:
    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def add(self, name: str, run, usage: str, help: str) -> None:
        self._commands[name] = Command(name, run, usage, help)

    def names(self) -> list[str]:
        return sorted(self._commands)

    def lookup(self, name: str) -> Command:
        command = self._commands.get(name) or self._commands.get(name.lower())
        if command is None:
            raise UsageError(f"unknown command {name!r} (try 'help')")
        return command

    def run(self, ctx: Context, argv: list[str]) -> Result:
        """Run one command line; raises CommandError/UsageError on failure."""
        if not argv:
            raise UsageError("empty command")
        return self.lookup(argv[0]).run(ctx, argv[1:])

    def help_text(self) -> str:
        """One line per command; a usage too long for the column gets its own line."""
        width = max((len(c.usage) for c in self._commands.values() if len(c.usage) <= HELP_WIDTH),
                    default=HELP_WIDTH)
        lines = []
        for c in sorted(self._commands.values(), key=lambda c: c.name):
            if len(c.usage) <= width:
                lines.append(f"{c.usage:<{width}}  {c.help}")
            else:
                lines += [c.usage, f"{'':<{width}}  {c.help}"]
        return "\n".join(lines)


def expect_args(args: list, count: int, usage: str) -> list:
    if len(args) != count:
        raise UsageError(f"usage: {usage}")
    return args
