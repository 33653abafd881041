"""`testimony-review SUB --help` explains every option of every subcommand."""

from __future__ import annotations

import argparse
import io
from collections.abc import Iterator

import pytest

from portal.review import table
from portal.review.cli import ExitStatus, build_parser, main
from portal.review.cli.parser import TABLE_FORMATS, Command


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


COMMANDS = [path for path, _parser in _commands(build_parser()) if path]


def test_the_walk_finds_every_command() -> None:
    assert {" ".join(path) for path in COMMANDS} >= {
        "keygen", "key", "key backup", "key restore", "open", "forward", "table",
        "reply", "verify", "custody", "custody verify",
    }  # fmt: skip


def test_every_option_of_every_command_has_help() -> None:
    missing = []
    for path, parser in _commands(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                name = "/".join(action.option_strings) or action.dest
                missing.append(f"{' '.join(path) or '(top)'}: {name}")
    assert not missing, "options without help: " + ", ".join(missing)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p))
def test_help_prints_and_exits_ok(path: tuple[str, ...]) -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    status = main([*path, "--help"], stdout=stdout, stderr=stderr, env={})
    assert status == ExitStatus.OK, stderr.getvalue()
    assert "usage: testimony-review" in stdout.getvalue()


def test_a_shared_option_reads_the_same_everywhere() -> None:
    helps: dict[str, set[str]] = {}
    for _path, parser in _commands(build_parser()):
        for action in parser._actions:
            if "--custody" in action.option_strings or "--reviewer" in action.option_strings:
                helps.setdefault(action.option_strings[0], set()).add(str(action.help))
    assert set(helps) == {"--custody", "--reviewer"}
    assert all(len(texts) == 1 for texts in helps.values()), helps


def test_every_command_runs_a_function_that_exists() -> None:
    # Commands import their modules only when they run (parser.Command): a
    # misspelt name would show only then, so each is resolved here.
    handlers = [
        parser.get_default("handler")
        for _path, parser in _commands(build_parser())
        if parser.get_default("handler") is not None
    ]
    assert len(handlers) == len([p for p in COMMANDS if p not in (("key",), ("custody",))])
    assert all(isinstance(h, Command) and callable(h.resolve()) for h in handlers)


def test_the_table_formats_offered_are_the_ones_it_writes() -> None:
    assert TABLE_FORMATS == table.FORMATS
