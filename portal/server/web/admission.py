"""Admission control: which requests may spend the global rate budget, and the disk floor.

Runs before CSRF checking parses a body. Only a POST of a submission form
that carries the form's session takes a token from the shared bucket, and
the token is given back when the request stores nothing; nothing is
admitted while the disk is below PORTAL_MIN_FREE_MB. The errors raised here
are the 429 and 503 pages a witness sees before any byte is stored.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, request, session
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import ServiceUnavailable

from portal.server.web.errors import PortalHTTPError, Reason
from portal.server.web.extensions import portal_state

_HOLDS_RATE_SLOT = "portal.holds_rate_slot"


class TooManyRequests(PortalHTTPError):
    code = 429
    description = "Too many submissions right now."

    def __init__(self, retry_after: int) -> None:
        super().__init__()
        self.retry_after = retry_after

    def get_headers(self, environ: Any = None, scope: Any = None) -> list[tuple[str, str]]:
        return [*super().get_headers(environ, scope), ("Retry-After", str(self.retry_after))]


class LowDiskSpace(PortalHTTPError, ServiceUnavailable):
    description = "The server is low on storage space."
    reason = Reason.SHORT_OF_STORAGE


def spend_rate_token() -> None:
    """Take one token from the global bucket, or refuse with 429 and a Retry-After."""
    wait = portal_state().bucket.take()
    if wait:
        raise TooManyRequests(retry_after=max(1, int(wait + 0.999)))


def admit_submission() -> None:
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
    refuse_when_low_on_disk()
    spend_rate_token()
    request.environ[_HOLDS_RATE_SLOT] = True


def refuse_when_low_on_disk() -> None:
    """Refuse with 503 while the disk is below PORTAL_MIN_FREE_MB (the room kept for the system)."""
    state = portal_state()
    if state.store.free_bytes() < state.config.min_free_mb * 1024 * 1024:
        raise LowDiskSpace()


def release_rate_token(stored: bool) -> None:
    """At the end of a request: give its token back unless it stored a submission."""
    if request.environ.pop(_HOLDS_RATE_SLOT, False) and not stored:
        portal_state().bucket.give_back()


def init_app(app: Flask) -> None:
    app.before_request(admit_submission)
