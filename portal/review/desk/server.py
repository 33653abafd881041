"""Serving the desk: 127.0.0.1 only, a port the system picks, a thread per request.

The standard library's WSGI server (`wsgiref`) with threads: a slow page
does not hold up the others, and a stalled connection is dropped after
`REQUEST_TIMEOUT_S`. Nothing is logged per request: a request line holds
the secret and the search words.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from portal.review.custody import CustodyLog
from portal.review.desk.actions import CommandLine, Runner
from portal.review.desk.app import Desk, DeskState
from portal.review.desk.cases import CaseBook
from portal.review.desk.search import INDEX_DIR, SearchIndex
from portal.review.desk.settings import DeskSettings

LOOPBACK = "127.0.0.1"
REQUEST_TIMEOUT_S = 60


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    # Never share the port with another process.
    allow_reuse_address = False


class _Handler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        pass


def build_state(
    opened_dir: Path,
    custody: Path,
    reviewer: str,
    settings: DeskSettings,
    env: Mapping[str, str],
    command: CommandLine,
    reply_options: tuple[str, ...] = (),
) -> DeskState:
    """Open (or build) the search index and read the custody log for one desk run.

    Raises:
        IndexError_: the index cannot be kept in the opened folder.
    """
    index = SearchIndex(opened_dir, first_status=settings.first_status)
    log = CustodyLog(custody)
    runner = Runner(
        opened_dir=opened_dir,
        custody=custody,
        reviewer=reviewer,
        outbox=settings.outbox or opened_dir.parent / "outbox",
        bundles=settings.bundles or opened_dir.parent / "bundles",
        work_dir=opened_dir / INDEX_DIR,
        env=env,
        command=command,
        reply_options=reply_options,
    )
    state = DeskState(
        opened_dir=opened_dir,
        index=index,
        book=CaseBook(log, settings.statuses),
        settings=settings,
        runner=runner,
        reviewer=reviewer,
        secret=secrets.token_urlsafe(32),
        csrf=secrets.token_urlsafe(32),
    )
    state.refresh()
    state.sync_cases()
    return state


class DeskServer:
    """The desk listening on 127.0.0.1; `url` is what the reviewer opens."""

    def __init__(self, state: DeskState, port: int = 0) -> None:
        self.state = state
        self.httpd = make_server(
            LOOPBACK, port, Desk(state), server_class=_Server, handler_class=_Handler
        )
        self.port = self.httpd.server_address[1]
        state.host = f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.state.host}/{self.state.secret}/{self.state.settings.language}/"

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        """Stop serving (from another thread) and close the socket and the index."""
        self.httpd.shutdown()
        self.close()

    def close(self) -> None:
        self.httpd.server_close()
        self.state.index.close()
