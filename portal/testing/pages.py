"""What each witness page weighs: its HTML plus its CSS, in every language.

Witnesses are often on a phone over a slow Tor link, so every page with its
stylesheet must stay under 30 KB (issue 5). `page_weights(app)` renders each
page through Flask's test client; tests/test_pages.py holds every page to the
budget and bench/page_weight.py prints the table.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flask import Flask
from werkzeug.exceptions import (
    Forbidden,
    HTTPException,
    InternalServerError,
    RequestEntityTooLarge,
    ServiceUnavailable,
)

from portal.testing.live import form_fields, lang_prefix

BUDGET_BYTES = 30 * 1024
STYLESHEET_RE = re.compile(r'<link rel="stylesheet" href="([^"]+)"')


@dataclass(frozen=True)
class PageWeight:
    page: str
    lang: str
    html: int
    css: int

    @property
    def total(self) -> int:
        return self.html + self.css


def _rendered_error(app: Flask, lang: str, exc: HTTPException) -> str:
    # Error pages that are awkward to provoke here (a full disk, a server
    # fault) weigh the same whichever way they are reached: render them
    # through the app's own error handler.
    from portal.server.web.errors import render_error

    with app.test_request_context(f"{lang_prefix(lang)}/submit", method="POST"):
        return render_error(exc)[0]


def witness_pages(app: Flask) -> Iterator[tuple[str, str, str]]:
    """(page, language, HTML) for every witness page in every language, as served by `app`."""
    from portal.server.web.i18n import LANGUAGES

    client = app.test_client()
    for lang in LANGUAGES:
        base = lang_prefix(lang)
        form = client.get(f"{base}/submit").get_data(as_text=True)
        # With the one required answer, consent: only the text makes the difference.
        hidden = form_fields(form)
        yield "landing", lang, client.get(f"{base}/").get_data(as_text=True)
        yield "form", lang, form
        # The second page of the default questionnaire, for each answer of the first.
        for role in ("suffered", "saw", "took_part", "other"):
            fields = {"csrf_token": hidden["csrf_token"], "page": "1", "go": "next", "role": role}
            yield (
                f"form, page 2 ({role})",
                lang,
                client.post(f"{base}/submit/page", data=fields).get_data(as_text=True),
            )
        yield (
            "form, with errors",
            lang,
            client.post(f"{base}/submit", data={**hidden, "testimony": ""}).get_data(as_text=True),
        )
        yield (
            "received",
            lang,
            client.post(f"{base}/submit", data={**hidden, "testimony": "page weight"}).get_data(
                as_text=True
            ),
        )
        yield (
            "received, repeated",
            lang,
            client.post(f"{base}/submit", data={**hidden, "testimony": "page weight"}).get_data(
                as_text=True
            ),
        )
        yield from _followup_pages(client, base, lang, hidden["csrf_token"])
        yield "error 400", lang, client.post(f"{base}/submit", data={}).get_data(as_text=True)
        yield "error 403", lang, _rendered_error(app, lang, Forbidden())
        yield "error 404", lang, client.get(f"{base}/no-such-page").get_data(as_text=True)
        yield "error 413", lang, _rendered_error(app, lang, RequestEntityTooLarge())
        yield "error 429", lang, _rendered_error(app, lang, _too_many_requests())
        yield "error 500", lang, _rendered_error(app, lang, InternalServerError())
        yield "error 503", lang, _rendered_error(app, lang, ServiceUnavailable())


def _followup_pages(
    client: Any, base: str, lang: str, token: str
) -> Iterator[tuple[str, str, str]]:
    """The follow-up pages (issue 11): the receipt form, a typo, and an empty mailbox."""
    from portal.core.receipt import new_receipt

    yield "follow-up", lang, client.get(f"{base}/followup").get_data(as_text=True)
    typo = {"csrf_token": token, "receipt": "123456"}
    yield (
        "follow-up, typo",
        lang,
        client.post(f"{base}/followup", data=typo).get_data(as_text=True),
    )
    receipt = {"csrf_token": token, "receipt": new_receipt().display()}
    yield (
        "follow-up, mailbox",
        lang,
        client.post(f"{base}/followup", data=receipt).get_data(as_text=True),
    )


def page_weights(app: Flask) -> list[PageWeight]:
    """HTML and CSS bytes of every witness page in every language."""
    client = app.test_client()
    css_cache: dict[str, int] = {}

    def css_bytes(html: str) -> int:
        total = 0
        for href in STYLESHEET_RE.findall(html):
            if href not in css_cache:
                css_cache[href] = len(client.get(href).data)
            total += css_cache[href]
        return total

    return [
        PageWeight(page, lang, len(html.encode("utf-8")), css_bytes(html))
        for page, lang, html in witness_pages(app)
    ]


def _too_many_requests() -> HTTPException:
    from portal.server.web.admission import TooManyRequests

    return TooManyRequests(retry_after=60)


def format_table(rows: list[PageWeight]) -> str:
    lines = [
        f"{'page':<18} {'lang':<4} {'HTML':>7} {'CSS':>7} {'total':>7}  budget {BUDGET_BYTES} B",
        "-" * 60,
    ]
    for row in rows:
        flag = "" if row.total <= BUDGET_BYTES else "  OVER BUDGET"
        lines.append(
            f"{row.page:<18} {row.lang:<4} {row.html:>7} {row.css:>7} {row.total:>7}{flag}"
        )
    heaviest = max(rows, key=lambda r: r.total)
    lines.append("-" * 60)
    lines.append(f"heaviest: {heaviest.page} ({heaviest.lang}), {heaviest.total} bytes")
    return "\n".join(lines)
