"""Extension objects, created unbound and attached in the app factory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from flask import current_app
from flask_wtf.csrf import CSRFProtect

from portal.core.age import PublicKey
from portal.server.config import Config
from portal.server.store import SubmissionStore
from portal.server.web.onetime import FORM_LIFETIME, FormLedger, FormSigner
from portal.server.web.ratelimit import TokenBucket

csrf = CSRFProtect()
MAX_FORM_LEDGER = 1 << 16


@dataclass
class PortalState:
    """What the views need from the domain, built once per app."""

    config: Config
    store: SubmissionStore
    recipients: Sequence[PublicKey]
    bucket: TokenBucket = field(init=False)
    forms: FormSigner = field(init=False)
    used_forms: FormLedger = field(init=False)

    def __post_init__(self) -> None:
        self.bucket = TokenBucket(
            rate_per_second=self.config.rate_per_minute / 60, burst=self.config.rate_burst
        )
        self.forms = FormSigner(self.config.secret_key)
        # Every form stored within a form's lifetime must fit: the rate limit
        # bounds how many that can be. Capped, so a generous limit does not
        # take unbounded memory (14 MiB at the cap, 9 MiB at the default rate).
        hours = FORM_LIFETIME.total_seconds() / 3600
        capacity = int(self.config.rate_per_minute * 60 * hours) + self.config.rate_burst
        self.used_forms = FormLedger(capacity=min(capacity, MAX_FORM_LEDGER))


def portal_state() -> PortalState:
    state: PortalState = current_app.extensions["portal"]
    return state
