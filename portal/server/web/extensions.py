"""Extension objects, created unbound and attached in the app factory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from flask import current_app
from flask_wtf.csrf import CSRFProtect

from portal.core.age import PublicKey
from portal.server.config import Config
from portal.server.sealer import SealerPool
from portal.server.store import Archive, SubmissionStore
from portal.server.web.onetime import FORM_LIFETIME, FormLedger, FormSigner, SharedFormLedger
from portal.server.web.ratelimit import TokenBucket

csrf = CSRFProtect()
MAX_FORM_LEDGER = 1 << 16


@dataclass
class PortalState:
    """What the views need from the domain, built once per app."""

    config: Config
    store: SubmissionStore
    recipients: Sequence[PublicKey]
    archive: Archive
    sealers: SealerPool
    bucket: TokenBucket = field(init=False)
    forms: FormSigner = field(init=False)
    used_forms: SharedFormLedger = field(init=False)

    def __post_init__(self) -> None:
        # The rate budget is the deployment's: each of PORTAL_NODES nodes
        # takes its share (docs/DEPLOYMENT.md).
        rate, burst = node_share(self.config.rate_per_minute, self.config.rate_burst,
                                 self.config.nodes)  # fmt: skip
        self.bucket = TokenBucket(rate_per_second=rate / 60, burst=burst)
        self.forms = FormSigner(self.config.secret_key)
        # Every form stored within a form's lifetime must fit: the rate limit
        # bounds how many that can be. Capped, so a generous limit does not
        # take unbounded memory (14 MiB at the cap, 9 MiB at the default rate).
        hours = FORM_LIFETIME.total_seconds() / 3600
        capacity = int(self.config.rate_per_minute * 60 * hours) + self.config.rate_burst
        ledger = FormLedger(capacity=min(capacity, MAX_FORM_LEDGER))
        self.used_forms = SharedFormLedger(ledger, self.archive)


def node_share(rate_per_minute: int, burst: int, nodes: int) -> tuple[float, int]:
    """One node's part of the deployment's rate budget: 1/nodes of the rate and the burst.

    The burst is at least one, so a node can take a submission at all; N
    nodes together then allow at most the configured rate, and a burst of
    at most max(burst, nodes).
    """
    return rate_per_minute / nodes, max(1, burst // nodes)


def portal_state() -> PortalState:
    state: PortalState = current_app.extensions["portal"]
    return state
