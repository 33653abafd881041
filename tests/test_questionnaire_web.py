"""The questionnaire on the witness's form: drawn server-side, checked, kept on a mistake, sealed.

The last test runs the whole way on a real server: a witness answers every
question of the default questionnaire in Korean, the reviewer opens the
submission and finds each answer under its question.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from portal.core.age import X25519Identity
from portal.core.questionnaire import DEFAULT_QUESTIONNAIRE
from portal.testing.live import LiveServer, hidden_fields, open_submission, post_form
from tests.questionnaire_support import (
    KOREAN_ANSWERS,
    KOREAN_PATHS,
    QUESTIONNAIRE,
    asked_questions,
    assert_each_answer_under_its_question,
)
from tests.review_support import open_args, review


class Inputs(HTMLParser):
    """The form controls of a page, in document order, and where each group starts."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict[str, Any]] = []
        self.fieldsets: list[str] = []
        self.legends = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("input", "textarea", "button"):
            self.controls.append({"tag": tag, **a})
        if tag == "fieldset":
            self.fieldsets.append(a.get("id") or "")
        if tag == "legend":
            self.legends += 1


def controls(page: str) -> Inputs:
    parser = Inputs()
    parser.feed(page)
    return parser


def _page_two(client, role: str, lang: str = "ko", **answers: str):
    """Continue from the first page having chosen `role`: the second page, as drawn."""
    prefix = "" if lang == "en" else f"/{lang}"
    first = client.get(f"{prefix}/submit").get_data(as_text=True)
    data = {"csrf_token": hidden_fields(first)["csrf_token"], "page": "1", "go": "next"}
    return client.post(f"{prefix}/submit/page", data={**data, "role": role, **answers})


def test_the_first_page_asks_only_which_describes_the_witness(client) -> None:
    page = client.get("/ko/submit").get_data(as_text=True)
    role = QUESTIONNAIRE.question("role")
    assert role is not None and html.escape(role.label["ko"], quote=False) in page
    parsed = controls(page)
    named = [
        c.get("name") for c in parsed.controls if c["tag"] != "input" or c.get("type") != "hidden"
    ]
    assert named == ["role", "role", "role", "role", "go"], named
    assert not any("checked" in c for c in parsed.controls), "an answer was chosen in advance"
    assert 'action="/ko/submit/page"' in page and "multipart" not in page
    assert 'name="consent"' not in page and 'type="file"' not in page


@pytest.mark.parametrize("role", ["suffered", "saw", "took_part", "other"])
def test_each_path_asks_its_questions_with_consent_last_and_nothing_chosen(
    client, role: str
) -> None:
    response = _page_two(client, role)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    asked = [q for q in asked_questions({"role": role}) if q.page == 2]
    for question in QUESTIONNAIRE.questions:
        shown = html.escape(question.label["ko"], quote=False) in page
        assert shown == (question in asked), (role, question.id)
        assert question.label["en"] not in page
    parsed = controls(page)
    named = [
        c for c in parsed.controls
        if c.get("name") not in ("csrf_token", "form_id", "website", "page", "role")
        and c.get("form") != "testimony-form"
    ]  # fmt: skip
    names = [c.get("name") or c["tag"] for c in named]
    # Consent comes after every other question, then the send button, then Back.
    assert names[-6:] == ["consent", "consent", "consent", "consent", "button", "go"], names
    assert "attachments" in names
    assert not any("checked" in c for c in parsed.controls), "an answer was chosen in advance"
    # The first page's answer travels in a hidden field; the form stores on this page.
    assert hidden_fields(page)["role"] == role
    assert 'action="/ko/submit"' in page and 'enctype="multipart/form-data"' in page
    for control in named[:-2]:
        assert f'<label for="{control["id"]}">' in page, control
    # Every path is warned about what files carry before sending.
    assert "위치" in page and "mat2" in page


def test_an_insider_reads_what_may_happen_before_the_first_question(client) -> None:
    notice = QUESTIONNAIRE.question("insider_notice")
    assert notice is not None
    for lang in ("en", "ko", "zh"):
        page = _page_two(client, "took_part", lang=lang).get_data(as_text=True)
        organisation = QUESTIONNAIRE.question("organisation")
        assert organisation is not None
        first_question = html.escape(organisation.label[lang], quote=False)
        start = page.index(html.escape(notice.label[lang], quote=False))
        assert start < page.index(first_question)
        for paragraph in notice.help[lang].split("\n\n"):
            assert html.escape(paragraph.strip(), quote=False) in page, (lang, paragraph[:40])
    english = notice.help["en"]
    for words in ("courts may use", "cannot promise", "prosecut", "anonymous", "never connected"):
        assert words in english.lower().replace("Courts", "courts"), words


def test_back_and_continue_keep_every_answer_and_store_nothing(client, config) -> None:
    from portal.server.store import SubmissionStore

    answers = {k: v for k, v in KOREAN_PATHS["took_part"].items() if k not in ("role", "consent")}
    answers["orders"] = "첫째 줄\r\n둘째 줄"
    second = _page_two(client, "took_part").get_data(as_text=True)
    fields = {**hidden_fields(second), **answers, "go": "back", "consent": "yes"}
    back = client.post("/ko/submit/page", data=fields)
    assert back.status_code == 200
    first = back.get_data(as_text=True)
    assert 'value="took_part" checked' in first
    carried = hidden_fields(first)
    assert carried["orders"] == "첫째 줄\n둘째 줄" and carried["consent"] == "yes"
    assert carried["investigators"] == "maybe"
    again = client.post("/ko/submit/page", data={**carried, "role": "took_part", "go": "next"})
    page = again.get_data(as_text=True)
    for name, value in answers.items():
        if name != "investigators":
            assert html.escape(value.replace("\r\n", "\n"), quote=False) in page, name
    checked = {c["id"] for c in controls(page).controls if "checked" in c}
    assert checked == {"q-investigators-maybe", "q-consent-yes"}
    assert SubmissionStore(config.data_dir).ids() == []


def test_a_changed_path_sends_only_the_answers_it_asked(client, config, identity) -> None:
    from portal.server.store import SubmissionStore

    # An insider's answers carried along, then the witness chose "I saw it".
    fields = {**KOREAN_ANSWERS, "orders": "carried", "records": "carried"}
    assert post_form(client, fields, path="/ko/submit").status_code == 200
    [sid] = SubmissionStore(config.data_dir).ids()
    manifest, _files = open_submission(SubmissionStore(config.data_dir).path(sid), [identity])
    assert manifest["fields"] == KOREAN_ANSWERS
    sealed_ids = [q["id"] for q in manifest["questionnaire"]["questions"]]
    assert sealed_ids == [q.id for q in asked_questions(KOREAN_ANSWERS)]


def test_continue_refuses_a_bad_answer_on_the_page_left(client) -> None:
    response = _page_two(client, "everyone")
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert (
        "보기 중에서 하나를 고르십시오" in page
        and 'name="role"' in page
        and "증언이 저장되지" not in page
    )


def test_a_language_button_redraws_the_page_with_its_answers(client) -> None:
    second = _page_two(client, "took_part").get_data(as_text=True)
    assert 'form="testimony-form" formaction="/zh/submit/page"' in second
    fields = {**hidden_fields(second), "orders": "连长下达的命令", "go": "stay"}
    page = client.post("/zh/submit/page", data=fields).get_data(as_text=True)
    notice = QUESTIONNAIRE.question("insider_notice")
    assert notice is not None and html.escape(notice.label["zh"], quote=False) in page
    assert "连长下达的命令" in page


def test_the_files_question_states_the_limits(client, config) -> None:
    page = _page_two(client, "saw", lang="en").get_data(as_text=True)
    limits = f"up to {config.max_upload_mb} MB in all, at most {config.max_files} files."
    assert limits in page
    assert '<input type="file" name="attachments" id="q-files" multiple' in page


def test_every_language_shows_its_own_question_texts(client) -> None:
    for lang in ("en", "ko", "zh"):
        first = client.get("/submit" if lang == "en" else f"/{lang}/submit").get_data(as_text=True)
        assert html.escape(QUESTIONNAIRE.question("role").label[lang], quote=False) in first  # type: ignore[union-attr]
        page = _page_two(client, "saw", lang=lang).get_data(as_text=True)
        consent = QUESTIONNAIRE.question("consent")
        assert consent is not None
        assert html.escape(consent.label[lang], quote=False) in page
        for choice in consent.choices:
            assert html.escape(choice.label[lang], quote=False) in page


def test_without_consent_nothing_is_saved_and_every_answer_is_kept(client, config) -> None:
    answers = {k: v for k, v in KOREAN_ANSWERS.items() if k != "consent"}
    answers["how_known"] = ["saw", "heard"]  # type: ignore[assignment]
    response = post_form(client, {**answers, "consent": ""}, path="/ko/submit")
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "증언이 저장되지 않았습니다" in page
    # The error summary links to the first answer of the consent question.
    consent_label = html.escape(QUESTIONNAIRE.question("consent").label["ko"], quote=False)  # type: ignore[union-attr]
    assert f'<a href="#q-consent-yes">{consent_label} — 이 질문에 답하십시오.</a>' in page
    assert (
        'id="q-consent-error"' in page
        and 'aria-describedby="q-consent-hint q-consent-error"' in page
    )
    for name, value in answers.items():
        if isinstance(value, str):
            assert html.escape(value, quote=False) in page, name
    checked = {c["id"] for c in controls(page).controls if "checked" in c}
    assert checked == {"q-how_known-saw", "q-how_known-heard"}
    from portal.server.store import SubmissionStore

    assert SubmissionStore(config.data_dir).ids() == []


def test_a_hostile_answer_is_refused_in_the_witness_language(client) -> None:
    response = post_form(client, {"testimony": "x", "consent": "everyone"}, path="/zh/submit")
    assert response.status_code == 400
    assert "请从列出的答案中选择。" in response.get_data(as_text=True)
    # A file sent under a question's name is not an answer (and never a 500).
    response = post_form(client, {"testimony": "x", "where": (io.BytesIO(b"file"), "where.txt")})
    assert response.status_code == 200


def test_answers_other_than_the_testimony_are_enough(client, config, identity) -> None:
    response = post_form(client, {"where": "Hoeryong", "consent": "ask"})
    assert response.status_code == 200, response.get_data(as_text=True)
    only_choices = post_form(client, {"how_known": "saw", "consent": "ask"})
    assert only_choices.status_code == 400


def test_the_manifest_seals_the_questions_seen_and_the_answers(client, config, identity) -> None:
    from portal.server.store import SubmissionStore

    response = post_form(client, KOREAN_ANSWERS, path="/ko/submit")
    assert response.status_code == 200, response.get_data(as_text=True)
    store = SubmissionStore(config.data_dir)
    [sid] = store.ids()
    manifest, _files = open_submission(store.path(sid), [identity])
    assert manifest["format"] == "testimony-portal/submission/3"  # with a reply key
    assert manifest["fields"] == KOREAN_ANSWERS
    sealed = manifest["questionnaire"]
    assert sealed["id"] == "grave-violations" and sealed["version"] == "2"
    assert sealed["sha256"] == hashlib.sha256(DEFAULT_QUESTIONNAIRE.read_bytes()).hexdigest()
    assert sealed["language"] == "ko"
    asked = asked_questions(KOREAN_ANSWERS)
    assert [q["label"] for q in sealed["questions"]] == [q.label["ko"] for q in asked]
    assert [q["label_en"] for q in sealed["questions"]] == [q.label["en"] for q in asked]


def test_korean_questionnaire_on_a_real_server_opens_with_each_answer_under_its_question(
    live_server: LiveServer, identity: X25519Identity, tmp_path: Path
) -> None:
    fields = {k: v for k, v in KOREAN_ANSWERS.items() if k != "testimony"}
    response = live_server.client().submit(
        KOREAN_ANSWERS["testimony"],
        [("집결소 사진.jpg", b"\xff\xd8\xff" + bytes(5000), "image/jpeg")],
        lang="ko",
        extra_fields=fields,
    )
    assert response.status == 200, response.body[:2000]
    out = tmp_path / "opened"
    run = review(
        open_args(live_server.data_dir, live_server.identity_file, out, tmp_path / "c.jsonl")
    )
    assert run.status == 0, run.err
    [folder] = [p for p in out.iterdir() if p.is_dir()]
    manifest = json.loads((folder / "testimony.json").read_text("utf-8"))
    assert manifest["fields"] == KOREAN_ANSWERS
    page = (folder / "testimony.html").read_text("utf-8")
    assert_each_answer_under_its_question(page, KOREAN_ANSWERS)


def test_the_page_route_needs_the_form_session_and_spends_no_rate_budget(make_app, config) -> None:
    from portal.server.store import SubmissionStore

    client = make_app(rate_burst=1, rate_per_minute=1).test_client()
    refused = client.post("/ko/submit/page", data={"page": "1", "go": "next", "role": "saw"})
    assert refused.status_code == 400  # no CSRF session: nothing drawn
    for _ in range(5):  # pages drawn back and forth cost no token
        page = _page_two(client, "saw").get_data(as_text=True)
        assert 'name="consent"' in page
    assert post_form(client, dict(KOREAN_ANSWERS), path="/ko/submit").status_code == 200
    assert len(SubmissionStore(config.data_dir).ids()) == 1
    # The one token is spent now: the next real submission is refused.
    assert post_form(client, dict(KOREAN_ANSWERS), path="/ko/submit").status_code == 429


def test_the_form_and_the_received_page_warn_about_what_files_carry(client) -> None:
    from flask_babel import force_locale
    from flask_babel import gettext as _

    title = "Before you send files: hidden information in them"
    for lang in ("en", "ko", "zh"):
        prefix = "" if lang == "en" else f"/{lang}"
        with client.application.test_request_context(), force_locale(lang):
            words = html.escape(_(title), quote=False)
        assert lang == "en" or words != title
        form = _page_two(client, "took_part", lang=lang).get_data(as_text=True)
        received = post_form(client, {"testimony": "x"}, path=f"{prefix}/submit")
        assert received.status_code == 200
        for page in (form, received.get_data(as_text=True)):
            assert words in page and "mat2" in page and "ExifTool" in page, lang
