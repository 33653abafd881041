"""Error pages are chosen by status code and an explicit reason, never by a class name."""

from __future__ import annotations

import pytest
from flask import Flask
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import (
    BadRequest,
    HTTPException,
    RequestEntityTooLarge,
    ServiceUnavailable,
)

from portal.server.store import StorageFullError
from portal.server.web.admission import LowDiskSpace, TooManyRequests
from portal.server.web.body_guard import BodyTooSlow
from portal.server.web.errors import PortalHTTPError, Reason, _storage_failed, render_error
from portal.server.web.request import TooManyFiles
from portal.server.web.security import UnknownHost
from portal.server.web.storing import RepeatStillStoring


def _page(app: Flask, exc: HTTPException, lang: str = "en") -> tuple[str, int]:
    with app.test_request_context(f"/{lang}/submit", method="POST"):
        body, status, _headers = render_error(exc)
    return body, status


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (TooManyFiles(), Reason.TOO_MANY_FILES),
        (LowDiskSpace(), Reason.SHORT_OF_STORAGE),
        (TooManyRequests(retry_after=5), Reason.GENERIC),
        (BodyTooSlow(), Reason.GENERIC),
        (UnknownHost(), Reason.GENERIC),
        (RepeatStillStoring(), Reason.GENERIC),
    ],
)
def test_every_portal_http_error_names_its_reason(error: PortalHTTPError, reason: Reason) -> None:
    assert isinstance(error, PortalHTTPError)
    assert error.reason is reason


@pytest.mark.parametrize("lang", ["en", "ko", "zh"])
@pytest.mark.parametrize(
    ("error", "generic"),
    [
        (TooManyFiles(), RequestEntityTooLarge()),
        (LowDiskSpace(), ServiceUnavailable()),
        (CSRFError("expired"), BadRequest()),
    ],
)
def test_a_reason_changes_the_page_beyond_its_status_code(
    app: Flask, lang: str, error: HTTPException, generic: HTTPException
) -> None:
    """Each reason the template knows draws its own text, unlike the plain page of its code."""
    special, status = _page(app, error, lang)
    plain, plain_status = _page(app, generic, lang)
    assert status == plain_status == error.code
    assert special != plain


@pytest.mark.parametrize("lang", ["en", "ko", "zh"])
@pytest.mark.parametrize("original", [TooManyFiles, LowDiskSpace, RepeatStillStoring, BodyTooSlow])
def test_renaming_an_error_class_changes_no_page(
    app: Flask, lang: str, original: type[PortalHTTPError]
) -> None:
    renamed = type("SomethingElseEntirely", (original,), {})
    assert _page(app, renamed(), lang) == _page(app, original(), lang)


def test_a_full_disk_during_a_write_draws_the_low_disk_page(app: Flask) -> None:
    with app.test_request_context("/en/submit", method="POST"):
        full, status, _headers = _storage_failed(StorageFullError("disk full"))
    assert status == 503
    assert (full, status) == _page(app, LowDiskSpace())
    assert "short of storage space" in full
