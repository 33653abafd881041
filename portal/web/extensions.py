"""Extension objects, created unbound and attached in the app factory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from flask import current_app
from flask_wtf.csrf import CSRFProtect

from portal.age import PublicKey
from portal.config import Config
from portal.store import SubmissionStore
from portal.web.ratelimit import TokenBucket

csrf = CSRFProtect()


@dataclass
class PortalState:
    """What the views need from the domain, built once per app."""

    config: Config
    store: SubmissionStore
    recipients: Sequence[PublicKey]
    bucket: TokenBucket = field(init=False)

    def __post_init__(self) -> None:
        self.bucket = TokenBucket(
            rate_per_second=self.config.rate_per_minute / 60, burst=self.config.rate_burst
        )


def portal_state() -> PortalState:
    state: PortalState = current_app.extensions["portal"]
    return state
