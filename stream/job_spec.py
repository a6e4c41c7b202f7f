"""A job as the user asked for it: `RainStorm OP1 OP2 SRC DEST NUM_TASKS [options]`, parsed."""

from __future__ import annotations

from dataclasses import dataclass

from cluster.commands import UsageError

USAGE = ("RainStorm OP1 OP2 HYDFS_SRC HYDFS_DEST NUM_TASKS [--op1-args STR] [--op2-args STR] "
         "[--rate LINES_PER_S] [--follow] [--detach]")

VALUED = ("--op1-args", "--op2-args", "--rate")
FLAGS = ("--follow", "--detach")


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
    follow: bool = False         # --follow: read what is appended to SRC until `stop`
    detach: bool = False         # --detach: the command returns once the job runs

    def to_wire(self) -> dict:
        return {"op1": self.op1, "op2": self.op2, "src": self.src, "dest": self.dest,
                "num_tasks": self.num_tasks, "op1_args": self.op1_args,
                "op2_args": self.op2_args, "rate": self.source_rate, "follow": self.follow}

    @classmethod
    def from_wire(cls, d: dict) -> "JobSpec":
        """A spec read back from a job's record (the leader that takes a job over)."""
        return cls(str(d["op1"]), str(d["op2"]), str(d["src"]), str(d["dest"]),
                   int(d["num_tasks"]), str(d.get("op1_args", "")), str(d.get("op2_args", "")),
                   float(d.get("rate", 0.0)), bool(d.get("follow")), detach=True)


def parse_job(args: list[str]) -> JobSpec:
    positional, options, flags = [], {"--op1-args": "", "--op2-args": "", "--rate": "0"}, set()
    it = iter(args)
    for arg in it:
        if arg in VALUED:
            options[arg] = next(it, None)
            if options[arg] is None:
                raise UsageError(f"{arg} needs a value; usage: {USAGE}")
        elif arg in FLAGS:
            flags.add(arg)
        elif arg.startswith("--"):
            raise UsageError(f"unknown option {arg}; usage: {USAGE}")
        else:
            positional.append(arg)
    if len(positional) != 5:
        raise UsageError(f"usage: {USAGE}")
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
                   rate, "--follow" in flags, "--detach" in flags)
