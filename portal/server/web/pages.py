"""Pages that only inform: the landing page and robots.txt."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, render_template, request, url_for
from flask.globals import request_ctx

from portal.server.web.extensions import portal_state

bp = Blueprint("pages", __name__)


@bp.get("/", defaults={"lang": "en"})
@bp.get("/<lang:lang>/")
def landing(lang: str) -> str:
    return render_once("landing.html", lang)


# Each language's landing page, per script root; a handful of entries at most.
_MAX_KEPT_PAGES = 16


def render_once(template: str, lang: str) -> str:
    """A page that is the same for every visitor, drawn once per language and kept.

    Only for a page with no form, no token and nothing of the request in it:
    its inputs are its language, its links (which depend on the script root
    only) and settings fixed at start-up. Drawing the landing page (about
    twenty translated messages) cost three times the rest of the request.
    """
    kept: dict[tuple[str, str, str], str] = current_app.extensions.setdefault("portal.pages", {})
    key = (template, lang, request.script_root)
    page = kept.get(key)
    if page is None:
        page = render_template(template)
        if len(kept) < _MAX_KEPT_PAGES:
            kept[key] = page
    return page


@bp.app_context_processor
def limits() -> dict[str, int]:
    """The limits a witness is told about, on the form and on error pages."""
    config = portal_state().config
    return {"max_upload_mb": config.max_upload_mb, "max_files": config.max_files}


@bp.app_template_global("url_for")
def url_for_any_request(endpoint: str, **values: Any) -> str:
    """Flask's `url_for`, which also works for a request too broken to route.

    A malformed Host header leaves Flask without a URL adapter, and the
    error page for it would then fail to build its own links; the witness
    would get a bare 500 instead of a page that explains. Paths do not
    depend on the host, so build them with a stand-in one.
    """
    if request_ctx and request_ctx.url_adapter is None:
        adapter = current_app.url_map.bind("localhost", script_name=request.script_root or "/")
        return adapter.build(endpoint, values)
    return url_for(endpoint, **values)


@bp.get("/robots.txt")
def robots() -> Response:
    return Response("User-agent: *\nDisallow: /\n", mimetype="text/plain")
