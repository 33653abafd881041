"""Running the app under gunicorn, configured for witness safety.

gunicorn is used because it hands the request body to the app as a stream:
it never spools bodies to disk (waitress and buffering proxies do, which
would put plaintext uploads on disk). Threaded workers keep slow Tor
uploads from blocking each other. There is no access log at all.

In the documented deployment gunicorn listens on a private Unix socket
behind nginx (see `portal.server.front`), which absorbs slow and silent
connections; each request body still holds one thread while it streams, so
there are enough threads for a thousand slow bodies at once (they are
started only when needed), and the app drops a body that stops making
progress (`portal.server.web.body_guard.ProgressWatchdog`).

Every log line, gunicorn's included, goes through `SafeFormatter`: no time
stamp, no IP address, no exception message (those can quote what a client
sent), only exception types and where they were raised.
"""

from __future__ import annotations

import gc
import logging
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any

from flask import Flask
from flask.logging import default_handler
from gunicorn import util as gunicorn_util
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger
from gunicorn.http import parser as gunicorn_parser
from gunicorn.http import unreader as gunicorn_unreader
from gunicorn.http import wsgi as gunicorn_wsgi
from werkzeug.exceptions import HTTPException, default_exceptions

from portal.server.config import Config
from portal.server.hardening import forbid_core_dumps
from portal.server.scheduler import start_housekeeping
from portal.server.web.body_guard import PROGRESS_BYTES
from portal.server.web.errors import render_error
from portal.server.web.security import STATIC_HEADERS

LOG_FORMAT = "[%(levelname)s] %(name)s: %(message)s"
REDACTED = "[redacted]"

# Messages gunicorn formats with request data: the client's address, the
# request line, header names, or the unread bytes of a broken request. Each
# is replaced by a fixed text; the rest of gunicorn's messages are kept.
_REQUEST_MESSAGES = (
    (re.compile(r"^Invalid request from"), "rejected a malformed HTTP request"),
    (re.compile(r"^Error handling request"), "error handling a request"),
    (re.compile(r"^Ignored premature client disconnection"), "client disconnected early"),
    (re.compile(r"^Closing connection\."), "closing connection"),
    (re.compile(r"^HTTP/2 "), "HTTP/2 connection event"),
    (re.compile(r"^(GET|POST|HEAD|PUT|DELETE|OPTIONS|PATCH) "), "request"),
)
# A backstop for messages nobody foresaw: IPv4 and IPv6 addresses, and
# quoted byte strings (gunicorn reprs unread request bytes this way).
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_BYTES = re.compile(r"""\bb(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")


def redact(message: str) -> str:
    """The message with anything that could identify a client or quote its request removed."""
    for pattern, replacement in _REQUEST_MESSAGES:
        if pattern.match(message):
            return replacement
    message = _BYTES.sub("b'" + REDACTED + "'", message)
    message = _IPV4.sub(REDACTED, message)
    return _IPV6.sub(REDACTED, message)


def safe_traceback(exc: BaseException) -> str:
    """A traceback with frames and exception types but no exception messages.

    A message can quote request data (`invalid literal for int(): '...'`);
    the location and type are enough to find the bug. Locals are never shown.
    """
    lines: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        block = ["Traceback (most recent call last):\n"]
        for frame in traceback.extract_tb(current.__traceback__):
            block.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}\n')
            if frame.line:
                block.append(f"    {frame.line.strip()}\n")
        block.append(f"{type(current).__module__}.{type(current).__qualname__}\n")
        lines[:0] = block
        cause = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
        if cause is not None:
            lines[:0] = ["\n(raised while handling:)\n"]
        current = cause
    return "".join(lines).rstrip("\n")


class SafeFormatter(logging.Formatter):
    """Formats records without time stamps, addresses or exception messages."""

    def __init__(self) -> None:
        super().__init__(LOG_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record must not crash logging
            message = str(record.msg)
        text = f"[{record.levelname}] {record.name}: {redact(message)}"
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + safe_traceback(record.exc_info[1])
        if record.stack_info:
            text += "\n" + record.stack_info
        return text


# gunicorn's messages about a client's own mistake (a malformed request):
# worth knowing when debugging, never a warning. An attacker who can send
# garbage must not be able to write lines at the operator's level.
_CLIENT_MISTAKES = (re.compile(r"^Invalid request from"),)


class FloodGuard(logging.Filter):
    """Lets each kind of line through at most `burst` times, then once per `every` seconds.

    A kind is the logger, the level and the message with its numbers
    removed. Whatever a client makes us log, repeated, cannot push the
    operator's real lines out of a rotated log: after the burst, one line of
    each kind in `every` seconds says how many like it were left out. There
    are at most `max_kinds` kinds; more share one allowance.
    """

    def __init__(
        self, burst: int = 20, every: float = 10.0, max_kinds: int = 256,
        clock: Any = time.monotonic,
    ) -> None:  # fmt: skip
        super().__init__()
        self.burst = burst
        self.every = every
        self.max_kinds = max_kinds
        self._clock = clock
        self._lock = threading.Lock()
        # kind -> [allowance, last refill, lines left out since the last one let through]
        self._kinds: dict[tuple[str, int, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record must not crash logging
            text = str(record.msg)
        kind = (record.name, record.levelno, _DIGITS.sub("0", text)[:120])
        now = self._clock()
        with self._lock:
            if kind not in self._kinds and len(self._kinds) >= self.max_kinds:
                kind = ("", 0, "")
            state = self._kinds.setdefault(kind, [float(self.burst), now, 0])
            state[0] = min(float(self.burst), state[0] + (now - state[1]) / self.every)
            state[1] = now
            if state[0] < 1:
                state[2] += 1
                return False
            state[0] -= 1
            left_out, state[2] = int(state[2]), 0
        if left_out:
            record.msg = f"{record.msg} (and {left_out} more like it, not logged)"
        return True


_DIGITS = re.compile(r"\d+")


class QuietLogger(Logger):
    """gunicorn's logger: no access log, and every error-log line made safe.

    gunicorn writes client addresses into its access log and can be told to
    turn it on by a command line or config file; this class ignores both.
    Its error log quotes the client address and request line for malformed
    requests, even at the default level; `SafeFormatter` removes them.
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(SafeFormatter())
            handler.addFilter(FloodGuard())

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        if any(pattern.match(str(msg)) for pattern in _CLIENT_MISTAKES):
            self.error_log.info(msg, *args, **kwargs)
        else:
            super().warning(msg, *args, **kwargs)

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None


class AnonymousResponse(gunicorn_wsgi.Response):
    """gunicorn's response without its `Server:` header.

    Naming the server software tells an attacker which exploits to try and
    makes the onion service easier to fingerprint and link to other sites.
    """

    def default_headers(self) -> list[str]:
        headers: list[str] = super().default_headers()
        return [line for line in headers if not line.lower().startswith("server:")]


def render_page(app: Flask, code: int, lang: str = "en", method: str = "GET") -> str:
    """The portal's error page for `code`, as the app would answer at `/<lang>/submit`."""
    path = "/submit" if lang == "en" else f"/{lang}/submit"
    with app.test_request_context(path, method=method):
        exc: HTTPException = default_exceptions[code]()
        return render_error(exc)[0]


def protocol_error_writer(app: Flask) -> Any:
    """A replacement for gunicorn's `util.write_error`, which answers malformed requests.

    gunicorn's own page quotes what the client sent and carries none of the
    security headers; this one is the portal's error page (in English: a
    request that could not be parsed has no language) with the same headers
    as every other page. The status line is gunicorn's.
    """
    pages = {code: render_page(app, code).encode("utf-8") for code in (400, 500)}

    def write_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
        body = pages[500 if status_int in (500, 502, 503, 504) else 400]
        head = [
            f"HTTP/1.1 {status_int} {reason}",
            "Connection: close",
            "Content-Type: text/html; charset=utf-8",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
            *(f"{name}: {value}" for name, value in STATIC_HEADERS.items()),
        ]
        head_bytes = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        gunicorn_util.write_nonblock(sock, head_bytes + body)

    return write_error


class PortalServer(BaseApplication):
    def __init__(self, app: Flask, options: dict[str, Any]) -> None:
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self._app


def _no_request_log(worker: Any, req: Any) -> None:
    # gunicorn's default pre_request hook logs every request's path at debug.
    return None


# Each worker thread's stack: threads are many (one per request body in
# flight) and the app's call depth is small.
THREAD_STACK_BYTES = 1024 * 1024
# How much of a body the app did not read gunicorn reads and drops after an
# early answer (a refused form, a 413) before it gives up and closes; see
# `adapt_gunicorn`. The worker's data timeout (5 s) bounds the time it takes.
EARLY_ANSWER_DRAIN_BYTES = 16 * 1024 * 1024


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def gunicorn_options(config: Config, bind: str, workers: int, threads: int) -> dict[str, Any]:
    return {
        "bind": bind,
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        # gthread queues accepted connections for its threads; it must
        # accept at least as many as it has threads.
        "worker_connections": max(1000, threads + 64),
        "backlog": 4096,
        "accesslog": None,
        "disable_redirect_access_to_syslog": True,
        "errorlog": "-",
        "loglevel": config.log_level,
        "logger_class": QuietLogger,
        "pre_request": _no_request_log,
        # Each worker starts a housekeeping thread; one at a time (an flock)
        # sweeps abandoned staging folders and runs the daily seal.
        "post_worker_init": start_housekeeping(config),
        # The app (and its shared rate-limit state) is built once, before
        # the workers fork; a bad configuration stops the master at once.
        "preload_app": True,
        # Heartbeat files go to memory, which also works on a read-only root.
        "worker_tmp_dir": "/dev/shm",  # noqa: S108 (gunicorn creates its files safely)
        # gunicorn 25+ opens a management socket in $HOME; it is not needed,
        # and it is one more thing that writes outside the data directory.
        "control_socket_disable": True,
        # A slow upload over Tor is not a hung worker: gthread workers
        # heartbeat independently of requests, so this only limits stalls.
        "timeout": 120,
        "graceful_timeout": 60,
        "keepalive": 5,
        "proc_name": "testimony-portal",
        "forwarded_allow_ips": "",
        "proxy_allow_ips": "",
    }


def configure_logging(level: str) -> None:
    """Send every logger's records through `SafeFormatter` at `level`."""
    handler = logging.StreamHandler()
    handler.setFormatter(SafeFormatter())
    handler.addFilter(FloodGuard())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Python prints uncaught exceptions itself, messages included; route
    # them through the safe formatter instead.
    log = logging.getLogger("portal")

    def excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        log.critical("uncaught %s", kind.__name__, exc_info=(kind, exc, tb))

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            excepthook(args.exc_type, args.exc_value, args.exc_traceback)

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook


def adapt_gunicorn(app: Flask) -> None:
    """Set the gunicorn module attributes the portal relies on (before workers fork)."""
    # gunicorn builds each response through this module attribute.
    gunicorn_wsgi.Response = AnonymousResponse
    # gunicorn's workers answer malformed requests through this attribute.
    gunicorn_util.write_error = protocol_error_writer(app)
    # The largest recv() for a request body. The app reads the body in
    # PROGRESS_BYTES (the progress watchdog's unit); gunicorn's default of
    # 1 MiB made every such read copy the rest of its 1 MiB read-ahead again
    # (about eight copies of each byte), which was half of an upload's CPU
    # (bench/bench_speed.py: 5.0 -> 3.0 CPU s/GiB). gunicorn before 27 has
    # no such attribute and receives 8 KiB at a time; setting it is harmless.
    gunicorn_unreader.SocketUnreader.max_body_chunk = PROGRESS_BYTES
    # After an early answer gunicorn reads and drops the rest of the body
    # before closing the connection (nginx asks for no close: front.py), so
    # that nginx reads the answer before it finds the connection closed; a
    # close with unread bytes makes nginx's next write fail, and if that
    # comes first the witness gets a 503 instead of the answer. gunicorn 27
    # gives up after 64 KiB, which a busy nginx can send before it gets to
    # the answer (one early 400 in a few hundred under load). nginx closes
    # the connection as soon as it has the answer, so the drain ends there.
    # gunicorn before 27 drains the whole body and has no such attribute.
    if hasattr(gunicorn_parser, "_DRAIN_MAX_BYTES"):
        gunicorn_parser._DRAIN_MAX_BYTES = EARLY_ANSWER_DRAIN_BYTES


def serve(app: Flask, config: Config, bind: str, workers: int, threads: int) -> None:
    """Run gunicorn on `bind` (`host:port` or `unix:PATH`) until it is stopped."""
    configure_logging(config.log_level)
    # Flask adds its own handler (with time stamps) if the app logged before.
    app.logger.removeHandler(default_handler)
    forbid_core_dumps()
    adapt_gunicorn(app)
    threading.stack_size(THREAD_STACK_BYTES)
    options = gunicorn_options(config, bind, workers, threads)
    options["post_worker_init"] = _start_sealers(app, options["post_worker_init"])
    server = PortalServer(app, options)
    freeze_before_fork()
    server.run()


def freeze_before_fork() -> None:
    """Leave everything built so far (the app, its pages and catalogues) out of garbage collection.

    The workers fork from this process and keep all of it for their whole
    life. Python's full collections would otherwise walk it again and again
    in every worker: under the browsers load, each took 23-28 ms, and 5-6
    ms frozen (three or four in a worker's 3,150 submissions;
    docs/BENCHMARKS.md, round 7). This is the use the `gc` documentation
    gives `gc.freeze`, right before the fork: a collection in a worker then
    also leaves the master's pages unwritten, so they stay shared.
    """
    gc.collect()
    gc.freeze()


def _start_sealers(app: Flask, then: Callable[[Any], None]) -> Callable[[Any], None]:
    """A `post_worker_init` hook: this worker's sealer starts with it (portal.server.sealer).

    Started now, not at the first large upload, which would otherwise wait
    for a Python process to start.
    """

    def post_worker_init(worker: Any) -> None:
        then(worker)
        app.extensions["portal"].sealers.start()

    return post_worker_init
