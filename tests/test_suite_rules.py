"""The test suite's own rules: one policy for a missing tool, no imports between tests and bench."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import REPO, require_root, require_tool, unsupported_here

MISSING = "no-such-program-for-the-tests"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _python_files(folder: str) -> list[Path]:
    return sorted(p for p in (REPO / folder).rglob("*.py") if "node_modules" not in p.parts)


def test_a_missing_tool_fails_when_ci_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match=f"{MISSING} is not installed.*CI is set"):
        require_tool(MISSING, install="nowhere")


def test_a_missing_tool_skips_with_the_reason_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=rf"{MISSING} is not installed \(nowhere\)"):
        require_tool(MISSING, install="nowhere")


def test_a_present_tool_gives_its_path() -> None:
    assert Path(require_tool("sh")).name == "sh"


def test_root_only_tests_fail_in_ci_when_not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="mounting needs root"):
        require_root("mounting")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="mounting needs root"):
        require_root("mounting")


def test_what_no_package_provides_skips_even_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.skip.Exception, match="no vfat.*no package provides it"):
        unsupported_here("no vfat")


def test_unavailable_is_the_only_place_that_skips() -> None:
    """Tests never skip or probe for a program themselves: they go through tests/support.py."""
    allowed = {REPO / "tests" / "support.py", Path(__file__)}
    # The conformance vectors' README asks for vectors with unknown keys to be skipped.
    allowed_skip = {REPO / "tests" / "test_age_vectors.py"}
    offenders = []
    for path in _python_files("tests"):
        if path in allowed:
            continue
        text = path.read_text("utf-8")
        for needle in ("shutil.which(", "skipif(", "importorskip("):
            if needle in text:
                offenders.append(f"{path.name}: {needle}")
        if "pytest.skip(" in text and path not in allowed_skip:
            offenders.append(f"{path.name}: pytest.skip(")
    assert offenders == []


def test_tests_and_bench_never_import_each_other() -> None:
    """What both need is in portal/testing/; bench scripts import each other as `bench_*`."""
    bench_modules = {path.stem for path in _python_files("bench")}

    def crosses(folder: str, name: str) -> bool:
        top = name.split(".")[0]
        return top == "tests" if folder == "bench" else top == "bench" or top in bench_modules

    crossing = [
        f"{path.relative_to(REPO)} imports {name}"
        for folder in ("tests", "bench")
        for path in _python_files(folder)
        for name in _imports(path)
        if crosses(folder, name)
    ]
    assert crossing == []
    # Nor by path, as test_pages once loaded bench/page_weight.py.
    by_path = [p.name for p in _python_files("tests") if '"bench"' in p.read_text("utf-8")]
    assert by_path == [Path(__file__).name]


def test_no_test_module_imports_another() -> None:
    borrowed = [
        f"{path.name} imports {name}"
        for path in _python_files("tests")
        for name in _imports(path)
        if name.startswith("tests.test_")
    ]
    assert borrowed == []
