"""Protocol cores are sans-I/O: they import no sockets, threads, clocks or global randomness."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)

REPO = Path(__file__).resolve().parents[2]
CORES = ["membership/member.py", "membership/probe.py", "membership/suspicion.py",
         "membership/protocol.py", "hydfs/ring.py", "hydfs/cache.py", "cluster/wire.py"]
FORBIDDEN = {"socket", "threading", "time", "selectors", "asyncio", "subprocess"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("core", CORES)
def test_core_module_does_no_io(core):
    assert not imported_modules(REPO / core) & FORBIDDEN


@pytest.mark.parametrize("core", [c for c in CORES if c.startswith("membership")])
def test_core_module_uses_only_injected_randomness(core):
    source = (REPO / core).read_text()
    assert "random.random()" not in source and "random.choice(" not in source
