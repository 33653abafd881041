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

from portal.core.age import X25519Identity
from portal.core.questionnaire import DEFAULT_QUESTIONNAIRE
from portal.testing.live import LiveServer, open_submission, post_form
from tests.questionnaire_support import (
    KOREAN_ANSWERS,
    QUESTIONNAIRE,
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


def test_the_form_asks_every_question_with_consent_last_and_nothing_chosen(client) -> None:
    page = client.get("/ko/submit").get_data(as_text=True)
    for question in QUESTIONNAIRE.questions:
        assert html.escape(question.label["ko"], quote=False) in page, question.id
        assert question.label["en"] not in page
    parsed = controls(page)
    named = [
        c for c in parsed.controls if c.get("name") not in ("csrf_token", "form_id", "website")
    ]
    names = [c.get("name") or c["tag"] for c in named]
    # Consent comes after every other question and right before the send button.
    assert names[-5:] == ["consent", "consent", "consent", "consent", "button"]
    assert names[0] == "testimony" and "attachments" in names
    assert not any("checked" in c for c in parsed.controls), "an answer was chosen in advance"
    # Choice questions are fieldsets with a legend; every field has a label.
    assert parsed.fieldsets == ["q-how_known", "q-consent"] and parsed.legends == 2
    for control in named[:-1]:
        assert f'<label for="{control["id"]}">' in page, control


def test_the_files_question_states_the_limits(client, config) -> None:
    page = client.get("/submit").get_data(as_text=True)
    limits = f"up to {config.max_upload_mb} MB in all, at most {config.max_files} files."
    assert limits in page
    assert '<input type="file" name="attachments" id="q-files" multiple' in page


def test_every_language_shows_its_own_question_texts(client) -> None:
    for lang, path in (("en", "/submit"), ("ko", "/ko/submit"), ("zh", "/zh/submit")):
        page = client.get(path).get_data(as_text=True)
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
    assert f'<a href="#q-consent-yes">{consent_label} — 이 질문에 답해 주세요.</a>' in page
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
    assert sealed["id"] == "grave-violations" and sealed["version"] == "1"
    assert sealed["sha256"] == hashlib.sha256(DEFAULT_QUESTIONNAIRE.read_bytes()).hexdigest()
    assert sealed["language"] == "ko"
    assert [q["label"] for q in sealed["questions"]] == [
        q.label["ko"] for q in QUESTIONNAIRE.questions
    ]
    assert [q["label_en"] for q in sealed["questions"]] == [
        q.label["en"] for q in QUESTIONNAIRE.questions
    ]


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
