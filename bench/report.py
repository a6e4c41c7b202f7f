"""A benchmark's report: printed as markdown, and kept as OUT.md and OUT.json."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(markdown: str, results: dict, out: Path | None, log) -> None:
    """Print the markdown; with `out`, also write it and the raw results next to it."""
    print(markdown)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(markdown)
        out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
        log(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
