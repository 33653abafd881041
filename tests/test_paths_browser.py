"""Each kind of witness walks the Korean questionnaire in Chromium with JavaScript off.

The default questionnaire first asks which describes the witness (it
happened to them, they saw it, they took part or worked for the state), then
the questions that fit. Each path is walked as a witness would: page 1, page
2, the page's Back button once (every answer must survive it), a mistake on
the witness's path, the send button, the received page's language menu
(which must not lose the receipt). Then `testimony-review open` must show
every answer under its question in the sealed questionnaire's words, and the
insider's follow-up, sent with consent `yes`, must forward without override.

Screenshots go to test-output/screenshots/ (docs/screenshots/ with
UPDATE_DOCS_SCREENSHOTS=1).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from portal.core.age import X25519Identity
from portal.core.questionnaire import Question, QuestionKind
from portal.testing.live import LiveServer, start_server
from tests.questionnaire_support import (
    KOREAN_PATHS,
    QUESTIONNAIRE,
    asked_questions,
    assert_each_answer_under_its_question,
)
from tests.review_support import open_args, review
from tests.support import REPO, VIEWPORTS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCREENSHOTS = (
    REPO / "docs" / "screenshots"
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS")
    else REPO / "test-output" / "screenshots"
)


@dataclass
class Portal:
    server: LiveServer
    identity_file: Path
    partner: X25519Identity


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    root = tmp_path_factory.mktemp("paths")
    identity = X25519Identity.generate()
    identity_file = root / "identity.txt"
    identity_file.write_text(f"{identity}\n")
    identity_file.chmod(0o600)
    server = start_server(root / "server", str(identity.recipient), identity_file)
    try:
        yield Portal(server, identity_file, X25519Identity.generate())
    finally:
        server.stop()


@pytest.fixture(scope="module")
def witness(browser: Browser) -> Iterator[BrowserContext]:
    """What a witness has: no JavaScript, a phone-sized screen."""
    context = browser.new_context(java_script_enabled=False, viewport=VIEWPORTS["phone"])
    yield context
    context.close()


@pytest.fixture
def page(witness: BrowserContext) -> Iterator[Page]:
    page = witness.new_page()
    yield page
    page.close()


def click(page: Page, button: str) -> int:
    """Press a button of the page's main content and return the status of the page it loads."""
    with page.expect_navigation() as navigation:
        page.locator("main").get_by_role("button", name=button, exact=True).click()
    response = navigation.value
    assert response is not None
    return response.status


def shot(page: Page, name: str) -> None:
    if name.endswith("-phone"):
        # Readable at 360 px: nothing wider than the screen.
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= VIEWPORTS["phone"]["width"], (name, width)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def choice_label(question: Question, choice_id: str) -> str:
    return next(c.label["ko"] for c in question.choices if c.id == choice_id)


def fill_page_two(page: Page, questions: list[Question], answers: dict[str, str]) -> None:
    for question in questions:
        value = answers.get(question.id)
        if value is None or question.type in (QuestionKind.NOTICE, QuestionKind.FILES):
            continue
        if question.choices:
            for choice_id in value.split(","):
                page.get_by_label(choice_label(question, choice_id), exact=True).check()
        else:
            page.get_by_label(question.label["ko"], exact=True).fill(value)


def assert_page_two_holds(page: Page, questions: list[Question], answers: dict[str, str]) -> None:
    for question in questions:
        value = answers.get(question.id)
        if value is None or question.type in (QuestionKind.NOTICE, QuestionKind.FILES):
            continue
        if question.choices:
            for choice_id in value.split(","):
                assert page.get_by_label(choice_label(question, choice_id), exact=True).is_checked()
        else:
            kept = page.get_by_label(question.label["ko"], exact=True).input_value()
            assert kept.replace("\r\n", "\n") == value, (question.id, kept)


def opened(portal: Portal, tmp_path: Path, role: str) -> tuple[Path, dict[str, Any]]:
    """Open everything on the server; the folder and manifest of this path's submission."""
    out = tmp_path / "opened"
    run = review(
        open_args(portal.server.data_dir, portal.identity_file, out, tmp_path / "custody.jsonl")
    )
    assert run.status == 0, run.err
    for manifest_path in out.glob("*/testimony.json"):
        manifest = json.loads(manifest_path.read_text("utf-8"))
        fields = manifest["fields"]
        if fields.get("role") == role and "consent" in fields and manifest["attachments"]:
            return manifest_path.parent, manifest
    raise AssertionError(f"no submission of the {role} path was opened")


@pytest.mark.parametrize("role", ["suffered", "saw", "took_part"])
def test_korean_witness_walks_their_path_without_javascript(
    page: Page, portal: Portal, tmp_path: Path, role: str
) -> None:
    page.set_content("<title>off</title><script>document.title = 'on'</script>")
    assert page.title() == "off", "JavaScript must be disabled for the witness"
    answers = dict(KOREAN_PATHS[role])
    main_text = "did_and_saw" if role == "took_part" else "testimony"
    answers[main_text] += "\n밤마다 사람들이 끌려 나갔습니다."
    role_question = QUESTIONNAIRE.question("role")
    assert role_question is not None
    second = [q for q in asked_questions(answers) if q.page == 2 and q.id != "consent"]
    evidence = tmp_path / ("명단 사진.jpg" if role == "took_part" else "집결소 사진.jpg")
    evidence.write_bytes(b"\xff\xd8\xff\xe0" + hashlib.sha256(role.encode()).digest() * 5000)

    # Page 1: which describes the witness.
    page.goto(f"{portal.server.url}/ko/")
    with page.expect_navigation():
        page.get_by_role("link", name="증언하기").first.click()
    assert page.url == f"{portal.server.url}/ko/submit"
    page.get_by_label(choice_label(role_question, role), exact=True).check()
    if role == "took_part":
        shot(page, "ko-questionnaire-role-phone")
    assert click(page, "계속") == 200

    if role == "suffered":
        # The browser's own Back keeps the first page's answer too (Chromium
        # restores the form of a page it loads again); what was typed on the
        # page left is kept only by the page's Back button, which page 2 says.
        response = page.go_back()
        assert response is not None and response.status == 200
        assert page.get_by_label(choice_label(role_question, role), exact=True).is_checked()
        assert click(page, "계속") == 200

    # Page 2: the questions of this path; an insider reads the notice first.
    notice = page.locator("#q-insider_notice")
    assert notice.count() == (1 if role == "took_part" else 0)
    if role == "took_part":
        assert "기소로부터 귀하를 보호할 수도 없습니다" in notice.inner_text()
        box = notice.bounding_box()
        first_field = page.get_by_label(second[1].label["ko"], exact=True).bounding_box()
        assert box is not None and first_field is not None and box["y"] < first_field["y"]
    fill_page_two(page, second, answers)
    files = page.get_by_label(QUESTIONNAIRE.question("files").label["ko"], exact=True)  # type: ignore[union-attr]
    files.set_input_files(evidence)
    assert "mat2" in page.locator("main").inner_text()  # the warning about what files carry

    # The Back button, once: page 1 keeps its answer, page 2 keeps every answer.
    assert click(page, "뒤로") == 200
    assert page.get_by_label(choice_label(role_question, role), exact=True).is_checked()
    assert click(page, "계속") == 200
    assert_page_two_holds(page, second, answers)
    if role == "took_part":
        shot(page, "ko-questionnaire-insider-phone")
    if role == "saw":
        shot(page, "ko-questionnaire-filled-phone")

    # Sent without consent: nothing is saved, every answer is drawn again.
    if role == "saw":
        files.set_input_files(evidence)
        assert click(page, "안전하게 보내기") == 400
        summary = page.get_by_role("alert")
        assert "증언이 저장되지 않았습니다" in summary.inner_text()
        shot(page, "ko-questionnaire-error-phone")
        assert_page_two_holds(page, second, answers)
    consent = QUESTIONNAIRE.question("consent")
    assert consent is not None
    page.get_by_label(choice_label(consent, answers["consent"]), exact=True).check()
    files.set_input_files(evidence)  # files are chosen again after any redraw
    assert click(page, "안전하게 보내기") == 200
    assert page.locator("h1").inner_text() == "증언이 접수되었습니다"
    receipt = page.locator("#receipt").inner_text().strip()
    received_url = page.url
    assert "사진을 화면 캡처한 것을 보내십시오" in page.locator("main").inner_text()

    # The language menu never leaves the only page that shows the receipt.
    page.locator("header").get_by_role("link", name="English").click()
    assert page.url == received_url + "#language-en"
    warning = page.locator("#language-en")
    assert warning.is_visible() and "shown only on this page" in warning.inner_text()
    assert receipt.replace(" ", "") in warning.inner_text().replace(" ", "")
    assert page.locator("#receipt").inner_text().strip() == receipt
    if role == "took_part":
        shot(page, "ko-received-language-phone")

    # The reviewer opens it: every answer under its question, in the sealed words.
    folder, manifest = opened(portal, tmp_path, role)
    fields = {k: v.replace("\r\n", "\n") for k, v in manifest["fields"].items()}
    assert fields == answers
    sealed_ids = [q["id"] for q in manifest["questionnaire"]["questions"]]
    assert sealed_ids == [q.id for q in asked_questions(answers)]
    [attachment] = manifest["attachments"]
    assert attachment["sha256"] == hashlib.sha256(evidence.read_bytes()).hexdigest()
    shown = (folder / "testimony.html").read_text("utf-8").replace("\r\n", "\n")
    assert_each_answer_under_its_question(shown, answers)
    if role == "took_part":
        page.set_viewport_size(VIEWPORTS["desktop"])
        page.goto((folder / "testimony.html").as_uri())
        shot(page, "ko-questionnaire-opened-desktop")
        page.set_viewport_size(VIEWPORTS["phone"])
        followup_forwards_without_override(page, portal, tmp_path, receipt)


def followup_forwards_without_override(
    page: Page, portal: Portal, tmp_path: Path, receipt: str
) -> None:
    """The insider adds to their testimony with consent `yes`; `forward` sends it as it is."""
    page.goto(f"{portal.server.url}/ko/followup")
    page.get_by_label("접수번호").fill(receipt)
    assert click(page, "열기") == 200
    consent = page.locator("#q-consent")
    assert consent.get_by_label("지난번에 답한 것과 같습니다").count() == 1
    assert not any(box.is_checked() for box in consent.get_by_role("radio").all())
    page.get_by_label("무슨 일이 있었습니까?", exact=True).fill(
        "명단의 사본이 어디 있는지 덧붙입니다."
    )
    consent.get_by_label("예", exact=True).check()
    shot(page, "ko-followup-consent-phone")
    assert click(page, "안전하게 보내기") == 200
    assert page.locator("h1").inner_text() == "증언이 접수되었습니다"
    assert click(page, "대화로 돌아가기") == 200  # back to the conversation
    assert page.locator("h1").inner_text() == "답장과 후속 연락"

    out = tmp_path / "followup-opened"
    custody = tmp_path / "followup-custody.jsonl"
    run = review(open_args(portal.server.data_dir, portal.identity_file, out, custody))
    assert run.status == 0, run.err
    [sid] = [
        p.parent.name
        for p in out.glob("*/testimony.json")
        if "명단의 사본" in json.loads(p.read_text("utf-8"))["fields"].get("testimony", "")
    ]
    bundle = tmp_path / "bundle.tar.age"
    run = review(
        ["forward", sid, "--from", out, "--to", str(portal.partner.recipient), "--out", bundle,
         "--custody", custody, "--reviewer", "R"]
    )  # fmt: skip
    assert run.status == 0, run.err
    assert bundle.exists() and "--override-consent" not in run.err
