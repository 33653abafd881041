"""`desk`: the reviewer's everyday web desk over an opened folder, on 127.0.0.1 only."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import time
from pathlib import Path
from types import FrameType

from portal.core.exitstatus import ExitStatus
from portal.review.cli.context import Context, IntegrityError, UserError
from portal.review.custody import CustodyError, CustodyLog
from portal.review.record import opened_ids


def cmd_desk(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    # The desk (sqlite3, wsgiref) loads only when it runs, not for every command.
    from portal.review.desk.search import IndexError_
    from portal.review.desk.server import DeskServer, build_state
    from portal.review.desk.settings import SettingsError, default_path, load_settings

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: give a port from 1 to 65535, or 0 for a free one")
    opened = Path(args.dir)
    if not opened.is_dir():
        raise UserError(f"{opened} is not a folder; give the folder written by `open`")
    settings_path = Path(args.settings) if args.settings else default_path(ctx.env)
    try:
        settings = load_settings(settings_path, required=bool(args.settings))
    except SettingsError as exc:
        raise UserError(str(exc)) from None
    if args.lang:
        settings = dataclasses.replace(settings, language=args.lang)
    if args.outbox:
        settings = dataclasses.replace(settings, outbox=Path(args.outbox))
    if args.bundles:
        settings = dataclasses.replace(settings, bundles=Path(args.bundles))
    log = ctx.custody(args.custody)
    if not _has_entries(log) and opened_ids(opened):
        raise IntegrityError(
            f"{opened} holds opened submissions, but the custody log {log.path} is missing or "
            "empty: it is not the log they were opened with. Give the right log with --custody"
        )
    ctx.err("Reading the opened folder and bringing the search index up to date...")
    started = time.monotonic()
    try:
        state = build_state(
            opened.resolve(),
            log.path,
            ctx.reviewer(args.reviewer),
            settings,
            ctx.env,
            ctx.command or _no_command,
            _reply_options(args),
        )
        server = DeskServer(state, args.port)
    except IndexError_ as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot listen on 127.0.0.1 port {args.port}: {exc.strerror}") from None
    ctx.err(
        f"{state.index.count()} testimonies indexed in {time.monotonic() - started:.1f} s"
        + (f"; {len(state.refused)} could not be read (run `verify`)" if state.refused else "")
    )
    ctx.out(server.url)
    ctx.err(
        "Open the address above in the browser on this machine. It holds a secret: do not "
        "share it. Press Ctrl-C here to stop the desk."
    )
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.close()
    ctx.err("The desk has stopped.")
    return ExitStatus.OK


def _reply_options(args: argparse.Namespace) -> tuple[str, ...]:
    options: list[str] = []
    if args.signing_key:
        options += ["--signing-key", str(Path(args.signing_key).resolve())]
    if args.passphrase_file:
        options += ["--passphrase-file", str(Path(args.passphrase_file).resolve())]
    return tuple(options)


def _has_entries(log: CustodyLog) -> bool:
    """True if the log has a first line (a damaged log counts: the desk shows the damage)."""
    try:
        return next(iter(log.entries()), None) is not None
    except CustodyError:
        return True


def _no_command(*_args: object, **_kwargs: object) -> ExitStatus:
    raise UserError("the desk was started without the command line to reply and forward with")


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt
