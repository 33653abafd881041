"""The conversation in headless Chromium with JavaScript off, as a Korean witness on a phone.

Submit with a photo -> receipt -> (export, open, reply in Korean, import) ->
the follow-up page with the receipt shows the reply -> send more with another
file -> (export, open) -> both submissions in one thread, with the reply.
Screenshots of each witness page go to test-output/screenshots/; with
UPDATE_DOCS_SCREENSHOTS=1 they also replace the ones in docs/screenshots/ (the
receipt is random, so every run draws new pixels: the committed ones change
only when asked).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from portal.review.cli import ExitStatus
from portal.testing.live import LiveServer
from tests.conversation_support import export, import_replies
from tests.review_support import open_args, review
from tests.support import REPO, VIEWPORTS, signing_key_file

pytestmark = pytest.mark.browser

SCREENSHOTS = REPO / "test-output" / "screenshots"
DOC_SCREENSHOTS = REPO / "docs" / "screenshots"
REPLY = "증언 감사합니다. 사진을 찍은 날짜를 기억하십니까?"


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(java_script_enabled=False, viewport=VIEWPORTS["phone"])
    page = context.new_page()
    yield page
    context.close()


def _shot(page: Page, name: str) -> None:
    # Readable at 360 px: nothing wider than the screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORTS["phone"]["width"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"ko-{name}-phone.png", full_page=True)
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1":
        page.screenshot(path=DOC_SCREENSHOTS / f"ko-{name}-phone.png", full_page=True)


def _click(page: Page, button: str) -> int:
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name=button).click()
    assert navigation.value is not None
    return navigation.value.status


def test_korean_witness_reads_a_reply_and_sends_more_without_javascript(
    page: Page, live_server: LiveServer, tmp_path: Path
) -> None:
    page.set_content("<title>off</title><script>document.title = 'on'</script>")
    assert page.title() == "off", "JavaScript must be disabled for the witness"
    photo = tmp_path / "수용소 사진.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 300)
    second = tmp_path / "약도.png"
    second.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(5000))

    page.goto(f"{live_server.url}/ko/submit")
    page.get_by_label("직접 보았거나 알고 있는 일입니다").check()
    assert _click(page, "계속") == 200
    page.get_by_label("무슨 일이 있었습니까?").fill("2019년 겨울, 집결소에서 본 일을 증언합니다.")
    page.get_by_label("사진, 동영상, 녹음이나 문서가 있습니까?").set_input_files(photo)
    page.get_by_label("먼저 저에게 물어봐 주십시오").check()  # the questionnaire's consent
    assert _click(page, "안전하게 보내기") == 200
    receipt = page.locator("#receipt").inner_text().strip()
    assert len(receipt.replace(" ", "")) == 30
    main = page.locator("main").inner_text()
    assert "지금 종이에 보이는 그대로 적어 두십시오" in main
    assert hashlib.sha256(photo.read_bytes()).hexdigest() in main
    _shot(page, "receipt")

    # The organisation's side: export, open, reply in Korean, carry back, import.
    usb, out, custody = tmp_path / "usb", tmp_path / "opened", tmp_path / "custody.jsonl"
    export(live_server.data_dir, usb)
    assert review(open_args(usb, live_server.identity_file, out, custody)).status == 0
    (first_id,) = [p.name for p in out.iterdir() if p.is_dir()]
    message = tmp_path / "reply.txt"
    message.write_text(REPLY, "utf-8")
    outbox = tmp_path / "outbox"
    run = review(
        ["reply", first_id, "--from", out, "--message-file", message, "--out", outbox,
         "--custody", custody,
         "--signing-key", signing_key_file(Path(str(custody)).parent / "signer")]
    )  # fmt: skip
    assert run.status == ExitStatus.OK, run.err
    assert import_replies(live_server.data_dir, outbox)[0] == 0

    # A typo is marked on the field, before anything else happens.
    page.goto(f"{live_server.url}/ko/")
    with page.expect_navigation():
        page.get_by_role("link", name="접수번호로 답장을 읽거나").click()
    _shot(page, "followup")
    digits = receipt.replace(" ", "")
    wrong = digits[:3] + str((int(digits[3]) + 1) % 10) + digits[4:]
    page.get_by_label("접수번호").fill(wrong)
    assert _click(page, "열기") == 400
    assert page.get_by_role("alert").inner_text().startswith("접수번호의 1번째 묶음")
    assert page.get_by_label("접수번호").get_attribute("aria-invalid") == "true"
    _shot(page, "followup-typo")

    page.get_by_label("접수번호").fill(receipt)
    assert _click(page, "열기") == 200
    replies = page.locator(".reply")
    assert replies.count() == 1 and REPLY in replies.first.inner_text()
    _shot(page, "followup-reply")

    page.get_by_label("무슨 일이 있었습니까?").fill(
        "사진은 2019년 12월에 찍었습니다. 약도를 보냅니다."
    )
    page.get_by_label("사진, 동영상, 녹음이나 문서가 있습니까?").set_input_files(second)
    page.get_by_label("지난번에 답한 것과 같습니다").check()  # consent, asked again
    assert _click(page, "안전하게 보내기") == 200
    assert page.locator("h1").inner_text() == "증언이 접수되었습니다"
    assert hashlib.sha256(second.read_bytes()).hexdigest() in page.locator("main").inner_text()
    assert page.locator("#receipt").count() == 0
    _shot(page, "followup-sent")

    # Read, then deleted from the server on request.
    page.goto(f"{live_server.url}/ko/followup")
    page.get_by_label("접수번호").fill(receipt)
    assert _click(page, "열기") == 200
    assert _click(page, "이 답장들을 서버에서 지우기") == 200
    assert page.locator(".reply").count() == 0
    assert "읽으신 답장을 서버에서 지웠습니다." in page.locator("main").inner_text()

    export(live_server.data_dir, usb)
    run = review(open_args(usb, live_server.identity_file, out, custody))
    assert run.status == ExitStatus.OK, run.err
    ids = [p.name for p in out.iterdir() if p.is_dir() and p.name != "replies"]
    threads = {json.loads((out / i / "testimony.json").read_text())["thread"] for i in ids}
    assert len(ids) == 2 and len(threads) == 1
    index = (out / "index.html").read_text("utf-8")
    section = index[index.index(f'id="thread-{threads.pop()[:16]}"') :]
    assert REPLY in section and all(i in section for i in ids)


@pytest.mark.parametrize("lang", ["en", "ko", "zh"])
def test_follow_up_pages_have_no_accessibility_violations(
    browser: Browser, live_server: LiveServer, lang: str
) -> None:
    from axe_playwright_python.sync_playwright import Axe

    from portal.core.age import encrypt
    from portal.core.conversation import mailbox_name
    from portal.server.mailbox import ReplyStore
    from tests.conversation_support import identity_of, receipt_of
    from tests.support import TEST_SIGNING_KEY, add_signed

    receipt = receipt_of(live_server.client().submit("for the audit", [], lang).body)
    identity = identity_of(live_server, receipt)
    add_signed(
        ReplyStore(live_server.data_dir, [TEST_SIGNING_KEY.public]),
        mailbox_name(str(identity.recipient)),
        encrypt("답장 回复 reply".encode(), [identity.recipient]),
    )
    context = browser.new_context(java_script_enabled=True, viewport=VIEWPORTS["phone"])
    page = context.new_page()
    base = "" if lang == "en" else f"/{lang}"
    try:
        page.goto(f"{live_server.url}{base}/followup")
        assert Axe().run(page).violations_count == 0
        field = page.locator("input[name=receipt]")
        field.fill("12345")
        with page.expect_navigation():
            page.locator("form button[type=submit]").click()
        result = Axe().run(page)
        assert result.violations_count == 0, result.generate_report()
        page.locator("input[name=receipt]").fill(receipt)
        with page.expect_navigation():
            page.locator("form button[type=submit]").click()
        assert page.locator(".reply").count() == 1
        result = Axe().run(page)
        assert result.violations_count == 0, result.generate_report()
    finally:
        context.close()
