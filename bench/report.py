"""A benchmark's report: the code version it measured, markdown tables, and the writer that
prints it and keeps it as OUT.md (the markdown) and OUT.json (the raw results)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def code_version(dirs: tuple[str, ...]) -> str:
    """The git commit under test, "+changes" if any of `dirs` (the packages the benchmark
    measures, relative to the repository root) differ from it; "unknown" without git."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        dirty = git("status", "--porcelain", "--", *dirs)
        return git("rev-parse", "--short", "HEAD") + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def md_table(headers: list, rows: list) -> str:
    """A markdown table: a header row, then one row per list (cells as `str` gives them)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(markdown: str, results: dict, out: Path | None, log) -> None:
    """Print the markdown; with `out`, also write it and the raw results next to it."""
    print(markdown)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(markdown)
        out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
        log(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
