"""Protocol cores are sans-I/O: they import no sockets, threads, clocks or global randomness."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)

REPO = Path(__file__).resolve().parents[2]
CORES = ["membership/member.py", "membership/probe.py", "membership/suspicion.py",
         "membership/protocol.py", "hydfs/ring.py", "hydfs/cache.py", "cluster/wire.py",
         "cluster/errors.py", "cluster/messages.py", "cluster/chunks.py", "membership/messages.py",
         "hydfs/messages.py", "hydfs/summary.py", "hydfs/idset.py", "hydfs/names.py",
         "hydfs/merge.py", "hydfs/replication.py", "hydfs/write_rules.py", "hydfs/read_rules.py",
         "hydfs/fences.py", "stream/messages.py", "stream/delivery.py", "stream/effects.py",
         "stream/task_core.py", "stream/source_core.py", "stream/operator_core.py",
         "stream/job_core.py", "stream/task_spec.py", "stream/task_log.py",
         "stream/scheduler.py", "stream/partition.py", "stream/source_plan.py",
         "stream/succession.py", "stream/tuple_codec.py", "stream/forwarding.py",
         "stream/task_figures.py",
         "stream/in_flight.py"]
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


def project_modules_imported(path: Path) -> set[str]:
    """The project files a module imports, as repo-relative paths."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            candidates = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for dotted in candidates:
            file = REPO / (dotted.replace(".", "/") + ".py")
            if file.exists():
                found.add(file.relative_to(REPO).as_posix())
    return found


@pytest.mark.parametrize("core", CORES)
def test_a_core_imports_only_other_cores(core):
    """Purity is transitive: a core importing an I/O module would bring sockets along."""
    assert project_modules_imported(REPO / core) <= set(CORES)
