"""Streaming intake at the web edge: the request's stream factory.

Werkzeug's form parser asks the request for a stream per file part. Its
default spools anything over 500 KB to a plaintext temporary file; this
request class instead hands out an encrypting sink, so an upload's plaintext
only ever exists in memory, one chunk at a time.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import IO, Any

from flask import Flask, Request, current_app, request, session
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import (
    ClientDisconnected,
    HTTPException,
    RequestEntityTooLarge,
    ServiceUnavailable,
)

from portal.intake import Submission
from portal.web.extensions import portal_state

_SUBMISSION_KEY = "portal.submission"
_HOLDS_RATE_SLOT = "portal.holds_rate_slot"
# Room for the multipart framing and the small fields around the files.
_FORM_OVERHEAD = 1 << 20
# A request body must keep moving: every `PROGRESS_BYTES` of it (or the rest
# of the body, if less) must arrive within `BODY_PROGRESS_WINDOW` seconds, or
# the request is dropped. That is about 1.1 KiB/s: a Tor upload at 20 KB/s
# passes with eighteen times the margin, while a client that dribbles a byte
# every few seconds holds a server thread for one window at most.
PROGRESS_BYTES = 64 * 1024
BODY_PROGRESS_WINDOW = 60.0
# The app.config key that overrides the window (tests use a short one).
BODY_PROGRESS_WINDOW_KEY = "PORTAL_BODY_PROGRESS_WINDOW"


class TooManyRequests(HTTPException):
    code = 429
    description = "Too many submissions right now."

    def __init__(self, retry_after: int) -> None:
        super().__init__()
        self.retry_after = retry_after

    def get_headers(self, environ: Any = None, scope: Any = None) -> list[tuple[str, str]]:
        return [*super().get_headers(environ, scope), ("Retry-After", str(self.retry_after))]


class TooManyFiles(RequestEntityTooLarge):
    description = "Too many files in one submission."


class LowDiskSpace(ServiceUnavailable):
    description = "The server is low on storage space."


class FormBudget:
    """The request body as the form parser reads it, with text bounded in memory.

    Werkzeug bounds each multipart text field (`MAX_FORM_MEMORY_SIZE`) but
    not their sum (up to `MAX_FORM_PARTS` of them), and it reads an
    urlencoded body whole into memory with no bound but the upload limit:
    a 1 GiB urlencoded POST once grew a worker by 2 GiB. Here every byte the
    parser reads counts against `limit`, except the bytes it has streamed
    into encrypting file sinks (`file_bytes()`), so everything held in memory
    for one request stays under `limit` plus one read.
    """

    def __init__(self, stream: IO[bytes], limit: int, file_bytes: Callable[[], int]) -> None:
        self._stream = stream
        self._limit = limit
        self._file_bytes = file_bytes
        self._read = 0

    def read(self, size: int = -1) -> bytes:
        if size is not None and size >= 0:
            return self._counted(self._stream.read(size))
        # The urlencoded parser asks for everything: read it in bounded
        # pieces, so an oversized body is refused before it is held.
        pieces = []
        while piece := self._counted(self._stream.read(PROGRESS_BYTES)):
            pieces.append(piece)
        return b"".join(pieces)

    def readline(self, size: int = -1) -> bytes:
        return self._counted(self._stream.readline(size))

    def _counted(self, data: bytes) -> bytes:
        self._read += len(data)
        if self._read - self._file_bytes() > self._limit:
            raise RequestEntityTooLarge()
        return data


class IntakeRequest(Request):
    @property
    def max_content_length(self) -> int | None:
        """PORTAL_MAX_UPLOAD_MB, inclusive: a body of exactly that size is accepted.

        Under gunicorn, Werkzeug reads the body through a stream that raises
        413 on any read once the limit is reached, and that is also the read
        that finds the end of a body of exactly the limit. One byte of room
        makes the limit inclusive; a declared Content-Length is held to the
        exact limit.
        """
        limit: int | None = super().max_content_length
        if limit is None or (self.content_length is not None and self.content_length > limit):
            return limit
        return limit + 1

    @max_content_length.setter
    def max_content_length(self, value: int | None) -> None:
        self._max_content_length = value

    def _get_stream_for_parsing(self) -> IO[bytes]:
        limit = (self.max_form_memory_size or 0) + _FORM_OVERHEAD
        return FormBudget(super()._get_stream_for_parsing(), limit, self._streamed_to_files)  # type: ignore[return-value]

    def _streamed_to_files(self) -> int:
        return sum(sink.size for sink in self.__dict__.get("_portal_sinks", ()))

    def _load_form_data(self) -> None:
        super()._load_form_data()
        # Werkzeug names a part whose Content-Disposition it cannot read
        # `None`; Flask-WTF then crashes looking for the CSRF token among
        # the names (a 500). Such parts are dropped from the form; a file
        # among them has been received like any other and is kept.
        for key in ("form", "files"):
            data = self.__dict__[key]
            if None in data:
                self.__dict__[key] = type(data)(
                    (name, value) for name, value in data.items(multi=True) if name is not None
                )

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        state = portal_state()
        submission = current_submission(create=True)
        assert submission is not None
        if submission.file_count >= state.config.max_files:
            raise TooManyFiles()
        # Checked again for every file, not only when the request starts:
        # one long upload must not eat the room kept free for the system.
        _refuse_when_low_on_disk()
        sink = submission.open_attachment(filename or "", content_type or "")
        self.__dict__.setdefault("_portal_sinks", []).append(sink)
        return sink  # type: ignore[return-value]


def current_submission(create: bool = False) -> Submission | None:
    submission: Submission | None = request.environ.get(_SUBMISSION_KEY)
    if submission is None and create:
        state = portal_state()
        submission = Submission(state.store, state.recipients)
        request.environ[_SUBMISSION_KEY] = submission
    return submission


def _admit_submission() -> None:
    """Let only a request that can become a submission spend the global rate budget.

    Runs before CSRF checking parses the body, so refused bytes are never
    stored. A POST anywhere but a submit route is answered by routing (404,
    405) without touching the bucket; a POST to a submit route without the
    form's session cannot pass the CSRF check, so it is refused here, before
    its body is read, also without touching the bucket. The token taken by
    the rest is given back when the request stores nothing (a form error, a
    repeated form, a refused upload): only stored submissions spend it.
    """
    # followup.send is the follow-up page's form: a new submission like any other.
    if request.method != "POST" or request.endpoint not in ("submit.receive", "followup.send"):
        return
    if not session.get(current_app.config["WTF_CSRF_FIELD_NAME"]):
        raise CSRFError("The CSRF session token is missing.")
    _refuse_when_low_on_disk()
    wait = portal_state().bucket.take()
    if wait:
        raise TooManyRequests(retry_after=max(1, int(wait + 0.999)))
    request.environ[_HOLDS_RATE_SLOT] = True


def _refuse_when_low_on_disk() -> None:
    state = portal_state()
    if state.store.free_bytes() < state.config.min_free_mb * 1024 * 1024:
        raise LowDiskSpace()


def _discard_uncommitted(_exc: BaseException | None) -> None:
    submission = request.environ.get(_SUBMISSION_KEY)
    stored = submission is not None and submission.committed_id is not None
    if submission is not None:
        submission.discard()
    if request.environ.pop(_HOLDS_RATE_SLOT, False) and not stored:
        portal_state().bucket.give_back()


class BodyTooSlow(ClientDisconnected):
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

    def begin(self, sock: socket.socket) -> int:
        with self._lock:
            # Started lazily in each worker: threads do not survive fork().
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="body-watchdog", daemon=True).start()
            self._next += 1
            self._waiting[self._next] = (time.monotonic(), sock)
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
            deadline = time.monotonic() - self.window
            with self._lock:
                # Under the lock the read is still waiting, so its socket is
                # still open and still this request's.
                for token, (started, sock) in list(self._waiting.items()):
                    if started < deadline:
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
    # within the watchdog's window. gunicorn still receives up to 1 MiB per
    # recv() and keeps the surplus for the next read.
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
        token = self._watchdog.begin(self._sock)
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
        if sock is not None:
            # gunicorn resets the socket to blocking (no timeout) at the
            # start of each request, so this applies to this request only.
            sock.settimeout(self.watchdog.window)
        environ["wsgi.input"] = GuardedInput(environ["wsgi.input"], self.watchdog, sock)
        result: Iterable[bytes] = self.wsgi_app(environ, start_response)
        return result


def init_app(app: Flask) -> None:
    config = app.extensions["portal"].config
    app.config["MAX_CONTENT_LENGTH"] = config.max_upload_bytes
    # Text fields are held in memory; bound them by the testimony limit
    # (four bytes per character at most in UTF-8) rather than Flask's 500 KB.
    app.config["MAX_FORM_MEMORY_SIZE"] = config.max_testimony_chars * 4 + _FORM_OVERHEAD
    # One part per question at most, one per box of a multiple-choice question.
    questionnaire = app.extensions["questionnaire"]
    app.config["MAX_FORM_PARTS"] = config.max_files + 16 + questionnaire.form_parts
    app.before_request(_admit_submission)
    app.teardown_request(_discard_uncommitted)
    window = float(app.config.get(BODY_PROGRESS_WINDOW_KEY, BODY_PROGRESS_WINDOW))
    app.wsgi_app = GuardedInputMiddleware(app.wsgi_app, window)  # type: ignore[method-assign]
