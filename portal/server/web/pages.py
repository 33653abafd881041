"""Pages that only inform: the landing page and robots.txt."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, render_template, request, url_for
from flask.globals import request_ctx

from portal.server.web.extensions import portal_state
from portal.server.web.i18n import current_language
from portal.server.web.kept import keep_response

bp = Blueprint("pages", __name__)


@bp.get("/", defaults={"lang": "en"})
@bp.get("/<lang:lang>/")
def landing(lang: str) -> str:
    # The same bytes for every visitor of this address: kept whole (kept.py).
    keep_response()
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


# What a slot may be filled with: characters that HTML escaping leaves as
# they are, so a value drawn into the page by Jinja and a value put into a
# slot give the same bytes. Tokens, receipts and numbers are all of this kind.
_SLOT_SAFE = re.compile(r"[0-9A-Za-z._ -]*")


@dataclass(frozen=True)
class SlottedPage:
    """A drawn page cut at its slots: `pieces` around the slots named by `names`."""

    pieces: tuple[str, ...]
    names: tuple[str, ...]

    @classmethod
    def cut(cls, page: str, marks: Mapping[str, str]) -> SlottedPage:
        by_mark = {mark: name for name, mark in marks.items()}
        parts = re.split("(" + "|".join(map(re.escape, by_mark)) + ")", page)
        return cls(tuple(parts[0::2]), tuple(by_mark[mark] for mark in parts[1::2]))

    def fill(self, values: Mapping[str, str]) -> str:
        out = [self.pieces[0]]
        for name, piece in zip(self.names, self.pieces[1:], strict=True):
            out += (values[name], piece)
        return "".join(out)


# A page that could not be cut (a value did not reach it as drawn): always drawn.
_UNCUT = SlottedPage((), ())


def render_slotted(key: Hashable, draw: Callable[[Mapping[str, str]], str],
                   values: Mapping[str, str]) -> str:  # fmt: skip
    """`draw(values)`, the page drawn once per key and then only filled in.

    For a page that is the same for every visitor but for a few strings of
    the request (`values`: a form's tokens, a receipt). The first request of
    a key draws the page with random marks in place of the values, cuts it
    at the marks, and checks that filling the cut page with its own values
    gives exactly what drawing the page with them gives; only then is it
    kept. `key` must name everything else the page depends on; the script
    root and the page's language are added here. Drawing the form's first
    page (its translated messages, its questions) took 1.0 ms of CPU; filling
    it in takes 0.25 ms with the rest of the request (docs/BENCHMARKS.md).
    """
    if not all(_SLOT_SAFE.fullmatch(value) for value in values.values()):
        return draw(values)
    kept: dict[Hashable, SlottedPage] = current_app.extensions.setdefault("portal.slotted", {})
    full_key = (key, request.script_root, current_language())
    page = kept.get(full_key)
    if page is None:
        marks = {name: "slot" + secrets.token_hex(16) for name in values}
        page = SlottedPage.cut(draw(marks), marks)
        drawn = draw(values)
        if page.fill(values) != drawn:
            page = _UNCUT
        if len(kept) < _MAX_KEPT_PAGES:
            kept[full_key] = page
        return drawn
    if page is _UNCUT:
        return draw(values)
    return page.fill(values)


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
