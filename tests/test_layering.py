"""The tree shows the machines: the import rules of the three places in `portal/`.

- `portal.core`: what both machines share. Imports neither `portal.server`
  nor `portal.review`, and no web framework.
- `portal.server`: the online server. Never imports the reviewer.
- `portal.review`: the air-gapped reviewer. Never imports the server side,
  and no web framework (a test in test_review_open.py also checks what a
  real import of the reviewer's command line loads).
- `portal.core.age`: the standard library and `cryptography` only
  (tests/test_age_module.py).

Every import counts, including one inside a function: a lazy import is
still a dependency. The graph of `portal` modules has no circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PORTAL = ROOT / "portal"
WEB_FRAMEWORKS = ("flask", "flask_wtf", "flask_babel", "werkzeug", "jinja2", "wtforms", "gunicorn")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PORTAL.rglob("*.py")}
ALL_MODULES = set(MODULES)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, absolute, with `from x import y` as x.y when y is a module."""
    tree = ast.parse(path.read_text("utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            base = node.module or ""
            names = [f"{base}.{alias.name}" for alias in node.names]
            found.update(name for name in names if name in ALL_MODULES)
            # `from package import submodule` needs only the submodule (the
            # package itself is its ancestor, loaded first in any case).
            if not all(name in ALL_MODULES for name in names):
                found.add(base)
    return found


GRAPH = {name: _imports(path) & ALL_MODULES - {name} for name, path in MODULES.items()}


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_three_places_exist() -> None:
    for package in ("portal.core", "portal.server", "portal.review"):
        assert package in MODULES, package
    top = {name for name in MODULES if name.count(".") == 1}
    assert top <= {"portal.core", "portal.server", "portal.review", "portal.testing"}, top


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _in(n, "portal.core")))
def test_the_shared_core_imports_neither_machine(name: str) -> None:
    imported = _imports(MODULES[name])
    bad = [m for m in imported if _in(m, "portal.server") or _in(m, "portal.review")]
    bad += [m for m in imported if m.split(".")[0] in WEB_FRAMEWORKS]
    assert not bad, f"{name} imports {bad}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _in(n, "portal.review")))
def test_the_reviewer_never_imports_the_server_side_or_a_web_framework(name: str) -> None:
    imported = _imports(MODULES[name])
    bad = [m for m in imported if _in(m, "portal.server") or _in(m, "portal.testing")]
    bad += [m for m in imported if m.split(".")[0] in WEB_FRAMEWORKS]
    assert not bad, f"{name} imports {bad}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _in(n, "portal.server")))
def test_the_server_never_imports_the_reviewer(name: str) -> None:
    imported = _imports(MODULES[name])
    bad = [m for m in imported if _in(m, "portal.review") or _in(m, "portal.testing")]
    assert not bad, f"{name} imports {bad}"


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(GRAPH):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_has_no_circle() -> None:
    assert _cycle() is None, " -> ".join(_cycle() or [])


def test_a_circle_would_be_found() -> None:
    # The check itself can fail: add an edge back and it must see the circle.
    a, b = "portal.server.store", "portal.server.seal"
    assert b in GRAPH and a in GRAPH[b]
    GRAPH[a].add(b)
    try:
        assert _cycle() is not None
    finally:
        GRAPH[a].discard(b)
