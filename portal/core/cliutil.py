"""What both commands share on the command line: a parser that never exits the process.

`argparse.ArgumentParser` prints and calls `sys.exit()` on a usage error or
`--help`. A command whose `main(argv, ...)` returns an `ExitStatus` (so that
tests and scripts call it in-process) needs it to raise instead: `Parser`
raises `UsageError` with one line naming the problem, and `parse_args`
turns that, and `--help`, into an exit status.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence
from typing import NoReturn, TextIO

from portal.core.exitstatus import ExitStatus


class UsageError(Exception):
    """The command line is wrong; the message is one line naming the problem."""


class _ParserExit(Exception):
    """argparse finished on its own (`--help`): no command is to run."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Parser(argparse.ArgumentParser):
    """An argument parser that raises `UsageError` instead of exiting.

    Pass it as `parser_class` to `add_subparsers` too, so that every
    subcommand's errors are raised the same way.
    """

    def hint(self, message: str) -> str:
        """What to do about `message`; a command may override it to say more."""
        return f"see `{self.prog} --help`"

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message} ({self.hint(message)})")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self._print_message(message)
        raise _ParserExit(status)


def parse_args(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    *,
    stdout: TextIO,
    stderr: TextIO,
) -> argparse.Namespace | ExitStatus:
    """The parsed arguments, or the status to return at once (`--help`, a usage error).

    Help goes to `stdout`; a usage error is one line on `stderr`.
    """
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            return parser.parse_args(argv)
    except UsageError as exc:
        print(exc, file=stderr)
        return ExitStatus.USAGE
    except _ParserExit as exc:
        return ExitStatus.OK if exc.status == 0 else ExitStatus.USAGE
