"""Admission control: which requests may send a body, spend a rate budget, or stage files.

Runs before CSRF checking parses a body. No POST without the form's session
has its body read, on any route. Only a POST of a submission form takes a
token from the submissions' shared bucket, and the token is given back when
the request stores nothing; nothing is admitted while the disk is below
PORTAL_MIN_FREE_MB. Follow-up logins and deletions spend a budget of their
own (`portal.server.web.followup`), never the submissions'. The errors raised here
are the 413, 429 and 503 pages a witness sees before any byte is stored.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, request, session
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import RequestEntityTooLarge, ServiceUnavailable

from portal.server.web.body_guard import limit_body_time
from portal.server.web.errors import PortalHTTPError, Reason
from portal.server.web.extensions import portal_state
from portal.server.web.ratelimit import TokenBucket

_HOLDS_RATE_SLOT = "portal.holds_rate_slot"

# The routes whose POST is a new submission: the only ones that spend the
# submissions' budget and the only ones whose file parts are staged.
SUBMISSION_ENDPOINTS = frozenset({"submit.receive", "followup.send"})
# The follow-up login and its deletion form: a receipt and a list of reply
# ids, a few KiB at most. Their bodies must be small and arrive quickly.
SMALL_BODY_ENDPOINTS = frozenset({"followup.mailbox", "followup.delete"})
# One read of the body guard: the whole body is one timed read.
SMALL_BODY_BYTES = 64 * 1024
# The whole of a small body must arrive within this many seconds (Tor's
# first byte can take a few seconds; 64 KiB at Tor's slowest takes ten).
SMALL_BODY_SECONDS = 15.0


class TooManyRequests(PortalHTTPError):
    code = 429
    description = "Too many submissions right now."

    def __init__(self, retry_after: int) -> None:
        super().__init__()
        self.retry_after = retry_after

    def get_headers(self, environ: Any = None, scope: Any = None) -> list[tuple[str, str]]:
        return [*super().get_headers(environ, scope), ("Retry-After", str(self.retry_after))]


class FilesNotAccepted(PortalHTTPError, RequestEntityTooLarge):
    description = "This form takes no files."


class LowDiskSpace(PortalHTTPError, ServiceUnavailable):
    description = "The server is low on storage space."
    reason = Reason.SHORT_OF_STORAGE


def spend_rate_token() -> None:
    """Take one token from the submissions' bucket, or refuse with 429 and a Retry-After."""
    refuse_unless_token(portal_state().bucket)


def refuse_unless_token(bucket: TokenBucket) -> None:
    """Take one token from `bucket`, or refuse with 429 and a Retry-After."""
    wait = bucket.take()
    if wait:
        raise TooManyRequests(retry_after=max(1, int(wait + 0.999)))


def refuse_sessionless_post() -> None:
    """Refuse a POST without the form's session before a byte of its body is read.

    Every form the portal draws sets the session, so a POST without it can
    only fail the CSRF check, which would first read (and parse, and stage
    the files of) the whole body. A POST that routing refuses (404, 405) is
    left to routing: its body is never read either.
    """
    if request.method != "POST" or request.routing_exception is not None:
        return
    if not session.get(current_app.config["WTF_CSRF_FIELD_NAME"]):
        raise CSRFError("The CSRF session token is missing.")
    if request.endpoint in SMALL_BODY_ENDPOINTS:
        if (request.content_length or 0) > SMALL_BODY_BYTES:
            raise RequestEntityTooLarge()
        limit_body_time(SMALL_BODY_SECONDS)


def accepts_files() -> bool:
    """Whether this request's file parts may be staged (only a submission's may)."""
    return request.endpoint in SUBMISSION_ENDPOINTS


def refuse_files() -> None:
    raise FilesNotAccepted()


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
    refuse_sessionless_post()
    # followup.send is the follow-up page's form: a new submission like any other.
    if request.method != "POST" or request.endpoint not in SUBMISSION_ENDPOINTS:
        return
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
