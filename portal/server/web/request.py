"""The request class whose stream factory encrypts: uploads never touch a disk in plaintext.

Werkzeug's form parser asks the request for a stream per file part. Its
default spools anything over 500 KB to a plaintext temporary file;
`IntakeRequest` instead hands out an encrypting sink of this request's
`portal.server.intake.Submission`, so an upload's plaintext only ever exists in
memory, a few pieces at a time. `FormBudget` bounds what the parser holds in
memory for the text around the files. The submission lives for one request:
whatever it did not commit is discarded when the request ends.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import IO

from flask import Flask, Request, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wsgi import LimitedStream

from portal.server.intake import AttachmentSink, Submission
from portal.server.sealer import SEALER_MIN_BODY
from portal.server.web import multipart
from portal.server.web.admission import (
    SMALL_BODY_BYTES,
    SMALL_BODY_ENDPOINTS,
    accepts_files,
    refuse_files,
    refuse_when_low_on_disk,
    release_rate_token,
)
from portal.server.web.body_guard import PROGRESS_BYTES
from portal.server.web.errors import PortalHTTPError, Reason
from portal.server.web.extensions import portal_state

_SUBMISSION_KEY = "portal.submission"
# Room for the multipart framing and the small fields around the files.
_FORM_OVERHEAD = 1 << 20


class TooManyFiles(PortalHTTPError, RequestEntityTooLarge):
    description = "Too many files in one submission."
    reason = Reason.TOO_MANY_FILES


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
            stream: object = self._stream
            if type(stream) is LimitedStream and not hasattr(stream._stream, "readinto"):
                return self._counted(read_limited(stream, size))
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


def read_limited(stream: LimitedStream, size: int) -> bytes:
    """`stream.read(size)`, returning the wrapped stream's own bytes.

    Werkzeug's `LimitedStream` is an `io.RawIOBase`: its `read` makes a new
    buffer, has `readinto` copy the wrapped stream's bytes into it, and
    copies them out again, for every 64 KiB of an upload. This follows its
    `readinto` step for step for a wrapped stream without `readinto` (the
    portal's `GuardedInput`): the same bytes, the same position, the same
    `on_exhausted` and `on_disconnect` calls, without the two copies
    (`tests/test_intake_read.py` runs both side by side). It uses the
    attributes `readinto` uses; Werkzeug is pinned in requirements.lock.
    """
    remaining = stream.limit - stream._pos
    if remaining <= 0:
        stream.on_exhausted()
        return b""
    try:
        data: bytes = stream._stream.read(min(size, remaining))
    except (OSError, ValueError) as exc:
        stream.on_disconnect(error=exc)
        return b""
    if not data:
        stream.on_disconnect()
        return b""
    stream._pos += len(data)
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
        if self.endpoint in SMALL_BODY_ENDPOINTS:
            limit = SMALL_BODY_BYTES
        if limit is None or (self.content_length is not None and self.content_length > limit):
            return limit
        return limit + 1

    @max_content_length.setter
    def max_content_length(self, value: int | None) -> None:
        self._max_content_length = value

    def _get_stream_for_parsing(self) -> IO[bytes]:
        limit = (self.max_form_memory_size or 0) + _FORM_OVERHEAD
        # The budget counts the file sinks this request makes (`_get_file_stream`)
        # from their list, not through the request: Werkzeug keeps the stream
        # it parsed on the request, and a stream that held the request would
        # make every request, with its environ, submission and buffers, a
        # reference cycle that only the garbage collector frees (issue 25).
        sinks: list[AttachmentSink] = self.__dict__.setdefault("_portal_sinks", [])
        # Werkzeug declares IO[bytes] but only calls read() and readline().
        return FormBudget(super()._get_stream_for_parsing(), limit, partial(_streamed, sinks))  # type: ignore[return-value]

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
        if not accepts_files():
            # A login or a deletion: its files would be staged (and count
            # against the disk floor) for nothing.
            refuse_files()
        state = portal_state()
        submission = current_submission()
        if submission.file_count >= state.config.max_files:
            raise TooManyFiles()
        # Checked again for every file, not only when the request starts:
        # one long upload must not eat the room kept free for the system.
        # Checked when the file is made: the empty, unnamed part a browser
        # sends when no file was chosen makes none (AttachmentSink).
        # A large body's files go to this worker's sealer process, if it is
        # free: there they are hashed and encrypted beside the parsing.
        large = total_content_length is not None and total_content_length >= SEALER_MIN_BODY
        sink = submission.open_attachment(
            filename or "",
            content_type or "",
            before_create=refuse_when_low_on_disk,
            sealers=state.sealers if large else None,
        )
        self.__dict__.setdefault("_portal_sinks", []).append(sink)
        # Werkzeug declares IO[bytes]; it only writes the part and seeks it to 0.
        return sink  # type: ignore[return-value]


def _streamed(sinks: list[AttachmentSink]) -> int:
    return sum(sink.size for sink in sinks)


def current_submission() -> Submission:
    """This request's submission, created on first use; discarded at the end unless committed."""
    submission: Submission | None = request.environ.get(_SUBMISSION_KEY)
    if submission is None:
        state = portal_state()
        submission = Submission(state.store, state.recipients)
        request.environ[_SUBMISSION_KEY] = submission
    return submission


def _discard_uncommitted(_exc: BaseException | None) -> None:
    submission = request.environ.get(_SUBMISSION_KEY)
    stored = submission is not None and submission.committed_id is not None
    if submission is not None:
        submission.discard()
    release_rate_token(stored)


def init_app(app: Flask) -> None:
    config = app.extensions["portal"].config
    app.request_class = IntakeRequest
    multipart.install()  # Werkzeug's decoder without a compile per request
    app.config["MAX_CONTENT_LENGTH"] = config.max_upload_bytes
    # Text fields are held in memory; bound them by the testimony limit
    # (four bytes per character at most in UTF-8) rather than Flask's 500 KB.
    app.config["MAX_FORM_MEMORY_SIZE"] = config.max_testimony_chars * 4 + _FORM_OVERHEAD
    # One part per question at most, one per box of a multiple-choice question.
    questionnaire = app.extensions["questionnaire"]
    app.config["MAX_FORM_PARTS"] = config.max_files + 16 + questionnaire.form_parts
    app.teardown_request(_discard_uncommitted)
