"""Errors are classified by their code, never by their text (cluster/errors.py).

Rewording a message must not change what a caller does, so no production module compares,
searches or prefix-tests the text of a caught exception.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cluster.errors import CodedError
from cluster.messages import error_reply
from cluster.rpc import RemoteError, check_reply

pytestmark = pytest.mark.timeout(30)

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = [p for layer in ("cluster", "membership", "hydfs", "stream", "node")
              for p in sorted((REPO / layer).rglob("*.py"))]


def text_tests(path: Path) -> list[int]:
    """Lines that test the text of a caught exception: str(exc) in a comparison, an `in`,
    or a startswith/endswith."""
    tree = ast.parse(path.read_text())
    caught = {h.name for h in ast.walk(tree) if isinstance(h, ast.ExceptHandler) and h.name}

    def is_text_of_caught(node) -> bool:
        return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "str" and len(node.args) == 1
                and isinstance(node.args[0], ast.Name) and node.args[0].id in caught)
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and \
                any(is_text_of_caught(s) for s in [node.left, *node.comparators]):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ("startswith", "endswith") and \
                is_text_of_caught(node.func.value):
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("path", PRODUCTION, ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_error_is_classified_by_its_text(path):
    assert text_tests(path) == []


def test_an_error_reply_carries_its_code_to_the_caller():
    with pytest.raises(RemoteError) as caught:
        check_reply(error_reply("no_such_file", "no such file x in HyDFS"))
    assert isinstance(caught.value, CodedError)
    assert caught.value.code == "no_such_file" and str(caught.value) == "no such file x in HyDFS"


def test_the_checker_sees_a_text_test(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("try:\n    pass\nexcept OSError as exc:\n"
                      "    if 'no such file' in str(exc) or str(exc).startswith('x'):\n"
                      "        pass\n")
    assert text_tests(sample) == [4, 4]
