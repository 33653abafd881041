"""Every failure becomes a page in the witness's language, never a bare 500.

Each page says what happened and, for a submission, whether anything was
saved: after any of these errors, nothing was. The page is chosen by the
status code and, where the code alone says too little, by an explicit
`Reason` (never by a Python class name: renaming a class changes no page).
"""

from __future__ import annotations

import enum
import logging
from typing import ClassVar

from flask import Flask, render_template
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

from portal.server.store import StorageFullError, StoreError

log = logging.getLogger("portal")


class Reason(enum.StrEnum):
    """What an error page says beyond its status code; templates/error.html switches on it."""

    # The page for the status code alone.
    GENERIC = "generic"
    # The form's CSRF token is missing, expired or from another session.
    FORM_EXPIRED = "form-expired"
    TOO_MANY_FILES = "too-many-files"
    # The disk is below PORTAL_MIN_FREE_MB, or a write found it full.
    SHORT_OF_STORAGE = "short-of-storage"


class PortalHTTPError(HTTPException):
    """The base of the portal's own HTTP errors: each names the `Reason` its page gives."""

    reason: ClassVar[Reason] = Reason.GENERIC


def reason_of(exc: HTTPException) -> Reason:
    if isinstance(exc, PortalHTTPError):
        return exc.reason
    if isinstance(exc, CSRFError):
        return Reason.FORM_EXPIRED
    return Reason.GENERIC


def _page(code: int, reason: Reason) -> str:
    return render_template("error.html", code=code, reason=reason.value)


def render_error(exc: HTTPException) -> tuple[str, int, dict[str, str]]:
    code = exc.code or 500
    headers = dict(exc.get_headers()) if code in (405, 429) else {}
    headers.pop("Content-Type", None)
    return _page(code, reason_of(exc)), code, headers


def _storage_failed(exc: StoreError) -> tuple[str, int, dict[str, str]]:
    # Log the class of failure only: the message may carry a path, and
    # nothing about the request belongs in a log.
    log.error("submission not stored: %s", type(exc).__name__)
    reason = Reason.SHORT_OF_STORAGE if isinstance(exc, StorageFullError) else Reason.GENERIC
    return _page(503, reason), 503, {}


def _unexpected(exc: Exception) -> tuple[str, int, dict[str, str]]:
    # The exception's text may quote request data; the type is enough to start from.
    log.error("unexpected %s while handling a request", type(exc).__name__)
    return render_error(InternalServerError())


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, render_error)
    app.register_error_handler(StoreError, _storage_failed)
    app.register_error_handler(Exception, _unexpected)
