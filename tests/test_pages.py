"""The witness pages through Flask's test client: languages, error pages, weight.

The language lives in the URL and nowhere else; every page, error pages
included, speaks the language of its address; every page with its CSS stays
small and loads nothing from anywhere else.
"""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser

import pytest

from portal.server.web.i18n import DEFAULT_LANGUAGE, LANGUAGES
from portal.testing import pages as page_weight
from portal.testing.live import form_fields
from portal.testing.live import lang_prefix as prefix
from tests.support import translate


def html_lang(page: str) -> str:
    match = re.search(r'<html lang="([^"]+)" dir="([^"]+)">', page)
    assert match, "no <html lang dir>"
    return f"{match.group(1)} {match.group(2)}"


class TextOnly(HTMLParser):
    """The text a reader sees, without the language menu (which names every language)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "nav" or self._skip:
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def visible_text(page: str) -> str:
    parser = TextOnly()
    parser.feed(page)
    return " ".join(parser.parts)


def hidden_fields(client, lang: str) -> dict[str, str]:
    """Open the form: its CSRF token and one-time value."""
    return form_fields(client.get(f"{prefix(lang)}/submit").get_data(as_text=True))


# ------------------------------------------------------------------ language


@pytest.mark.parametrize("path", ["/", "/submit"])
@pytest.mark.parametrize("lang", list(LANGUAGES))
def test_page_speaks_the_language_of_its_address(client, lang: str, path: str) -> None:
    response = client.get(prefix(lang) + path)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert html_lang(page) == f"{LANGUAGES[lang]['tag']} {LANGUAGES[lang]['dir']}"
    assert translate(lang, "Give testimony") in page
    assert translate(lang, "Testimony Portal") in page


@pytest.mark.parametrize("lang", list(LANGUAGES))
def test_every_page_has_a_menu_naming_each_language_in_itself(client, lang: str) -> None:
    page = client.get(f"{prefix(lang)}/submit").get_data(as_text=True)
    for code, info in LANGUAGES.items():
        current = ' aria-current="true"' if code == lang else ""
        link = (
            f'<a href="{prefix(code)}/submit" lang="{info["tag"]}" hreflang="{info["tag"]}"'
            f"{current}>{info['name']}</a>"
        )
        assert link in page


@pytest.mark.parametrize("path", ["/en/", "/en/submit", "/fr/", "/KO/"])
def test_english_has_one_address_and_unknown_languages_are_not_found(client, path: str) -> None:
    assert client.get(path).status_code == 404


def test_browser_language_is_ignored(client) -> None:
    # Tor Browser always says en-US; anything else would single a witness out.
    page = client.get("/", headers={"Accept-Language": "ko-KR,ko;q=0.9"}).get_data(as_text=True)
    assert html_lang(page) == "en ltr"


def test_language_is_never_kept_in_a_cookie(app, client) -> None:
    assert "Set-Cookie" not in client.get("/ko/").headers
    form = client.get("/zh/submit")
    [cookie] = form.headers.getlist("Set-Cookie")
    name, value = cookie.split(";", 1)[0].split("=", 1)
    session = app.session_interface.get_signing_serializer(app).loads(value)
    assert set(session) == {"csrf_token"}
    # The cookie does not carry the language to the next page either.
    assert html_lang(client.get("/submit").get_data(as_text=True)) == "en ltr"


# --------------------------------------------------------------- form errors


@pytest.mark.parametrize("lang", list(LANGUAGES))
def test_form_errors_are_in_the_witness_language(make_app, lang: str) -> None:
    client = make_app(max_testimony_chars=10).test_client()
    path = f"{prefix(lang)}/submit"
    cases = {
        "": "Please write your testimony or attach a file.",
        "far more than ten characters": "Your testimony is longer than %(max)d characters. "
        "Please shorten it, or attach it as a file.",
    }
    for text, message in cases.items():
        response = client.post(path, data={**hidden_fields(client, lang), "testimony": text})
        page = response.get_data(as_text=True)
        assert response.status_code == 400
        assert translate(lang, message).replace("%(max)d", "10") in page
        assert translate(lang, "Your testimony was NOT saved") in page


# --------------------------------------------------------------- error pages


def trigger(make_app, code: int, lang: str):
    """Provoke a real error `code` for an address in `lang`; returns (response, was_post)."""
    base = prefix(lang)
    if code == 400:  # no CSRF token
        return make_app().test_client().post(f"{base}/submit", data={"testimony": "x"}), True
    if code == 403:
        return make_app(failing_routes=True).test_client().get(f"{base}/test-forbidden"), False
    if code == 404:
        return make_app().test_client().get(f"{base}/no-such-page"), False
    if code == 413:
        client = make_app(max_upload_mb=1).test_client()
        big = io.BytesIO(b"\0" * (2 << 20))
        data = {**hidden_fields(client, lang), "attachments": (big, "video.mp4")}
        return client.post(f"{base}/submit", data=data), True
    if code == 429:
        client = make_app(rate_burst=1, rate_per_minute=1).test_client()
        data = {**hidden_fields(client, lang), "testimony": "first"}
        assert client.post(f"{base}/submit", data=data).status_code == 200
        data = {**hidden_fields(client, lang), "testimony": "second"}
        return client.post(f"{base}/submit", data=data), True
    if code == 500:
        return make_app(failing_routes=True).test_client().get(f"{base}/test-broken"), False
    if code == 503:
        client = make_app(min_free_mb=1 << 40).test_client()
        data = {**hidden_fields(client, lang), "testimony": "x"}
        return client.post(f"{base}/submit", data=data), True
    raise AssertionError(code)


NOTHING_SENT = (
    "Nothing was sent or saved from this page. "
    "Testimony you sent earlier and saw confirmed is safe."
)
ERROR_TITLES = {
    400: "The request could not be accepted",
    403: "Not allowed",
    404: "Page not found",
    413: "Too large",
    429: "Too busy right now",
    500: "Something went wrong",
    503: "Not available right now",
}


@pytest.mark.parametrize("code", list(ERROR_TITLES))
@pytest.mark.parametrize("lang", list(LANGUAGES))
def test_error_page_says_what_happened_and_whether_anything_was_saved(
    make_app, lang: str, code: int
) -> None:
    response, was_post = trigger(make_app, code, lang)
    page = response.get_data(as_text=True)
    assert response.status_code == code
    assert html_lang(page).startswith(LANGUAGES[lang]["tag"] + " ")
    assert f"<h1>{translate(lang, ERROR_TITLES[code])}</h1>" in page
    if was_post:
        assert translate(lang, "Your testimony was NOT saved.") in page
    else:
        assert translate(lang, NOTHING_SENT) in page
    if code == 429:
        assert int(response.headers["Retry-After"]) > 0


# ------------------------------------------------------ every page, every language


@pytest.fixture
def pages(app) -> list[tuple[str, str, str]]:
    return list(page_weight.witness_pages(app))


def test_translated_pages_show_no_english(pages) -> None:
    # Names that stay in Latin letters in Korean and Chinese text.
    allowed = {"Tor", "JavaScript", "Cookie", "IP", "MB", "SHA", "PDF", "ExifTool", "mat"}
    leftovers = {}
    # The received page holds the receipt's warning in every language, each
    # marked with its own lang and shown only when chosen in the menu.
    other_language = re.compile(
        r'<section class="language-choice[^"]*" id="language-en".*?</section>', re.S
    )
    for page, lang, html in pages:
        if lang != DEFAULT_LANGUAGE:
            text = visible_text(other_language.sub("", html))
            words = set(re.findall(r"[A-Za-z]{2,}", text)) - allowed
            if words:
                leftovers[f"{page} ({lang})"] = sorted(words)
    assert leftovers == {}


def test_pages_have_no_unfilled_placeholders(pages) -> None:
    assert [(page, lang) for page, lang, html in pages if "%(" in html or "%%" in html] == []


def test_pages_load_nothing_from_elsewhere_and_run_no_script(pages) -> None:
    for page, lang, html in pages:
        assert "<script" not in html.lower(), (page, lang)
        assert " style=" not in html, (page, lang)
        for url in re.findall(r'(?:src|href|action)="([^"]*)"', html):
            assert url.startswith(("/", "#")) and not url.startswith("//"), (page, lang, url)


def test_every_page_with_its_css_is_under_30_kb(app, capsys) -> None:
    rows = page_weight.page_weights(app)
    with capsys.disabled():
        print("\n" + page_weight.format_table(rows))
    assert [(r.page, r.lang, r.total) for r in rows if r.total > page_weight.BUDGET_BYTES] == []


def test_error_page_for_an_unroutable_request_still_has_working_links(client) -> None:
    # A Host header Werkzeug cannot encode leaves Flask without a URL adapter.
    response = client.get("/ko/submit", headers={"Host": "h" * 64})
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert html_lang(page) == "ko ltr"
    assert '<a href="/ko/">' in page and 'href="/static/style.css"' in page


def test_landing_page_is_drawn_once_per_language_and_served_whole(client, app) -> None:
    from flask import template_rendered

    drawn: list[str] = []

    def record(sender, template, context, **extra):
        drawn.append(template.name)

    template_rendered.connect(record, app)
    try:
        pages = {path: [client.get(path) for _ in range(3)] for path in ("/", "/ko/", "/zh/")}
    finally:
        template_rendered.disconnect(record, app)
    assert drawn.count("landing.html") == 3
    for path, responses in pages.items():
        bodies = {r.get_data(as_text=True) for r in responses}
        assert len(bodies) == 1, path
        assert all(
            r.status_code == 200 and r.headers["Cache-Control"] == "no-store" for r in responses
        )
    assert 'lang="ko"' in pages["/ko/"][0].get_data(as_text=True)
    assert 'lang="zh-Hans"' in pages["/zh/"][0].get_data(as_text=True)
    assert pages["/"][0].get_data() != pages["/ko/"][0].get_data()
