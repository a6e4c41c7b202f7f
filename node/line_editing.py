"""Line editing for the REPL on a terminal: history kept in a file, Tab completion.

When the node's standard input is a terminal, the REPL reads lines through the standard
library's `readline` (GNU readline or libedit): arrows move and recall, Ctrl-R searches,
and the history is kept in ``data_dir/vmNN/.repl_history`` (HISTORY_LENGTH lines) across
restarts. Tab completes the command name as the first word (and after `--json`), and the names of
the HyDFS files this node stores after it.
Piped or `</dev/null` input is read as plain lines, as before.

`complete_words` is the rule, pure and tested; `LineEditor` wires it to readline.
"""

from __future__ import annotations

import os

HISTORY_LENGTH = 1000


def complete_words(line: str, begin: int, text: str, commands: list[str],
                   names: list[str]) -> list[str]:
    """The completions of `text`, the word that starts at `begin` of `line`: a command if
    it is the first word (after an optional `--json`), else a HyDFS name."""
    words = line[:begin].split()
    if not words:
        pool = commands + ["--json"]
    elif words == ["--json"]:
        pool = commands
    else:
        pool = names
    return sorted({word for word in pool if word.startswith(text)})


class LineEditor:
    """`input` with readline's editing, history and completion; None if readline is missing."""

    def __init__(self, history_path: str, commands, names):
        """`commands()` and `names()` give the words to complete (called at each Tab)."""
        import readline                 # only here: a node without a terminal needs none
        self.readline = readline
        self.history_path = history_path
        self.commands, self.names = commands, names
        self._matches: list[str] = []
        try:
            readline.read_history_file(history_path)
        except OSError:
            pass                        # no history yet
        readline.set_history_length(HISTORY_LENGTH)
        readline.set_completer_delims(" \t\n\"'")
        readline.set_completer(self._complete)
        binding = "bind ^I rl_complete" if "libedit" in (readline.__doc__ or "") \
            else "tab: complete"
        readline.parse_and_bind(binding)

    @classmethod
    def for_terminal(cls, history_path: str, commands, names) -> "LineEditor | None":
        try:
            return cls(history_path, commands, names)
        except ImportError:
            return None

    def read(self, prompt: str) -> str | None:
        """One line (without its newline); None at end of input."""
        try:
            line = input(prompt)
        except EOFError:
            return None
        self.save()
        return line

    def save(self) -> None:
        try:
            os.makedirs(os.path.dirname(self.history_path) or ".", exist_ok=True)
            self.readline.write_history_file(self.history_path)
        except OSError:
            pass                        # a read-only data dir: history is not kept

    def _complete(self, text: str, state: int) -> str | None:
        if state == 0:
            rl = self.readline
            self._matches = complete_words(rl.get_line_buffer(), rl.get_begidx(), text,
                                           list(self.commands()), list(self.names()))
        return self._matches[state] if state < len(self._matches) else None
