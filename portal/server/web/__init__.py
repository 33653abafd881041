"""The witness-facing web application: app factory and wiring only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask

from portal.server.archive import open_archive
from portal.server.config import (
    Config,
    ConfigError,
    check_data_dir,
    load_questionnaire,
    load_recipients,
)
from portal.server.freespace import FreeSpaceFloor
from portal.server.seal import recover_if_idle
from portal.server.sealer import SealerPool
from portal.server.store import ArchiveUnavailable, StoreError, SubmissionStore
from portal.server.web import (
    admission,
    body_guard,
    errors,
    followup,
    i18n,
    kept,
    pages,
    questions,
    request,
    security,
    submit,
)
from portal.server.web.extensions import PortalState, csrf


def template_folder() -> Path:
    """Templates ship inside the wheel as portal/templates; in a checkout they are top level."""
    package = Path(__file__).resolve().parents[2]  # portal/
    packaged = package / "templates"
    if packaged.is_dir():
        return packaged
    return package.parent / "templates"


def create_app(config: Config | None = None, **overrides: Any) -> Flask:
    """Build the portal: read config, load public keys, prepare the store.

    Raises:
        ConfigError: no recipients, a private key where keys are read, or a
            bad setting; the message says what to do.
    """
    config = config or Config.from_env()
    recipients = load_recipients(config.recipients_file)
    questionnaire = load_questionnaire(config, i18n.LANGUAGES)
    # Every write of every upload keeps PORTAL_MIN_FREE_MB free on the disk.
    floor = FreeSpaceFloor(config.data_dir, config.min_free_mb * 1024 * 1024)
    store = SubmissionStore(config.data_dir, opener=floor.opener)
    check_data_dir(config.data_dir)
    try:
        store.initialise()
        recover_if_idle(store)
    except (OSError, StoreError) as exc:
        # What check_data_dir cannot foresee (a full disk, a folder that
        # changed under us): still one line, never a traceback.
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"cannot prepare the data directory {config.data_dir}: {reason}; "
            "run `testimony-portal check` for details"
        ) from None
    # Where committed submissions rest: never silently the local disk when
    # a bucket was asked for and cannot be used.
    archive = open_archive(config, store)
    try:
        archive.verify()
    except ArchiveUnavailable as exc:
        raise ConfigError(f"PORTAL_STORE={config.store}: {exc}") from None

    app = Flask(__name__, template_folder=str(template_folder()))
    app.config.update(security.flask_settings(config))
    app.config.update(overrides)
    # Each worker's sealer process, started with the worker (appserver.py).
    sealers = SealerPool(recipients, config.data_dir, floor.floor_bytes, floor.lock_fd)
    app.extensions["portal"] = PortalState(
        config=config, store=store, recipients=recipients, archive=archive, sealers=sealers
    )
    questions.init_app(app, questionnaire)

    i18n.init_app(app)
    security.init_app(app)
    request.init_app(app)  # the encrypting stream factory and the form's limits
    admission.init_app(app)  # runs before CSRF parses the body
    body_guard.init_app(app)
    csrf.init_app(app)
    errors.init_app(app)
    app.register_blueprint(pages.bp)
    app.register_blueprint(submit.bp)
    followup.init_app(app)
    # Outermost: a kept answer is replayed before any other layer runs.
    kept.init_app(app)
    return app
