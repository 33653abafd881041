"""Every failure becomes a page in the witness's language, never a bare 500.

Each page says what happened and, for a submission, whether anything was
saved: after any of these errors, nothing was.
"""

from __future__ import annotations

import logging

from flask import Flask, render_template
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

from portal.store import StorageFullError, StoreError

log = logging.getLogger("portal")


def render_error(exc: HTTPException) -> tuple[str, int, dict[str, str]]:
    code = exc.code or 500
    headers = dict(exc.get_headers()) if code in (405, 429) else {}
    headers.pop("Content-Type", None)
    kind = "csrf" if isinstance(exc, CSRFError) else type(exc).__name__
    return render_template("error.html", code=code, kind=kind), code, headers


def _storage_failed(exc: StoreError) -> tuple[str, int, dict[str, str]]:
    # Log the class of failure only: the message may carry a path, and
    # nothing about the request belongs in a log.
    log.error("submission not stored: %s", type(exc).__name__)
    kind = "StorageFull" if isinstance(exc, StorageFullError) else "StorageError"
    return render_template("error.html", code=503, kind=kind), 503, {}


def _unexpected(exc: Exception) -> tuple[str, int, dict[str, str]]:
    # The exception's text may quote request data; the type is enough to start from.
    log.error("unexpected %s while handling a request", type(exc).__name__)
    return render_error(InternalServerError())


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, render_error)
    app.register_error_handler(StoreError, _storage_failed)
    app.register_error_handler(Exception, _unexpected)
