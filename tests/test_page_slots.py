"""Pages drawn once and filled in (issue 25): the same bytes as drawing them each time.

The form's first page and the received page of a text-only submission are
drawn once per language and then only filled with the request's own
strings (the form's tokens; the receipt and the character count). What
must hold: every witness gets their own values, in every place the page
shows them, and nothing else differs from a page drawn for them alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import pytest
from flask import Flask

from portal.server.web.i18n import LANGUAGES
from portal.server.web.pages import SlottedPage, render_slotted
from portal.testing.live import form_fields
from portal.testing.live import lang_prefix as prefix
from tests.support import translate

RECEIPT = re.compile(r'<p class="receipt" id="receipt" lang="en" translate="no">([0-9 ]+)</p>')


def forget_drawn_pages(app: Flask) -> None:
    app.extensions.pop("portal.slotted", None)


def submit(client, lang: str, text: str) -> str:
    fields = form_fields(client.get(f"{prefix(lang)}/submit").get_data(as_text=True))
    response = client.post(
        f"{prefix(lang)}/submit",
        data={**fields, "testimony": text, "consent": "yes"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_data(as_text=True)


@pytest.mark.parametrize("lang", list(LANGUAGES))
def test_the_kept_form_page_is_the_drawn_one_with_this_visitors_tokens(app, lang) -> None:
    client = app.test_client()
    first = client.get(f"{prefix(lang)}/submit").get_data(as_text=True)
    kept = client.get(f"{prefix(lang)}/submit").get_data(as_text=True)
    forget_drawn_pages(app)
    drawn = client.get(f"{prefix(lang)}/submit").get_data(as_text=True)

    tokens = [form_fields(page) for page in (first, kept, drawn)]
    # Each page has its own one-time value.
    assert len({t["form_id"] for t in tokens}) == 3
    # Apart from its tokens, the page filled in is byte for byte the page drawn.
    for page, own in zip((kept, drawn), tokens[1:], strict=True):
        assert page.count(own["form_id"]) == 1 and page.count(own["csrf_token"]) == 1
    neutral = [
        page.replace(own["form_id"], "ID").replace(own["csrf_token"], "TOKEN")
        for page, own in zip((first, kept, drawn), tokens, strict=True)
    ]
    assert neutral[0] == neutral[1] == neutral[2]
    assert "slot" not in kept


def test_a_kept_form_pages_tokens_are_accepted(client) -> None:
    submit(client, "ko", "첫 번째")
    page = submit(client, "ko", "두 번째 증언")  # the kept page's tokens this time
    assert RECEIPT.search(page)


@pytest.mark.parametrize("lang", list(LANGUAGES))
def test_each_received_page_shows_its_own_receipt_and_count(app, lang) -> None:
    client = app.test_client()
    pages = [submit(client, lang, "x" * n) for n in (3, 11)]
    forget_drawn_pages(app)
    pages.append(submit(client, lang, "y" * 11))

    receipts = [RECEIPT.search(page).group(1) for page in pages]  # type: ignore[union-attr]
    assert len(set(receipts)) == 3
    for page, receipt in zip(pages, receipts, strict=True):
        # Shown once at the top and once in each language's note.
        assert page.count(receipt) == 1 + len(LANGUAGES)
        for other in set(receipts) - {receipt}:
            assert other not in page
    count = translate(lang, "Your testimony: %(n)s characters.")
    assert count % {"n": 3} in pages[0] and count % {"n": 11} not in pages[0]
    assert count % {"n": 11} in pages[1] and count % {"n": 3} not in pages[1]
    # The kept page filled in and the page drawn for the same count differ by the receipt only.
    assert pages[1].replace(receipts[1], "R") == pages[2].replace(receipts[2], "R")
    assert pages[0].replace(receipts[0], "R") != pages[1].replace(receipts[1], "R")


def test_a_value_escaping_would_change_is_drawn_not_filled(app) -> None:
    drawn: list[Mapping[str, str]] = []

    def draw(values: Mapping[str, str]) -> str:
        drawn.append(dict(values))
        return f"<p>{values['v']}</p>"

    with app.test_request_context("/ko/submit"):
        assert render_slotted("t", draw, {"v": "abc"}) == "<p>abc</p>"
        count = len(drawn)
        assert render_slotted("t", draw, {"v": "def"}) == "<p>def</p>"
        assert len(drawn) == count  # filled, not drawn
        assert render_slotted("t", draw, {"v": "<b>"}) == "<p><b></p>"
        assert len(drawn) == count + 1  # not of the safe kind: drawn


def test_a_page_that_changes_its_value_is_never_kept(app) -> None:
    calls = 0

    def draw(values: Mapping[str, str]) -> str:
        nonlocal calls
        calls += 1
        return f"<p>{values['v'].upper()}</p>"

    with app.test_request_context("/"):
        assert render_slotted("upper", draw, {"v": "abc"}) == "<p>ABC</p>"
        assert render_slotted("upper", draw, {"v": "xyz"}) == "<p>XYZ</p>"
        assert calls == 3  # marks and values at first, then drawn every time


def test_a_cut_page_fills_every_place_of_a_slot() -> None:
    page = SlottedPage.cut("a M1 b M2 c M1", {"one": "M1", "two": "M2"})
    assert page.fill({"one": "1", "two": "2"}) == "a 1 b 2 c 1"
