"""The witness-facing web application: app factory and wiring only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask

from portal.config import Config, load_recipients
from portal.store import SubmissionStore
from portal.web import errors, followup, i18n, intake, pages, security, submit
from portal.web.extensions import PortalState, csrf


def template_folder() -> Path:
    """Templates ship inside the wheel as portal/templates; in a checkout they are top level."""
    packaged = Path(__file__).resolve().parent.parent / "templates"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent.parent / "templates"


def create_app(config: Config | None = None, **overrides: Any) -> Flask:
    """Build the portal: read config, load public keys, prepare the store.

    Raises:
        ConfigError: no recipients, a private key where keys are read, or a
            bad setting; the message says what to do.
    """
    config = config or Config.from_env()
    recipients = load_recipients(config.recipients_file)
    store = SubmissionStore(config.data_dir)
    store.initialise()

    app = Flask(__name__, template_folder=str(template_folder()))
    app.request_class = intake.IntakeRequest
    app.config.update(security.flask_settings(config))
    app.config.update(overrides)
    app.extensions["portal"] = PortalState(config=config, store=store, recipients=recipients)

    i18n.init_app(app)
    security.init_app(app)
    intake.init_app(app)  # limits run before CSRF parses the body
    csrf.init_app(app)
    errors.init_app(app)
    app.register_blueprint(pages.bp)
    app.register_blueprint(submit.bp)
    followup.init_app(app)
    return app
