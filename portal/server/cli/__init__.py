"""`testimony-portal`: the online server's command line.

Its commands: serve, check, health, export, import-replies, seal.

All flags, environment reading, printing and exit statuses live in this
package; the domain modules it calls (`portal.server.export`, `.seal`,
`.mailbox`) print nothing: they return reports and raise typed errors, which
the commands turn into lines. `main(argv, env=, stdout=, stderr=)` returns an
`ExitStatus` and never exits the process, so tests call it in-process.

- `context`: the invocation (configuration, environment, streams)
- `parser`: every subcommand and option, and which module runs each
- `cmd_serve`, `cmd_check`, `cmd_export`, `cmd_import_replies`, `cmd_seal`:
  one module per command, imported only when it runs
- here: `main`, which dispatches and is the last line of defence
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

from portal.core.cliutil import parse_args
from portal.core.exitstatus import ExitStatus
from portal.server.cli.context import PROG, Context
from portal.server.cli.parser import COMMANDS, build_parser
from portal.server.config import Config, ConfigError


def main(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> ExitStatus:
    """Run one `testimony-portal` command; never exits the process, never shows a traceback."""
    env = os.environ if env is None else env
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    args = parse_args(build_parser(), argv, stdout=stdout, stderr=stderr)
    if isinstance(args, ExitStatus):
        return args
    try:
        ctx = Context(Config.from_env(env), env, stdout, stderr)
        command = importlib.import_module(COMMANDS[args.command])
        status: ExitStatus = command.run(ctx, args)
        return status
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=stderr)
        return ExitStatus.ERROR
    except Exception as exc:  # noqa: BLE001 (the last line of defence: never a traceback)
        # Only the type: on the server an exception message can quote what a
        # client sent, and nothing here may print that.
        print(
            f"{PROG}: {args.command}: unexpected error ({type(exc).__name__}); "
            "nothing stored was changed by it. Run `testimony-portal check`, and report "
            "this as a bug if the checks pass.",
            file=stderr,
        )
        return ExitStatus.BUG
