"""Storing a form's submission once: claim the form, commit, then complete or release.

Both forms that store a submission (the main form and the follow-up page's
"send more") carry a one-time value. A reload, a double click or a replay
of the same form must store nothing new, and a form whose first request
failed must be sendable again. `store_once` is that sequence, in one place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from werkzeug.exceptions import ServiceUnavailable

from portal.server.intake import Submission
from portal.server.web.errors import PortalHTTPError
from portal.server.web.extensions import portal_state
from portal.server.web.onetime import AlreadyStored, Claimed, FormValue, StillStoring
from portal.server.web.request import current_submission

# A repeated form waits this long for the first request with it to finish
# storing. The first one has received its whole body by then, so what is
# left (fsync, the manifest, a rename) takes seconds.
REPEAT_WAIT_SECONDS = 300.0
_REPEAT_POLL_SECONDS = 0.1

T = TypeVar("T")


class RepeatStillStoring(PortalHTTPError, ServiceUnavailable):
    description = "The same form is still being stored."


@dataclass(frozen=True)
class Stored(Generic[T]):
    """This request stored the form's submission; `value` is what `commit` returned."""

    submission: Submission
    value: T


def _claim(once: FormValue) -> Claimed | AlreadyStored:
    """Claim the form for this request, waiting while another request stores it."""
    ledger = portal_state().used_forms
    deadline = time.monotonic() + REPEAT_WAIT_SECONDS
    while isinstance(claim := ledger.claim(once), StillStoring):
        if time.monotonic() > deadline:
            raise RepeatStillStoring()
        time.sleep(_REPEAT_POLL_SECONDS)
    return claim


def store_once(once: FormValue, commit: Callable[[Submission], T]) -> Stored[T] | AlreadyStored:
    """Commit this request's submission with `commit`, unless the form was stored already.

    Returns `AlreadyStored` (and commits nothing) for a form an earlier
    request stored. If `commit` fails, the claim is released so that the
    same form can be sent again, and the exception propagates.
    """
    claim = _claim(once)
    if isinstance(claim, AlreadyStored):
        return claim
    submission = current_submission()
    ledger = portal_state().used_forms
    try:
        value = commit(submission)
    except BaseException:
        ledger.release(claim)
        raise
    # Nothing of the submission goes into the ledger: a repeat of this form
    # (a reload, perhaps by the next person on a shared device) is told it
    # was stored, but is not shown the receipt again.
    ledger.complete(claim, b"")
    return Stored(submission, value)
