"""The witness pages in a real browser: Debian's Chromium, headless, JavaScript off.

A witness on Tor Browser at "Safest" has no JavaScript, so the pages are
driven with JavaScript disabled. axe-core needs JavaScript to run, so the
accessibility audit opens the same pages in a second context with it on
(the pages carry no script of their own, so they render the same).

Every page in every language is reached the way a witness would reach it,
error pages included: 400 by sending a form whose session has gone, 413 to
a server with a 1 MB limit, 429 to one allowing a single submission, 503 to
one that believes its disk is full. 403 and 500 have no trigger a witness
could use, so a small app with two test-only routes serves them.

Screenshots of every page, at phone and desktop widths, go to
test-output/screenshots/.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Response
from werkzeug.serving import make_server

from portal.core.age import X25519Identity
from portal.server.web.i18n import LANGUAGES
from portal.testing.live import LiveServer, start_server
from portal.testing.live import lang_prefix as prefix
from tests.support import REPO, VIEWPORTS, app_config, build_app, translate

pytestmark = pytest.mark.browser

SCREENSHOTS = REPO / "test-output" / "screenshots"
# The questionnaire's screenshots in docs/screenshots/ come from
# tests/test_paths_browser.py (UPDATE_DOCS_SCREENSHOTS=1).

# Each page: the status it answers with and the heading it shows.
PAGES = {
    "landing": (200, "Give testimony safely"),
    "form": (200, "Give testimony"),
    "form-errors": (400, "Give testimony"),
    "form-insider": (200, "Give testimony"),
    "received": (200, "Your testimony was received"),
    "error-400": (400, "The request could not be accepted"),
    "error-403": (403, "Not allowed"),
    "error-404": (404, "Page not found"),
    "error-413": (413, "Too large"),
    "error-429": (429, "Too busy right now"),
    "error-500": (500, "Something went wrong"),
    "error-503": (503, "Not available right now"),
}
ALL_PAGES = [(lang, name) for lang in LANGUAGES for name in PAGES]


# ------------------------------------------------------------------ servers


@dataclass
class Reviewer:
    identity: X25519Identity
    identity_file: Path


@dataclass
class Servers:
    main: LiveServer
    small_uploads: LiveServer
    flooded: LiveServer
    disk_full: LiveServer
    faulty_url: str
    # Over the small_uploads server's 1 MB limit; a path, so Chromium reads it from disk.
    too_large_file: Path


@pytest.fixture(scope="module")
def reviewer(tmp_path_factory: pytest.TempPathFactory) -> Reviewer:
    identity = X25519Identity.generate()
    path = tmp_path_factory.mktemp("reviewer") / "identity.txt"
    path.write_text(f"{identity}\n")
    path.chmod(0o600)
    return Reviewer(identity, path)


def _faulty_app(root: Path, recipient: str):
    """The real app plus routes that fail with 403 and 500, in every language."""
    return build_app(app_config(root, recipient), failing_routes=True, testing=False)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, reviewer: Reviewer) -> Iterator[Servers]:
    root = tmp_path_factory.mktemp("servers")
    recipient = str(reviewer.identity.recipient)
    settings = {
        "main": {},
        "small_uploads": {"PORTAL_MAX_UPLOAD_MB": "1"},
        "flooded": {"PORTAL_RATE_BURST": "1", "PORTAL_RATE_PER_MINUTE": "1"},
        "disk_full": {"PORTAL_MIN_FREE_MB": str(1 << 40)},
    }
    started: dict[str, LiveServer] = {}
    faulty = make_server("127.0.0.1", 0, _faulty_app(root / "faulty", recipient), threaded=True)
    thread = threading.Thread(target=faulty.serve_forever, daemon=True)
    thread.start()
    too_large = root / "video.mp4"
    too_large.write_bytes(bytes(1 << 20) + b"one byte too many")
    try:
        for name, env in settings.items():
            started[name] = start_server(root / name, recipient, reviewer.identity_file, env=env)
        yield Servers(
            **started,
            faulty_url=f"http://127.0.0.1:{faulty.server_port}",
            too_large_file=too_large,
        )
    finally:
        for server in started.values():  # all at once: each takes a moment to shut down
            server.process.terminate()
        for server in started.values():
            server.stop()
        faulty.shutdown()
        thread.join()


# ------------------------------------------------------------------ browser


@pytest.fixture(scope="module")
def witness(browser: Browser) -> Iterator[BrowserContext]:
    """What a witness has: no JavaScript, a phone-sized screen."""
    context = browser.new_context(java_script_enabled=False, viewport=VIEWPORTS["phone"])
    yield context
    context.close()


@pytest.fixture(scope="module")
def auditor(browser: Browser) -> Iterator[BrowserContext]:
    """JavaScript on, only so that axe-core can run."""
    context = browser.new_context(java_script_enabled=True, viewport=VIEWPORTS["phone"])
    yield context
    context.close()


@pytest.fixture
def witness_page(witness: BrowserContext) -> Iterator[Page]:
    page = witness.new_page()
    yield page
    page.close()


@pytest.fixture
def auditor_page(auditor: BrowserContext) -> Iterator[Page]:
    page = auditor.new_page()
    yield page
    page.close()


def send(page: Page) -> Response:
    """Press the form's first button: Continue, or Send on the last page (Back comes after)."""
    with page.expect_navigation() as navigation:
        page.locator("main form button[type=submit]").first.click()
    response = navigation.value
    assert response is not None
    return response


def visit(page: Page, servers: Servers, name: str, lang: str) -> Response:
    """Reach page `name` in `lang` the way a witness would."""
    base = prefix(lang)
    testimony = page.locator("textarea[name=testimony]")
    consent = page.locator("#q-consent-yes")

    def form(server: LiveServer) -> None:
        """The form's last page: the first page's question left unanswered, then Continue."""
        response = page.goto(f"{server.url}{base}/submit")
        assert response is not None and response.status == 200
        assert send(page).status == 200

    if name == "landing":
        response = page.goto(f"{servers.main.url}{base}/")
    elif name == "form":
        response = page.goto(f"{servers.main.url}{base}/submit")
    elif name == "form-insider":
        response = page.goto(f"{servers.main.url}{base}/submit")
        page.locator("input[name=role][value=took_part]").check()
        response = send(page)
    elif name == "form-errors":
        form(servers.main)
        response = send(page)  # nothing written, nothing attached
    elif name == "received":
        form(servers.main)
        testimony.fill(f"browser test ({lang})")
        consent.check()
        response = send(page)
    elif name == "error-400":
        form(servers.main)
        page.context.clear_cookies()  # the session holding the CSRF token is gone
        testimony.fill("too late")
        consent.check()
        response = send(page)
    elif name == "error-403":
        response = page.goto(f"{servers.faulty_url}{base}/test-forbidden")
    elif name == "error-404":
        response = page.goto(f"{servers.main.url}{base}/no-such-page")
    elif name == "error-413":
        form(servers.small_uploads)
        page.locator("input[name=attachments]").set_input_files(servers.too_large_file)
        response = send(page)
    elif name == "error-429":
        # The first submission takes the only token; the next one finds none.
        for _ in range(2):
            form(servers.flooded)
            testimony.fill("one of many")
            consent.check()
            response = send(page)
            if response.status == 429:
                break
    elif name == "error-500":
        response = page.goto(f"{servers.faulty_url}{base}/test-broken")
    elif name == "error-503":
        form(servers.disk_full)
        testimony.fill("no room")
        consent.check()
        response = send(page)
    else:
        raise AssertionError(name)
    assert response is not None
    return response


# -------------------------------------------------------------------- tests


@pytest.mark.parametrize(("lang", "name"), ALL_PAGES)
def test_page_works_without_javascript_on_a_phone(
    witness_page: Page, servers: Servers, lang: str, name: str
) -> None:
    page = witness_page
    status, heading = PAGES[name]
    response = visit(page, servers, name, lang)
    assert response.status == status
    assert page.locator("html").get_attribute("lang") == LANGUAGES[lang]["tag"]
    assert page.locator("h1").inner_text() == translate(lang, heading)
    # Readable at 360 px: nothing wider than the screen, so no sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORTS["phone"]["width"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for size, viewport in VIEWPORTS.items():
        page.set_viewport_size(viewport)
        page.screenshot(path=SCREENSHOTS / f"{lang}-{name}-{size}.png", full_page=True)


@pytest.mark.parametrize(("lang", "name"), ALL_PAGES)
def test_page_has_no_accessibility_violations(
    auditor_page: Page, servers: Servers, lang: str, name: str
) -> None:
    from axe_playwright_python.sync_playwright import Axe

    response = visit(auditor_page, servers, name, lang)
    assert response.status == PAGES[name][0]
    result = Axe().run(auditor_page)
    assert result.violations_count == 0, result.generate_report()


def test_pages_make_no_request_to_any_other_origin(witness_page: Page, servers: Servers) -> None:
    requested: list[str] = []
    witness_page.on("request", lambda request: requested.append(request.url))
    for lang in LANGUAGES:
        for name in ("landing", "form", "received", "error-404"):
            visit(witness_page, servers, name, lang)
    outside = [url for url in requested if not re.match(rf"{re.escape(servers.main.url)}/", url)]
    assert requested and outside == []


def test_keyboard_reaches_every_control_in_reading_order(
    witness_page: Page, servers: Servers
) -> None:
    page = witness_page
    page.goto(f"{servers.main.url}/ko/submit")
    describe = (
        "() => { const e = document.activeElement; return e.tagName.toLowerCase()"
        " + ' ' + (e.getAttribute('name') || e.textContent.trim()); }"
    )

    def tab_order(stops: int) -> list[str]:
        order = []
        for _ in range(stops):
            page.keyboard.press("Tab")
            order.append(page.evaluate(describe))
            if order[-1] == "a 본문으로 건너뛰기":
                # The skip link appears on screen when it has the focus.
                box = page.locator("a.skip").bounding_box()
                assert box is not None and box["x"] >= 0 and box["y"] >= 0
        return order

    # Page 1: the one question, a group of radio buttons (one stop for Tab), then Continue.
    assert tab_order(7) == [
        "a 본문으로 건너뛰기",
        "a 증언 포털",
        "a English",
        "a 한국어",
        "a 简体中文",
        "input role",
        "button go",
    ]
    page.get_by_label("직접 보았거나 알고 있는 일입니다").check()
    assert send(page).status == 200
    # Page 2: the language menu is made of buttons that keep the answers (name "go");
    # the hidden honeypot field is never reached; Back comes after Send.
    page.locator("body").focus()
    assert tab_order(18) == [
        "a 본문으로 건너뛰기",
        "a 증언 포털",
        "button go",
        "button go",
        "button go",
        "textarea testimony",
        "input when",
        "input where",
        "textarea responsible",
        "input how_known",
        "input how_known",
        "input how_known",
        "textarea confirm",
        "textarea anything_else",
        "input attachments",
        # A group of radio buttons is one stop for the Tab key.
        "input consent",
        "button 안전하게 보내기",
        "button go",
    ]
