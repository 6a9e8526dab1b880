"""The house: the floors drawn in docs/architecture.rst hold for every import of hermes_gevent/.

Read statically (ast), so imports under TYPE_CHECKING and inside functions count too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hermes_gevent"
DRAWING = ROOT / "docs" / "architecture.rst"
MAX_LINES = 400


def floors() -> dict[str, int]:
    """module -> floor number (0 = ground), from the drawing (top floor first)."""
    rows = re.findall(r"^    ([a-z]+):\s+(.+)$", DRAWING.read_text(), flags=re.MULTILINE)
    assert rows, f"no floors drawn in {DRAWING}"
    found: dict[str, int] = {}
    for number, (_, modules) in enumerate(reversed(rows)):
        for module in modules.split():
            assert module not in found, f"{module} is drawn on two floors"
            found[module] = number
    return found


def modules() -> dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.glob("*.py"))}


def imports(tree: ast.Module) -> set[str]:
    """The package's modules this module imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.module == "hermes_gevent":
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("hermes_gevent."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith("hermes_gevent."))
    return found


def graph() -> dict[str, set[str]]:
    trees = modules()
    return {name: imports(tree) & set(trees) - {name} for name, tree in trees.items()}


def test_every_module_is_on_one_floor() -> None:
    drawn, present = set(floors()), set(modules())
    assert present - drawn == set(), "modules missing from docs/architecture.rst"
    assert drawn - present == set(), "modules drawn in docs/architecture.rst that do not exist"


def test_every_module_has_its_row_in_the_tables() -> None:
    described = set(re.findall(r"^   \* - ``([a-z0-9_]+)\.py``$", DRAWING.read_text(), flags=re.MULTILINE))
    assert set(modules()) - described == set()


def test_no_module_imports_upward() -> None:
    floor = floors()
    upward = [f"{module} -> {target}" for module, targets in graph().items() for target in sorted(targets)
              if floor[target] > floor[module]]
    assert upward == []


def cycle(edges: dict[str, set[str]]) -> list[str]:
    """One circle of imports, or []."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str]:
        state[module] = 1
        path.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[module] = 2
        return []

    for module in sorted(edges):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return []


def test_no_circle_of_imports() -> None:
    assert cycle(graph()) == []


def test_the_cycle_finder_finds_one() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_no_module_is_longer_than_the_limit(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES


def private_names(tree: ast.Module) -> set[str]:
    """Underscore names a module defines: functions, classes, attributes it assigns, globals."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def foreign_private_uses(name: str, tree: ast.Module) -> list[str]:
    """``x._name`` where ``_name`` is not this module's own (an object's own ``self._name``, inherited
    ones included, is its own state), and ``from .m import _name``."""
    own = private_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            mine = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if node.attr not in own and not mine:
                found.append(f"{name}.py:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom) and node.level == 1:
            found += [f"{name}.py:{node.lineno}: imports {alias.name}" for alias in node.names
                      if alias.name.startswith("_") and not alias.name.startswith("__")]
    return found


def test_no_module_touches_another_modules_private_names() -> None:
    found = [use for name, tree in modules().items() for use in foreign_private_uses(name, tree)]
    assert found == []


def test_the_private_name_check_sees_a_reach_into_the_client() -> None:
    tree = ast.parse("def loop(client):\n    client._session.fail()\n")
    assert foreign_private_uses("reader", tree) == ["reader.py:2: client._session"]
    tree = ast.parse("class Own:\n    def __init__(self):\n        self._x = 1\n\ndef f(o):\n    return o._x\n")
    assert foreign_private_uses("own", tree) == []


def test_no_loop_sees_the_client() -> None:
    """The loops receive a Run; none names the client (not even for typing)."""
    edges = graph()
    for loop in ("supervisor", "reader", "sender", "persistence", "run"):
        assert "client" not in edges[loop], loop
        assert "WebSocketClient" not in (PACKAGE / f"{loop}.py").read_text(), loop
