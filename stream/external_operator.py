"""The child process behind an executable operator, spoken to in JSON lines.

Theory of operation: the process starts on the first batch, as `argv` in `cwd`. For each batch
`exchange` writes one request line `{"keys": [...], "values": [...]}` to its stdin and reads one
reply line `{"out": [[key, value] or null, ...]}` (one entry per input, keys and values strings)
from its stdout. The child reads a whole request before it answers, so with one request in flight
neither side can block the other on a full pipe. Its stderr goes to a temporary file, never
a pipe, so a chatty child cannot block on it, and its tail explains a failure.

Anything but a well-formed reply (the child exited, could not start, or wrote garbage) raises
ExternalProcessError and stops the child: after a bad reply the stream is out of step.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from typing import NoReturn

STDERR_TAIL_CHARS = 300      # how much of the child's stderr an error message quotes
EXIT_GRACE_SECONDS = 1.0     # after its stdin closes, how long the child gets to exit by itself


class ExternalProcessError(Exception):
    """The operator process failed; the message is one line, with its stderr's tail."""


class ExternalProcess:
    """One operator process, started lazily; not shared between threads."""

    def __init__(self, argv: list[str], cwd: str) -> None:
        self.argv = argv                  # [executable path, arg]
        self.cwd = cwd                    # the child's working directory
        self._proc: subprocess.Popen | None = None   # None until the first exchange
        self._stderr = None               # temporary file holding the child's stderr

    def exchange(self, keys: list[str], values: list[str]) -> list[list[str] | None]:
        """Send one batch; return the reply's entries, one per input: [key, value] or None."""
        if self._proc is None:
            self._start()
        request = json.dumps({"keys": keys, "values": values}) + "\n"
        try:
            self._proc.stdin.write(request)
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        except BrokenPipeError:           # it has exited
            line = ""
        except UnicodeDecodeError:
            self._fail("answered garbage (not UTF-8)")
        if not line:
            self._fail(self._end_of_output())
        try:
            return _reply_entries(line, len(keys))
        except ValueError as exc:
            self._fail(f"answered garbage ({exc})")

    def close(self) -> None:
        """Stop the process: close its stdin; kill it if it has not exited in the grace time."""
        self._stop()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=EXIT_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()

    def _start(self) -> None:
        self._stderr = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(self.argv, cwd=self.cwd, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=self._stderr,
                                          text=True, encoding="utf-8")
        except OSError as exc:
            self._stderr.close()
            raise ExternalProcessError(f"cannot start {self.argv[0]}: {exc}") from None

    def _end_of_output(self) -> str:
        """Why the reply stream ended: the exit status, if the process exits in the grace time."""
        try:
            return f"exited with status {self._proc.wait(timeout=EXIT_GRACE_SECONDS)}"
        except subprocess.TimeoutExpired:
            return "closed its stdout"

    def _fail(self, what: str) -> NoReturn:
        """Stop the process and raise ExternalProcessError saying what happened."""
        self._stop()
        self._stderr.seek(0)
        tail = self._stderr.read().decode("utf-8", "replace")[-STDERR_TAIL_CHARS:]
        self.close()
        tail = " | ".join(line.strip() for line in tail.splitlines() if line.strip())
        raise ExternalProcessError(what + (f"; stderr: {tail}" if tail else "; no stderr"))


def _reply_entries(line: str, count: int) -> list[list[str] | None]:
    """The entries of one reply line, checked; ValueError saying what is wrong."""
    try:
        reply = json.loads(line)
    except ValueError:
        raise ValueError(f"not JSON: {line[:80]!r}") from None
    out = reply.get("out") if isinstance(reply, dict) else None
    if not isinstance(out, list) or len(out) != count:
        raise ValueError(f'expected {{"out": [...]}} with {count} entries: {line[:80]!r}')
    for entry in out:
        if entry is not None and not (isinstance(entry, list) and len(entry) == 2
                                      and isinstance(entry[0], str) and isinstance(entry[1], str)):
            raise ValueError(f"entry {entry!r:.60} is neither [key, value] strings nor null")
    return out
