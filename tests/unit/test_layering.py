"""Layers import downwards only: cluster <- membership <- hydfs <- stream <- node.

`cluster/` is the ground floor (config, wire, connections, server, rpc, commands, logs) and
knows nothing above it; the node (node/) is the one place that knows every subsystem.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)

REPO = Path(__file__).resolve().parents[2]
LAYERS = ["cluster", "membership", "hydfs", "stream", "node"]      # bottom to top
PROJECT = set(LAYERS) | {"bench", "demos", "tests", "rainstorm"}


def project_imports(path: Path) -> set[str]:
    """The project packages a module imports (at any depth in its code)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & PROJECT


MODULES = sorted(p.relative_to(REPO).as_posix() for layer in LAYERS
                 for p in (REPO / layer).rglob("*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_a_module_imports_only_its_own_layer_and_those_below(module):
    layer = module.split("/")[0]
    allowed = set(LAYERS[:LAYERS.index(layer) + 1])
    assert project_imports(REPO / module) <= allowed, \
        f"{module} imports {sorted(project_imports(REPO / module) - allowed)} from above"


def test_only_the_node_knows_every_subsystem():
    knows_all = [m for m in MODULES
                 if {"membership", "hydfs", "stream"} <= project_imports(REPO / m)]
    assert knows_all and all(m.startswith("node/") for m in knows_all)


def test_the_entry_point_reaches_the_node_only_through_node_and_cluster():
    assert project_imports(REPO / "rainstorm.py") <= {"cluster", "node"}
