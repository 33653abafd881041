"""`testimony-review`: the offline reviewer's command line.

All flags, environment variables, prompts, printing and exit codes live in
this package; the modules of `portal.review` take paths, keys and callbacks
as arguments, return results and raise typed errors. `main()` takes its
streams as arguments so tests call it in-process, and returns an ExitStatus
instead of exiting. User errors print one line naming the problem and the
fix, never a traceback.

- `context`: the invocation (streams, environment), the errors commands raise
- `parser`: every subcommand and option; shared options declared once
- `cmd_keys`, `cmd_open`, `cmd_forward` (forward, table), `cmd_reply`,
  `cmd_verify` (verify, custody verify): one module per command group
- here: `main`, which dispatches and is the last line of defence
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

from portal.core import cliutil
from portal.core.cliutil import UsageError
from portal.core.exitstatus import ExitStatus
from portal.review.cli.context import (
    PROG,
    Context,
    IntegrityError,
    UserError,
)
from portal.review.cli.parser import build_parser

# Each of these is a condition the user can act on: one line, exit status ERROR.
# Named, not imported: a command imports only the modules it needs (parser.py),
# and an error class whose module was never imported cannot have been raised.
_USER_ERRORS = (
    ("portal.review.keys", "KeyFileError"),
    ("portal.review.shares", "ShareError"),
    ("portal.review.discovery", "SourceError"),
    ("portal.review.custody", "CustodyError"),
    ("portal.review.forward", "ForwardError"),
    ("portal.review.consent", "ConsentRefused"),
    ("portal.review.cleaning", "CleaningUnavailable"),
    ("portal.review.table", "TableError"),
)


def _is_user_error(exc: Exception) -> bool:
    if isinstance(exc, UserError):
        return True
    for module, name in _USER_ERRORS:
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(exc, getattr(loaded, name)):
            return True
    return False


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    env: Mapping[str, str] | None = None,
) -> ExitStatus:
    ctx = Context(
        stdin or sys.stdin,
        stdout or sys.stdout,
        stderr or sys.stderr,
        os.environ if env is None else env,
        command=main,
    )
    try:
        return _run(ctx, argv)
    except Exception as exc:  # noqa: BLE001 (the last line of defence: never a traceback)
        detail = " ".join(str(exc).split())[:300]
        _print_safely(
            ctx,
            f"{PROG}: unexpected error ({type(exc).__name__}: {detail}). This is a bug in the "
            "tool; finished work is kept. Please report it, without any testimony.",
        )
        return ExitStatus.BUG


def _print_safely(ctx: Context, message: str) -> None:
    # A message may hold text that the stream's encoding cannot represent.
    try:
        ctx.err(message)
    except (UnicodeError, OSError):
        with contextlib.suppress(UnicodeError, OSError):
            ctx.err(message.encode("ascii", "backslashreplace").decode("ascii"))


def _run(ctx: Context, argv: Sequence[str] | None) -> ExitStatus:
    args = cliutil.parse_args(
        build_parser(),
        sys.argv[1:] if argv is None else list(argv),
        stdout=ctx.stdout,
        stderr=ctx.stderr,
    )
    if isinstance(args, ExitStatus):  # --help, or a usage error already printed
        return args
    try:
        status: ExitStatus = args.handler(ctx, args)
        return status
    except UsageError as exc:
        ctx.err(str(exc))
        return ExitStatus.USAGE
    except KeyboardInterrupt:
        ctx.err(f"{PROG}: interrupted. Finished work is kept; run the same command to go on.")
        return ExitStatus.INTERRUPTED
    except IntegrityError as exc:
        ctx.err(f"{PROG}: INTEGRITY FAILURE: {exc}")
        return ExitStatus.INTEGRITY
    except Exception as exc:
        if _is_user_error(exc):
            ctx.err(f"{PROG}: error: {exc}")
            return ExitStatus.ERROR
        if isinstance(exc, OSError):
            where = f" ({exc.filename})" if exc.filename else ""
            ctx.err(f"{PROG}: error: {exc.strerror or exc}{where}")
            return ExitStatus.ERROR
        raise


__all__ = ["ExitStatus", "build_parser", "main"]
