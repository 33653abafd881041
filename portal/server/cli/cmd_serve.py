"""`testimony-portal serve`: the web portal, nginx in front of gunicorn's threaded workers."""

from __future__ import annotations

import argparse
import math

from portal.core.exitstatus import ExitStatus
from portal.server.appserver import bind_address, configure_logging, serve
from portal.server.cli.context import PROG, Context
from portal.server.config import Config
from portal.server.front import (
    FrontError,
    FrontSettings,
    app_server_command,
    raise_open_file_limit,
    run_front,
)
from portal.server.scratch import scratch_problems
from portal.server.web import create_app
from portal.server.web.body_guard import BODY_PROGRESS_WINDOW_KEY


def run(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    """Start nginx in front of gunicorn (or gunicorn alone with --no-front)."""
    config, stderr = ctx.config, ctx.stderr
    timeouts = (args.header_timeout, args.body_timeout)
    # nan and inf parse as floats but make the deadlines meaningless (and
    # crash the server's own arithmetic), so only finite timeouts pass.
    if min(args.workers, args.threads) < 1 or not all(math.isfinite(t) and t > 0 for t in timeouts):
        print(
            "testimony-portal: workers, threads and timeouts must be positive "
            "(timeouts in seconds, e.g. --header-timeout 10)",
            file=stderr,
        )
        return ExitStatus.USAGE
    if not 0 < args.port < 65536:
        print(f"{PROG}: --port {args.port} is not a TCP port (1-65535)", file=stderr)
        return ExitStatus.USAGE
    onion_problem = _onion_port_problem(config.onion_port, args)
    if onion_problem:
        print(f"{PROG}: {onion_problem}", file=stderr)
        return ExitStatus.USAGE
    problems = scratch_problems(front=not args.no_front and args.unix_socket is None)
    if problems:
        for problem in problems:
            print(f"{PROG}: {problem}", file=stderr)
        return ExitStatus.ERROR
    nofile = raise_open_file_limit()
    app = create_app(config, **{BODY_PROGRESS_WINDOW_KEY: args.body_timeout})
    if args.unix_socket is None:
        front = "" if args.no_front else "nginx in front, "
        if config.onion_port is not None and not args.no_front:
            front += f"the onion service's tor on port {config.onion_port}, "
        print(
            f"testimony-portal: serving on http://{bind_address(args.host, args.port)} "
            f"({front}{_where(config)}, keys from {config.recipients_file})",
            file=stderr,
        )
    if args.no_front or args.unix_socket is not None:
        bind = bind_address(args.host, args.port)
        if args.unix_socket is not None:
            bind = f"unix:{args.unix_socket}"
        serve(app, config, bind, args.workers, args.threads)
        return ExitStatus.OK
    configure_logging(config.log_level)
    settings = FrontSettings(
        host=args.host,
        port=args.port,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        # The app answers oversized uploads with its own page; nginx's limit
        # is only a backstop above it.
        max_body_bytes=config.max_upload_bytes + 16 * 1024 * 1024,
        nofile=nofile,
        onion_port=config.onion_port,
    )
    command = app_server_command(args.workers, args.threads, args.body_timeout)
    try:
        return run_front(app, settings, command, stderr)
    except FrontError as exc:
        print(f"testimony-portal: {exc}", file=stderr)
        return ExitStatus.ERROR


def _where(config: Config) -> str:
    if config.store == "local":
        return f"data in {config.data_dir}"
    return f"spool in {config.data_dir}, published to bucket {config.s3_bucket} at the seal"


def _onion_port_problem(onion_port: int | None, args: argparse.Namespace) -> str | None:
    """Why PORTAL_ONION_PORT cannot be served as asked, or None."""
    # The app server behind nginx (--unix-socket) inherits the setting: only
    # nginx reads it.
    if onion_port is None or args.unix_socket is not None:
        return None
    if args.no_front:
        return (
            "PORTAL_ONION_PORT needs nginx in front (it reads tor's PROXY header); "
            "drop --no-front or unset PORTAL_ONION_PORT"
        )
    if onion_port == args.port:
        return f"PORTAL_ONION_PORT={onion_port} is also --port; give the onion service its own port"
    return None
