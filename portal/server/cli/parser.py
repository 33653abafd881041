"""Every `testimony-portal` subcommand and option, and the module that runs each.

A command's module is imported only when that command runs (`COMMANDS`), so
`check` or `export` never load Flask or the web app.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from portal.core.cliutil import Parser
from portal.server.config import BODY_PROGRESS_WINDOW, PROGRESS_BYTES

# The defaults of `serve`'s flags (README.md, "Commands"). The body timeout's
# is the app's own progress window, portal.server.config.BODY_PROGRESS_WINDOW.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_WORKERS = 2
DEFAULT_THREADS = 1024
DEFAULT_HEADER_TIMEOUT = 10.0

# Each subcommand and the module whose `run(ctx, args)` carries it out.
COMMANDS = {
    "serve": "portal.server.cli.cmd_serve",
    "check": "portal.server.cli.cmd_check",
    "export": "portal.server.cli.cmd_export",
    "import-replies": "portal.server.cli.cmd_import_replies",
    "seal": "portal.server.cli.cmd_seal",
    "health": "portal.server.cli.cmd_health",
}


def build_parser() -> Parser:
    parser = Parser(
        prog="testimony-portal",
        description="Anonymous testimony intake that encrypts every submission on arrival.",
        epilog="Configuration comes from PORTAL_* environment variables; see README.md.",
    )
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=Parser
    )
    serve = sub.add_parser(
        "serve", help="run the web portal (nginx in front of gunicorn's threaded workers)"
    )
    serve.add_argument(
        "--host", default=DEFAULT_HOST, help="address to listen on (default %(default)s)"
    )
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default %(default)s)")
    serve.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help="worker processes (default %(default)s)",
    )
    serve.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help="most threads per worker, started as needed; one per request in flight "
        "(default %(default)s)",
    )
    serve.add_argument(
        "--header-timeout",
        type=float,
        default=DEFAULT_HEADER_TIMEOUT,
        help="seconds a client has to send its whole request header block (default %(default)s)",
    )
    serve.add_argument(
        "--body-timeout",
        type=float,
        default=BODY_PROGRESS_WINDOW,
        help="a request body is dropped if it sends nothing for this many seconds, or less "
        f"than {PROGRESS_BYTES // 1024} KiB in this many seconds (default %(default)s)",
    )
    serve.add_argument(
        "--no-front",
        action="store_true",
        help="serve with gunicorn alone, without nginx in front: for development and tests "
        "only, it does not withstand slow or silent connections",
    )
    # Used by the front proxy to start the app server behind it.
    serve.add_argument("--unix-socket", type=Path, help=argparse.SUPPRESS)
    sub.add_parser("check", help="check configuration, keys, permissions and free space")
    health = sub.add_parser(
        "health",
        help="exit 0 if the portal on this machine serves its front page (the image's HEALTHCHECK)",
    )
    health.add_argument("--host", default=DEFAULT_HOST, help=f"address (default {DEFAULT_HOST})")
    health.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
    )
    export = sub.add_parser(
        "export", help="copy committed submissions (ciphertext) to DEST, verified"
    )
    export.add_argument("dest", type=Path, help="destination folder, e.g. a mounted USB drive")
    export.add_argument(
        "--purge",
        action="store_true",
        help="delete each server copy once its exported copy has been read back and verified",
    )
    export.add_argument(
        "--same-disk",
        action="store_true",
        help="allow DEST on the same file system as the data directory (refused by default: "
        "it usually means the drive is not mounted)",
    )
    replies = sub.add_parser(
        "import-replies",
        help="store the replies from an outbox written by `testimony-review reply`",
    )
    replies.add_argument("outbox", type=Path, help="the outbox folder, e.g. on a USB drive")
    seal = sub.add_parser(
        "seal",
        help="rewrite recent submissions into fresh files so no file time tells their order "
        "(the server does this daily at PORTAL_SEAL_TIME)",
    )
    seal.add_argument(
        "--all", action="store_true", help="rewrite every submission, not only recent ones"
    )
    return parser
