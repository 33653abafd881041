"""The request body's guard: every read failure is a 400, and a body must keep moving.

WSGI middleware wrapped around the whole app (`GuardedInputMiddleware`). It
replaces `wsgi.input` with `GuardedInput`, which turns the server's own parse
errors into a clean 400, reads the body in blocks of `PROGRESS_BYTES`, and
registers each blocking read with a per-process `ProgressWatchdog` that drops
a body arriving slower than `PROGRESS_BYTES` per `BODY_PROGRESS_WINDOW`.
Nothing here knows about forms or submissions (see `portal.server.web.request`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterable
from typing import IO, Any

from flask import Flask, request
from werkzeug.exceptions import ClientDisconnected, HTTPException

from portal.server.config import BODY_PROGRESS_WINDOW, PROGRESS_BYTES
from portal.server.web.errors import PortalHTTPError

__all__ = ["BODY_PROGRESS_WINDOW", "PROGRESS_BYTES"]  # defined in portal.server.config
# The app.config key that overrides the window (tests use a short one).
BODY_PROGRESS_WINDOW_KEY = "PORTAL_BODY_PROGRESS_WINDOW"


class BodyTooSlow(PortalHTTPError, ClientDisconnected):
    description = "The request body arrived too slowly, or stopped arriving."


class ProgressWatchdog:
    """Drops request bodies that do not keep moving (see `BODY_PROGRESS_WINDOW`).

    A socket timeout alone stops a body that goes silent, but not one that
    sends a byte every few seconds: each byte restarts the timeout, and such
    a client holds a server thread for as long as it likes. So every read of
    the body is registered here while it waits, and one thread per worker
    process shuts down the reading side of any socket whose read has waited
    longer than `window`. The blocked read then returns, and the request ends
    with a 400 page (nothing is kept).
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._waiting: dict[int, tuple[float, socket.socket]] = {}
        self._dropped: set[int] = set()
        self._next = 0
        self._pid = 0

    def begin(self, sock: socket.socket, deadline: float | None = None) -> int:
        """Register a read that is about to wait; it is dropped after `window` or at `deadline`."""
        expires = time.monotonic() + self.window
        if deadline is not None:
            expires = min(expires, deadline)
        with self._lock:
            # Started lazily in each worker: threads do not survive fork().
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="body-watchdog", daemon=True).start()
            self._next += 1
            self._waiting[self._next] = (expires, sock)
            return self._next

    def end(self, token: int) -> bool:
        """Unregister a read; True if it was dropped for making too little progress."""
        with self._lock:
            self._waiting.pop(token, None)
            if token in self._dropped:
                self._dropped.discard(token)
                return True
            return False

    def _run(self) -> None:
        while True:
            time.sleep(min(1.0, self.window / 4))
            now = time.monotonic()
            with self._lock:
                # Under the lock the read is still waiting, so its socket is
                # still open and still this request's.
                for token, (expires, sock) in list(self._waiting.items()):
                    if expires < now:
                        del self._waiting[token]
                        self._dropped.add(token)
                        # OSError: the client has already closed it.
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_RD)


class GuardedInput:
    """The request body, with every failure to read it turned into a 400.

    gunicorn raises its own parse errors (such as `InvalidChunkSize` for a
    malformed chunked body) from `wsgi.input.read()`. They are not `OSError`,
    so Werkzeug lets them through and they would end as a 500; they are the
    client's fault, and the witness must see a page saying nothing was saved.

    With a watchdog, every read from the server waits for at most
    `PROGRESS_BYTES` and is timed by it (see `ProgressWatchdog`).
    """

    # The body is read from the server in blocks this large and handed out
    # from memory. It is also the unit of progress: each block must arrive
    # within the watchdog's window. Under `serve`, gunicorn receives at most
    # this much per recv() too (`portal.server.appserver.adapt_gunicorn`), so no read
    # copies a larger read-ahead again.
    READ_AHEAD = PROGRESS_BYTES

    def __init__(
        self,
        stream: IO[bytes],
        watchdog: ProgressWatchdog | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self._stream = stream
        self._block = b""
        self._pos = 0
        self._watchdog = watchdog if sock is not None else None
        self._sock = sock
        # Set by `limit_body_time` for routes whose whole body is small.
        self.deadline: float | None = None

    def _buffered(self, size: int) -> bytes:
        data = self._block[self._pos : self._pos + size]
        self._pos += len(data)
        return data

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            rest = self._buffered(len(self._block))
            pieces = [rest]
            while piece := self._timed(self._stream.read, self.READ_AHEAD):
                pieces.append(piece)
            return b"".join(pieces)
        if self._pos >= len(self._block):
            self._block = self._timed(self._stream.read, max(size, self.READ_AHEAD))
            self._pos = 0
        return self._buffered(size)

    def readline(self, size: int = -1) -> bytes:
        if self._pos < len(self._block):
            end = self._block.find(b"\n", self._pos) + 1 or len(self._block)
            if size is not None and size >= 0:
                end = min(end, self._pos + size)
            return self._buffered(end - self._pos)
        if size is None or size < 0 or size > self.READ_AHEAD:
            size = self.READ_AHEAD
        return self._timed(self._stream.readline, size)

    def _timed(self, read: Any, size: int) -> bytes:
        if self._watchdog is None or self._sock is None:
            return self._guard(read, size)
        token = self._watchdog.begin(self._sock, self.deadline)
        try:
            data = self._guard(read, size)
        except ClientDisconnected:
            if self._watchdog.end(token):
                raise BodyTooSlow() from None
            raise
        if self._watchdog.end(token):
            raise BodyTooSlow()
        return data

    @staticmethod
    def _guard(read: Any, size: int) -> bytes:
        try:
            data: bytes = read(size)
        except HTTPException:
            raise
        except Exception as exc:
            # Only the class: the message may quote the bytes that were sent.
            raise ClientDisconnected(
                f"the request body could not be read ({type(exc).__name__})"
            ) from None
        return data


class GuardedInputMiddleware:
    """Wraps every request body in `GuardedInput`, and bounds slow bodies under gunicorn.

    gunicorn reads a request body with no time limit, so a client that stops
    sending, or sends a byte now and then, in the middle of an upload would
    hold a worker thread for ever; a few dozen such clients would shut out
    every witness. A body that sends nothing for `window` seconds (socket
    timeout), or less than `PROGRESS_BYTES` in `window` seconds (watchdog),
    is dropped (400, nothing kept). Slow is fine: Tor often is.
    """

    def __init__(self, wsgi_app: Any, window: float = BODY_PROGRESS_WINDOW) -> None:
        self.wsgi_app = wsgi_app
        self.watchdog = ProgressWatchdog(window)

    @property
    def stall_timeout(self) -> float:
        """The progress window in seconds (settable: tests shorten it)."""
        return self.watchdog.window

    @stall_timeout.setter
    def stall_timeout(self, seconds: float) -> None:
        self.watchdog.window = seconds

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        sock = environ.get("gunicorn.socket")
        if sock is not None and has_body(environ):
            # gunicorn resets the socket to blocking (no timeout) at the
            # start of each request, so this applies to this request only.
            # A request without a body has nothing to time: a timeout would
            # only make each of its socket calls wait in poll() first (a
            # reader too slow for the answer is nginx's, `send_timeout`).
            sock.settimeout(self.watchdog.window)
        environ["wsgi.input"] = GuardedInput(environ["wsgi.input"], self.watchdog, sock)
        result: Iterable[bytes] = self.wsgi_app(environ, start_response)
        return result


def has_body(environ: dict[str, Any]) -> bool:
    """Whether the request says it sends a body: a length above zero, or chunks."""
    length = environ.get("CONTENT_LENGTH") or "0"
    return length != "0" or bool(environ.get("HTTP_TRANSFER_ENCODING"))


def limit_body_time(seconds: float) -> None:
    """The rest of this request's body must arrive within `seconds`, whatever its pace.

    For routes that take a small body only (a receipt): a client that sends
    its headers and then nothing, or a byte now and then, holds a thread for
    this long at most instead of the upload window.
    """
    stream = request.environ.get("wsgi.input")
    if isinstance(stream, GuardedInput):
        stream.deadline = time.monotonic() + seconds


def init_app(app: Flask) -> None:
    window = float(app.config.get(BODY_PROGRESS_WINDOW_KEY, BODY_PROGRESS_WINDOW))
    # Flask's documented way to add WSGI middleware; mypy sees a method replaced.
    app.wsgi_app = GuardedInputMiddleware(app.wsgi_app, window)  # type: ignore[method-assign]
