"""A job as the user asked for it: `RainStorm OP1 OP2 SRC DEST NUM_TASKS [options]`, parsed."""

from __future__ import annotations

from dataclasses import dataclass

from cluster.commands import UsageError

USAGE = ("usage: RainStorm OP1 OP2 HYDFS_SRC HYDFS_DEST NUM_TASKS "
         "[--op1-args STR] [--op2-args STR] [--rate LINES_PER_S]")


@dataclass
class JobSpec:
    op1: str
    op2: str
    src: str
    dest: str
    num_tasks: int
    op1_args: str = ""
    op2_args: str = ""
    source_rate: float = 0.0     # --rate: lines per second in all, 0 = as fast as possible


def parse_job(args: list[str]) -> JobSpec:
    positional, options = [], {"--op1-args": "", "--op2-args": "", "--rate": "0"}
    it = iter(args)
    for arg in it:
        if arg in options:
            options[arg] = next(it, None)
            if options[arg] is None:
                raise UsageError(f"{arg} needs a value; {USAGE}")
        else:
            positional.append(arg)
    if len(positional) != 5:
        raise UsageError(USAGE)
    op1, op2, src, dest, num = positional
    if not num.isdigit() or int(num) < 1:
        raise UsageError(f"NUM_TASKS must be a whole number of at least 1, not {num!r}")
    try:
        rate = float(options["--rate"])
    except ValueError:
        rate = -1
    if not rate >= 0 or rate == float("inf"):
        raise UsageError(f"--rate must be a number of lines per second, not {options['--rate']!r}")
    return JobSpec(op1, op2, src, dest, int(num), options["--op1-args"], options["--op2-args"],
                   rate)
