"""RainStorm operators: what a stage runs on its tuples, and how to write your own.

An operator turns a batch of (key, value) tuples, both strings, into output tuples. The engine
loads one per task (`load_operator`) and calls `apply(keys, values, state)` on each batch. A
stage's first input tuples are keyed `SRC:LINE` with the raw line (no newline) as the value.

Kinds
-----
- transform: one output tuple per input tuple.
- filter: zero or one output tuple per input tuple (a filtered transform).
- aggregate: each input tuple updates the running state of its key and emits (key, output). The
  engine owns that state: it persists it and restores it after a failure, which is what makes an
  aggregate exactly-once. So aggregates are written in Python, never as executables.

Naming an operator (each OP of `RainStorm OP1 OP2 ...`, with its --opN-args string as `arg`)
-------------------------------------------------------------------------------------------
- a shipped operator: grep, signs_select, signs_by_category or count (see stream/ops/);
- a path to a Python file, `*.py`;
- a path to any other executable file.
Relative paths are resolved against the caller's directory. A shipped name is never a path:
write `./grep` for a file called grep.

Python operators
----------------
The file defines KIND and `process`. A transform or filter returns (new_key, new_value); a filter
may return None to drop the tuple. For speed it may also define `process_batch`, which gets the
whole batch and returns one entry per input, as process would. A complete filter:

    KIND = "filter"

    def process(key, value, arg):
        # keep the lines that mention arg, re-keyed by their first column
        if arg not in value:
            return None
        return value.split(",")[0], value

    def process_batch(keys, values, arg):
        return [(v.split(",")[0], v) if arg in v else None for v in values]

An aggregate's `process` also gets its key's state (None the first time) and returns
(new_state, output_value); the engine emits (key, output_value). A complete aggregate:

    KIND = "aggregate"

    def process(key, value, arg, state):
        # the running total of each key's values
        total = (state or 0) + int(value)
        return total, str(total)

Rules:
- Outputs are converted with str(). State must be JSON-serialisable, and must be replaced, never
  changed in place: after each batch the engine logs the keys whose state object differs from
  the one before the batch, so a state changed in place would never reach the log and a
  replacement task would resume from an older value.
- An exception in `process` skips only that tuple: the job goes on, and its summary reports the
  number of such errors and the first one. If `process_batch` raises or answers anything but one
  entry per input, that batch is redone tuple by tuple with `process`.
- The file is run once per task, so module-level values are per task, not shared.

Executable operators
--------------------
Any other executable file (a `#!` line, `chmod +x`) is a filter, run as one process per task,
started as `PATH ARG` in the caller's directory. For each batch the engine writes one JSON line
to its stdin and reads one JSON line from its stdout:

    {"keys": ["f:1", "f:2"], "values": ["a", ""]}       engine -> operator
    {"out": [["f:1", "A"], null]}                       operator -> engine

with one entry per input, in order: [key, value] (strings), or null to drop it; a transform
simply never answers null. Write diagnostics to stderr, never stdout, and flush each reply. The
process should exit when its stdin closes. If it exits early or answers anything else, the job
fails with the tail of its stderr. A complete one, upper-casing values and dropping empty ones:

    #!/usr/bin/env python3
    import json, sys
    for line in sys.stdin:
        batch = json.loads(line)
        out = [[k, v.upper()] if v else None for k, v in zip(batch["keys"], batch["values"])]
        print(json.dumps({"out": out}), flush=True)
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass

from stream.external_operator import ExternalProcess, ExternalProcessError
from stream.ops import SHIPPED

TRANSFORM, FILTER, AGGREGATE = "transform", "filter", "aggregate"
KINDS = (TRANSFORM, FILTER, AGGREGATE)
MAX_ERROR_CHARS = 200        # first_error is one line, at most this long


class OperatorError(Exception):
    """A bad operator: unknown name, missing file, bad KIND, not executable, a failed process."""


@dataclass
class Result:
    """What one `apply` produced."""
    keys: list[str]          # output tuples, in input order
    values: list[str]
    dropped: int = 0         # inputs the operator could not parse (reported, not an error)
    errors: int = 0          # inputs on which user code raised (counted, the job continues)
    first_error: str = ""    # one-line description of the first such exception

    def count_error(self, key: str, exc: Exception) -> None:
        """Count one input on which user code raised `exc`."""
        self.errors += 1
        if not self.first_error:
            text = f"on key {key!r}: {type(exc).__name__}: {exc}"
            self.first_error = " ".join(text.split())[:MAX_ERROR_CHARS]


class Operator:
    """A loaded operator, applied batch by batch; one per task, not shared between threads."""

    def __init__(self, name: str, kind: str, origin: str) -> None:
        self.name = name                        # the OP as the user gave it
        self.kind = kind                        # TRANSFORM, FILTER or AGGREGATE
        self.stateful = kind == AGGREGATE       # does apply need the state dict?
        self.reads_values = True                # False: apply looks at the keys only
        self.description = f"{name} ({origin} {kind})"   # e.g. "grep (shipped filter)"

    def apply_lines(self, data: bytes, first_line: int, src: str) -> Result | None:
        """Optional fast path for a whole source block (see ShippedOperator)."""
        return None

    def apply(self, keys: list[str], values: list[str], state: dict | None = None) -> Result:
        """Run the operator on one batch of tuples.

        `state` is, for an aggregate, the dict key -> per-key state, which apply updates in
        place (the caller persists it); None for the other kinds. Raises OperatorError if an
        executable operator's process fails, ValueError on a call that breaks these rules.
        """
        if len(keys) != len(values):
            raise ValueError(f"{len(keys)} keys but {len(values)} values")
        if self.stateful != (state is not None):
            raise ValueError("state must be a dict for an aggregate and None otherwise")
        return self._apply(keys, values, state) if keys else Result([], [])

    def close(self) -> None:
        """Stop the operator's process, if it has one; an in-process operator holds nothing."""

    def _apply(self, keys: list[str], values: list[str], state: dict | None) -> Result:
        raise NotImplementedError


class ShippedOperator(Operator):
    """One of the operators in stream/ops/."""

    def __init__(self, name: str, arg: str) -> None:
        self._module = importlib.import_module(f"stream.ops.{name}")
        super().__init__(name, self._module.KIND, "shipped")
        self.reads_values = getattr(self._module, "READS_VALUES", True)
        self._arg = arg

    def _apply(self, keys, values, state):
        return self._module.apply(keys, values, self._arg, state)

    def apply_lines(self, data: bytes, first_line: int, src: str) -> Result | None:
        """A source block in one call, for operators that can work on its raw bytes
        (`grep` looks only at matching lines); None when this operator cannot."""
        fast = getattr(self._module, "apply_lines", None)
        return None if fast is None else fast(data, first_line, src, self._arg)


class PythonOperator(Operator):
    """A user's Python file defining KIND, process and optionally process_batch."""

    def __init__(self, spec: str, path: str, arg: str) -> None:
        module = _load_module(path)
        kind = getattr(module, "KIND", None)
        if kind not in KINDS:
            got = f"not {kind!r}" if hasattr(module, "KIND") else "it has none"
            raise OperatorError(f"operator {spec}: KIND must be one of {', '.join(KINDS)} ({got})")
        super().__init__(spec, kind, "Python")
        params = "(key, value, arg, state)" if self.stateful else "(key, value, arg)"
        self._process = _checked_function(module, "process", params, spec)
        self._process_batch = None
        if hasattr(module, "process_batch"):
            if self.stateful:
                raise OperatorError(f"operator {spec}: process_batch is for transforms and "
                                    "filters only, not aggregates")
            self._process_batch = _checked_function(module, "process_batch",
                                                    "(keys, values, arg)", spec)
        self._arg = arg

    def _apply(self, keys, values, state):
        result = Result([], [])
        if self.stateful:
            self._aggregate(keys, values, state, result)
        elif self._process_batch is None or not self._apply_batch(keys, values, result):
            self._apply_each(keys, values, result)
        return result

    def _apply_batch(self, keys, values, result: Result) -> bool:
        """Run process_batch into result; False, leaving result as it was, if it failed."""
        try:
            entries = list(self._process_batch(keys, values, self._arg))
            if len(entries) != len(keys):
                return False
            pairs = [self._output(entry) for entry in entries]
        except Exception:   # the user's code, whatever it raises: redo tuple by tuple
            return False
        kept = [pair for pair in pairs if pair is not None]
        result.keys.extend(k for k, _ in kept)
        result.values.extend(v for _, v in kept)
        return True

    def _apply_each(self, keys, values, result: Result) -> None:
        for key, value in zip(keys, values):
            try:
                pair = self._output(self._process(key, value, self._arg))
            except Exception as exc:    # the user's code: skip and count this tuple
                result.count_error(key, exc)
                continue
            if pair is not None:
                result.keys.append(pair[0])
                result.values.append(pair[1])

    def _aggregate(self, keys, values, state: dict, result: Result) -> None:
        for key, value in zip(keys, values):
            try:
                new_state, output = _pair(self._process(key, value, self._arg, state.get(key)),
                                          "(new_state, output_value)")
                output = str(output)
            except Exception as exc:    # the user's code: skip and count this tuple
                result.count_error(key, exc)
                continue
            state[key] = new_state
            result.keys.append(key)
            result.values.append(output)

    def _output(self, entry) -> tuple[str, str] | None:
        """A transform's or filter's answer as (key, value) strings, or None to drop (filters)."""
        if entry is None and self.kind == FILTER:
            return None
        key, value = _pair(entry, "(key, value)" if self.kind == TRANSFORM
                           else "(key, value) or None")
        return str(key), str(value)


class ExecutableOperator(Operator):
    """A user's executable file, run as a filter process (see stream/external_operator.py)."""

    def __init__(self, spec: str, path: str, arg: str, cwd: str) -> None:
        super().__init__(spec, FILTER, "executable")
        self._process = ExternalProcess([path, arg], cwd)

    def _apply(self, keys, values, state):
        try:
            entries = self._process.exchange(keys, values)
        except ExternalProcessError as exc:
            raise OperatorError(f"operator {self.name}: {exc}") from None
        kept = [entry for entry in entries if entry is not None]
        return Result([k for k, _ in kept], [v for _, v in kept])

    def close(self) -> None:
        self._process.close()


def load_operator(spec: str, arg: str, cwd: str = ".") -> Operator:
    """The operator named by spec (a shipped name or a path, relative to cwd), given its arg.

    Raises OperatorError with a one-line reason if spec names no usable operator.
    """
    if spec in SHIPPED:
        return ShippedOperator(spec, arg)
    path = os.path.abspath(os.path.join(cwd, spec))
    if not os.path.isfile(path):
        raise OperatorError(f"unknown operator {spec!r}: not one of {', '.join(SHIPPED)} "
                            f"and no such file {path}")
    if path.endswith(".py"):
        return PythonOperator(spec, path, arg)
    if not os.access(path, os.X_OK):
        raise OperatorError(f"operator {spec}: {path} is neither a Python file (*.py) "
                            "nor executable (chmod +x)")
    return ExecutableOperator(spec, path, arg, cwd)


def describe(spec: str, cwd: str = ".") -> str:
    """A one-line description for progress output, e.g. "grep (shipped filter)".

    Loads the operator to find its kind, so raises OperatorError as load_operator does.
    """
    operator = load_operator(spec, "", cwd)
    operator.close()
    return operator.description


def _load_module(path: str):
    """Run the Python file at path as a module of its own (one name per path)."""
    name = "rainstorm_operator_" + hashlib.sha1(path.encode()).hexdigest()[:16]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module      # as an import would: dataclasses and pickle look here
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:        # the user's code, whatever it raises
        del sys.modules[name]
        text = " ".join(f"{type(exc).__name__}: {exc}".split())[:MAX_ERROR_CHARS]
        raise OperatorError(f"operator {path} failed to load: {text}") from None
    return module


def _checked_function(module, name: str, params: str, spec: str):
    """module.name, if it is a function that accepts the arguments params names."""
    function = getattr(module, name, None)
    if not callable(function):
        raise OperatorError(f"operator {spec}: no {name}{params} function")
    try:    # one placeholder argument per parameter that params names
        inspect.signature(function).bind(*params.strip("()").split(", "))
    except TypeError:
        raise OperatorError(f"operator {spec}: {name} must accept {params}") from None
    except ValueError:      # no signature to check (a builtin): let calls tell
        pass
    return function


def _pair(entry, expected: str):
    """entry as a 2-tuple; TypeError saying what was expected if it is not a pair."""
    if isinstance(entry, (tuple, list)) and len(entry) == 2:
        return entry
    raise TypeError(f"process returned {entry!r:.60}, expected {expected}")
