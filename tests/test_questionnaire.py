"""The questionnaire file: strict checking with the line of every mistake, and the answers.

`testimony-portal check` must name the line and the problem for each kind of
mistake an organisation can make in its own questionnaire, and the server
must refuse to start with such a file (one line, non-zero exit, no traceback).
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal.core import questionnaire as q
from portal.core.age import X25519Identity
from portal.core.questionnaire import (
    DEFAULT_QUESTIONNAIRE,
    Problem,
    QuestionnaireError,
    load_questionnaire,
    read_answers,
)
from portal.server.cli import main as portal_main
from portal.testing.live import free_port

LANGUAGES = ("en", "ko", "zh")

# A small valid questionnaire; each mistake below is one edit of it. The line
# numbers in MISTAKES refer to this text (line 1 is `id = ...`).
VALID = """\
id = "small"
version = 2

[[questions]]
id = "what"
type = "long_text"
label = { en = "What happened?", ko = "무슨 일이 있었습니까?", zh = "发生了什么事？" }

[[questions]]
id = "seen"
type = "single_choice"
label = { en = "Did you see it?", ko = "직접 보았습니까?", zh = "您亲眼看到了吗？" }

[[questions.choices]]
id = "yes"
label = { en = "Yes", ko = "예", zh = "是" }

[[questions.choices]]
id = "no"
label = { en = "No", ko = "아니요", zh = "否" }

[[questions]]
id = "consent"
type = "single_choice"
required = true
label = { en = "May we pass it on?", ko = "전달해도 됩니까?", zh = "可以转交吗？" }

[[questions.choices]]
id = "yes"
label = { en = "Yes", ko = "예", zh = "可以" }

[[questions.choices]]
id = "anonymous"
label = { en = "Without my name", ko = "이름 없이", zh = "不带名字" }

[[questions.choices]]
id = "ask"
label = { en = "Ask me", ko = "물어봐 주세요", zh = "先问我" }

[[questions.choices]]
id = "no"
label = { en = "No", ko = "아니요", zh = "不可以" }
"""


def edit(old: str, new: str, count: int = 1) -> str:
    assert old in VALID, old
    return VALID.replace(old, new, count)


LABEL_WHAT = (
    'label = { en = "What happened?", ko = "무슨 일이 있었습니까?", zh = "发生了什么事？" }'
)

# name -> (questionnaire text, the line named, a phrase of the problem)
MISTAKES = {
    "toml-syntax": (edit("version = 2", "version = "), 2, "not valid TOML"),
    "unterminated-string": (edit('id = "what"', 'id = "what'), 5, "not valid TOML"),
    "bad-id": (edit('id = "small"', 'id = "Small Form!"'), 1, "'id' must be"),
    "no-version": (edit("version = 2\n", ""), 1, "'version' must be given"),
    "unknown-setting": (edit("version = 2\n", "version = 2\ntitel = 'x'\n"), 3, "unknown setting"),
    "unknown-question-key": (
        edit('type = "long_text"', 'type = "long_text"\nrequird = true'),
        7,
        "unknown key 'requird'",
    ),
    "bad-question-id": (edit('id = "what"', 'id = "What?"'), 5, "must start with a lowercase"),
    "reserved-id": (edit('id = "what"', 'id = "csrf_token"'), 5, "is reserved"),
    "duplicate-question-id": (edit('id = "seen"', 'id = "what"'), 10, "used twice"),
    "unknown-type": (edit('type = "long_text"', 'type = "essay"'), 6, "'type' must be one of"),
    "required-not-bool": (
        edit('type = "long_text"', 'type = "long_text"\nrequired = "yes"'),
        7,
        "true or false",
    ),
    "label-missing-language": (
        edit(LABEL_WHAT, 'label = { en = "What happened?", ko = "무슨 일이 있었습니까?" }'),
        7,
        "no text in zh",
    ),
    "label-empty": (
        edit(LABEL_WHAT, 'label = { en = "", ko = "x", zh = "x" }'),
        7,
        "no text in en",
    ),
    "label-unserved-language": (
        edit(LABEL_WHAT, LABEL_WHAT[:-2] + ', ja = "何？" }'),
        7,
        "does not serve",
    ),
    "no-label": (edit(LABEL_WHAT + "\n", ""), 4, "must give the text in every language"),
    "help-not-table": (
        edit('type = "long_text"', 'type = "long_text"\nhelp = "Take your time"'),
        7,
        "'help'",
    ),
    "one-choice-only": (
        edit(
            '[[questions.choices]]\nid = "no"\nlabel = { en = "No", ko = "아니요", zh = "否" }\n',
            "",
        ),
        14,
        "at least two",
    ),
    "choices-on-text": (
        edit(LABEL_WHAT, LABEL_WHAT + '\nchoices = [{ id = "a", label = { en = "a" } }]'),
        8,
        "has no choices",
    ),
    "duplicate-choice": (
        edit(
            'id = "no"\nlabel = { en = "No", ko = "아니요", zh = "否" }',
            'id = "yes"\nlabel = { en = "No", ko = "아니요", zh = "否" }',
        ),
        19,
        "used twice",
    ),  # fmt: skip
    "bad-choice-id": (edit('id = "yes"', 'id = "Yes!"'), 15, "choice 1: 'id' must be"),
    "two-files-questions": (
        VALID + '\n[[questions]]\nid = "f1"\ntype = "files"\nlabel = { en = "a", ko = "a", '
        'zh = "a" }\n\n[[questions]]\nid = "f2"\ntype = "files"\nlabel = { en = "b", ko = "b", '
        'zh = "b" }\n',
        # The second files question's id line.
        len(VALID.splitlines()) + 8,
        "only one question may be of type files",
    ),
    "no-consent": (edit('id = "consent"', 'id = "agree"'), 1, "no consent question"),
    "consent-not-required": (edit("required = true\n", ""), 23, "required = true"),
    "consent-wrong-type": (
        edit('id = "consent"\ntype = "single_choice"', 'id = "consent"\ntype = "multiple_choice"'),
        23,
        "must be of type single_choice",
    ),
    "consent-wrong-choices": (edit('id = "ask"', 'id = "later"'), 23, "exactly yes, anonymous"),
    "no-questions": ('id = "x"\nversion = "1"\n', 1, "no questions"),
    "page-not-a-number": (
        edit('id = "seen"', 'id = "seen"\npage = "two"'),
        11,
        "'page' must be a whole number",
    ),
    "page-skipped": (edit('id = "seen"', 'id = "seen"\npage = 3'), 11, "does not follow page 1"),
    "condition-on-same-page": (
        edit('id = "consent"', 'id = "consent"\nshow_if = { seen = ["yes"] }'),
        24,
        "same page",
    ),
    "condition-on-later-question": (
        edit('id = "what"', 'id = "what"\nshow_if = { seen = ["yes"] }'),
        6,
        "not a choice question earlier",
    ),
    "condition-on-unknown-choice": (
        edit(
            'id = "consent"',
            'id = "later"\npage = 2\ntype = "long_text"\nhide_if = { seen = ["maybe"] }\n'
            'label = { en = "a", ko = "가", zh = "甲" }\n\n[[questions]]\nid = "consent"',
        ),
        26,
        "has no choice 'maybe'",
    ),  # fmt: skip
    "condition-not-a-table": (
        edit('id = "seen"', 'id = "seen"\nshow_if = "what"'),
        11,
        "must name one earlier question",
    ),
    "show-and-hide": (
        edit('id = "seen"', 'id = "seen"\nshow_if = { what = ["a"] }\nhide_if = { what = ["b"] }'),
        11,
        "not both",
    ),
    "notice-without-text": (
        edit('id = "what"\ntype = "long_text"', 'id = "what"\ntype = "notice"'),
        4,
        "'help' must give the text",
    ),
    "notice-required": (
        edit('id = "what"\ntype = "long_text"', 'id = "what"\ntype = "notice"\nrequired = true'),
        7,
        "a notice has no answer",
    ),
    "files-not-on-last-page": (
        edit('id = "what"\ntype = "long_text"', 'id = "what"\ntype = "files"').replace(
            'id = "seen"', 'id = "seen"\npage = 2'
        ),
        5,
        "must be on the last page",
    ),
    "consent-not-on-last-page": (
        edit(
            '[[questions]]\nid = "consent"',
            '[[questions]]\nid = "consent"',
        ).replace('id = "ask"', 'id = "ask"', 1)
        + '\n[[questions]]\nid = "after"\npage = 2\ntype = "long_text"\n'
        'label = { en = "a", ko = "가", zh = "甲" }\n',
        23,
        "must be asked of everyone on the last page",
    ),
    "testimony-not-long-text": (
        edit('id = "what"\ntype = "long_text"', 'id = "testimony"\ntype = "short_text"'),
        5,
        "'testimony' must be of type long_text",
    ),
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "questionnaire.toml"
    path.write_text(text, encoding="utf-8")
    return path


def run_check(tmp_path: Path, questionnaire: Path) -> tuple[int, str]:
    identity = X25519Identity.generate()
    (tmp_path / "keys").mkdir(exist_ok=True)
    (tmp_path / "keys" / "recipients.txt").write_text(f"{identity.recipient}\n")
    out, err = io.StringIO(), io.StringIO()
    env = {
        "PORTAL_DATA_DIR": str(tmp_path / "data"),
        "PORTAL_RECIPIENTS": str(tmp_path / "keys" / "recipients.txt"),
        "PORTAL_MIN_FREE_MB": "0",
        "PORTAL_MAX_UPLOAD_MB": "1",
        "PORTAL_SECRET_KEY": "x",
        "PORTAL_QUESTIONNAIRE": str(questionnaire),
    }
    status = portal_main(["check"], env=env, stdout=out, stderr=err)
    return status, out.getvalue() + err.getvalue()


def test_the_default_questionnaire_is_valid_and_asks_for_consent_last() -> None:
    loaded = load_questionnaire(DEFAULT_QUESTIONNAIRE, LANGUAGES)
    ids = [question.id for question in loaded.questions]
    # Page 1 asks which describes the witness; consent is asked last, of everyone.
    assert ids[0] == "role" and ids[-1] == "consent"
    assert loaded.last_page == 2 and loaded.questions[-1].condition is None
    # Every question is optional except consent; none is asked as required identity.
    assert [question.id for question in loaded.questions if question.required] == ["consent"]
    consent = loaded.question("consent")
    assert consent is not None and [c.id for c in consent.choices] == list(q.Consent)
    for question in loaded.questions:
        assert set(question.label) == set(LANGUAGES)
        assert all(set(choice.label) == set(LANGUAGES) for choice in question.choices)
    assert {question.type for question in loaded.questions} >= {
        q.QuestionKind.LONG_TEXT,
        q.QuestionKind.SHORT_TEXT,
        q.QuestionKind.APPROXIMATE_DATE,
        q.QuestionKind.MULTIPLE_CHOICE,
        q.QuestionKind.FILES,
        q.QuestionKind.SINGLE_CHOICE,
    }


def test_check_accepts_the_valid_example(tmp_path: Path) -> None:
    status, output = run_check(tmp_path, write(tmp_path, VALID))
    assert status == 0, output
    assert "[ok] questionnaire" in output and "'small' version '2'" in output


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_check_names_the_line_of_each_kind_of_mistake(tmp_path: Path, name: str) -> None:
    text, line, phrase = MISTAKES[name]
    path = write(tmp_path, text)
    with pytest.raises(QuestionnaireError) as raised:
        load_questionnaire(path, LANGUAGES)
    problems = raised.value.problems
    assert any(n == line and phrase in p for n, p in problems), problems
    status, output = run_check(tmp_path, path)
    assert status != 0
    problem_lines = [x for x in output.splitlines() if x.startswith("[PROBLEM] questionnaire")]
    assert any(f"line {line}: " in x and phrase in x for x in problem_lines), output
    assert "Traceback" not in output


def test_check_lists_every_mistake_not_only_the_first(tmp_path: Path) -> None:
    text = VALID.replace('type = "long_text"', 'type = "essay"').replace(
        'id = "ask"', 'id = "later"'
    )
    status, output = run_check(tmp_path, write(tmp_path, text))
    problems = [x for x in output.splitlines() if x.startswith("[PROBLEM] questionnaire")]
    assert status != 0 and len(problems) == 2, output
    assert "line 6: " in problems[0] and "line 23: " in problems[1]


def test_a_file_that_is_not_utf8_or_missing_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(VALID.replace("무슨", "§").encode("utf-8").replace("§".encode(), b"\xe9", 1))
    with pytest.raises(QuestionnaireError, match=r"line 7: the file is not UTF-8"):
        load_questionnaire(path, LANGUAGES)
    with pytest.raises(QuestionnaireError, match=r"line 1: cannot read the file"):
        load_questionnaire(tmp_path / "missing.toml", LANGUAGES)


def test_the_server_refuses_to_start_with_an_invalid_questionnaire(tmp_path: Path) -> None:
    """Real `testimony-portal serve`: one clear line, non-zero exit, nothing listening."""
    text, line, phrase = MISTAKES["consent-not-required"]
    path = write(tmp_path, text)
    identity = X25519Identity.generate()
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "recipients.txt").write_text(f"{identity.recipient}\n")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PORTAL_DATA_DIR": str(tmp_path / "data"),
        "PORTAL_RECIPIENTS": str(tmp_path / "keys" / "recipients.txt"),
        "PORTAL_MIN_FREE_MB": "0",
        "PORTAL_QUESTIONNAIRE": str(path),
    }
    port = str(free_port())
    result = subprocess.run(
        [sys.executable, "-m", "portal.server.cli", "serve", "--port", port],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{path} line {line}: " in lines[0] and phrase in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_the_app_factory_refuses_an_invalid_questionnaire(tmp_path: Path, config) -> None:
    from dataclasses import replace

    from portal.server.config import ConfigError
    from portal.server.web import create_app

    text, line, _phrase = MISTAKES["unknown-type"]
    bad = replace(config, questionnaire_file=write(tmp_path, text))
    with pytest.raises(ConfigError, match=rf"PORTAL_QUESTIONNAIRE: questionnaire .* line {line}: "):
        create_app(bad)


# ------------------------------------------------------------------ answers


def answers_for(form: dict[str, list[str]], limit: int = 100) -> q.Answers:
    loaded = load_questionnaire(DEFAULT_QUESTIONNAIRE, LANGUAGES)
    return read_answers(loaded, lambda name: form.get(name, []), long_text_limit=limit)


def test_consent_is_required_and_has_no_default() -> None:
    assert answers_for({}).problems == {"consent": Problem.REQUIRED}
    assert answers_for({"consent": [""]}).problems == {"consent": Problem.REQUIRED}
    assert answers_for({"consent": ["ask"]}).values == {"consent": "ask"}


def test_an_answer_that_was_never_offered_is_refused() -> None:
    assert answers_for({"consent": ["maybe"]}).problems == {"consent": Problem.BAD_CHOICE}
    assert answers_for({"consent": ["yes", "no"]}).problems == {"consent": Problem.BAD_CHOICE}
    mixed = answers_for({"role": ["other"], "consent": ["yes"], "how_known": ["saw", "rumour"]})
    assert mixed.problems == {"how_known": Problem.BAD_CHOICE}


def test_multiple_choices_are_stored_in_questionnaire_order() -> None:
    form = {"role": ["saw"], "consent": ["no"], "how_known": ["heard", "saw", "heard"]}
    answers = answers_for(form)
    assert answers.problems == {}
    assert answers.values["how_known"] == "saw,heard"


def test_text_answers_are_bounded_and_line_breaks_stored_as_lf() -> None:
    answers = answers_for({"consent": ["yes"], "where": ["x" * 2001], "responsible": ["a\r\nb"]})
    assert answers.problems == {"where": Problem.TOO_LONG}
    assert answers.values["responsible"] == "a\nb"
    assert answers_for({"consent": ["yes"], "anything_else": ["y" * 101]}, limit=100).problems == {
        "anything_else": Problem.TOO_LONG
    }


def test_a_file_part_under_a_question_name_is_not_an_answer() -> None:
    answers = answers_for({"consent": ["yes"], "where": [object()]})  # type: ignore[list-item]
    assert answers.problems == {} and "where" not in answers.values


@pytest.mark.parametrize(
    ("text", "ok"),
    [("2019", True), ("2019-05", True), ("2019-02-28", True), ("2019-02-30", False),
     ("2019-13", False), ("19-05-01", False), ("spring 2019", False), ("1850", False)],
)  # fmt: skip
def test_an_exact_date_is_a_year_a_month_or_a_day(text: str, ok: bool) -> None:
    assert q.is_partial_date(text) is ok


def test_a_date_question_refuses_what_is_not_a_date(tmp_path: Path) -> None:
    text = VALID.replace('type = "long_text"', 'type = "date"')
    loaded = load_questionnaire(write(tmp_path, text), LANGUAGES)
    form = {"what": ["last year"], "consent": ["yes"]}
    answers = read_answers(loaded, lambda n: form.get(n, []), long_text_limit=100)
    assert answers.problems == {"what": Problem.BAD_DATE}
    form = {"what": [" 2019-05 "], "consent": ["yes"]}
    answers = read_answers(loaded, lambda n: form.get(n, []), long_text_limit=100)
    assert answers.problems == {} and answers.values["what"] == "2019-05"


def test_sealed_texts_are_the_witness_language_with_english_beside() -> None:
    loaded = load_questionnaire(DEFAULT_QUESTIONNAIRE, LANGUAGES)
    sealed = loaded.sealed("ko")
    assert sealed.id == "grave-violations" and sealed.language == "ko"
    assert sealed.sha256 == hashlib.sha256(DEFAULT_QUESTIONNAIRE.read_bytes()).hexdigest()
    consent = sealed.questions[-1]
    assert consent.label == "귀하의 증언을 국제 법원과 유엔 기구에 전달해도 되겠습니까?"
    assert consent.label_en.startswith("May we pass your testimony on")
    assert [c.id for c in consent.choices] == ["yes", "anonymous", "ask", "no"]
    assert consent.choices[2].label == "먼저 저에게 물어봐 주십시오"
    confirm = next(x for x in sealed.questions if x.id == "confirm")
    assert confirm.identifying is True


# ------------------------------------------------------------------ paths


def test_each_path_asks_only_its_questions_and_drops_answers_to_the_others() -> None:
    form = {
        "role": ["took_part"],
        "orders": ["대대장에게서 받았습니다"],
        "testimony": ["carried from another path"],
        "when": ["2019"],
        "consent": ["yes"],
    }
    insider = answers_for(form)
    asked = [question.id for question in insider.shown]
    assert asked[:3] == ["role", "insider_notice", "organisation"]
    assert {"orders", "records", "investigators", "victims"} <= set(asked)
    assert "testimony" not in asked and "when" not in asked
    assert insider.values == {
        "role": "took_part",
        "orders": "대대장에게서 받았습니다",
        "consent": "yes",
    }
    victim = answers_for({**form, "role": ["suffered"]})
    assert "orders" not in victim.values and victim.values["when"] == "2019"
    assert "insider_notice" not in [question.id for question in victim.shown]
    # No answer to the first page asks the questions every path shares.
    nobody = answers_for({"consent": ["ask"]})
    assert "testimony" in [question.id for question in nobody.shown]
    assert "orders" not in [question.id for question in nobody.shown]


def test_up_to_page_reads_only_the_pages_so_far() -> None:
    loaded = load_questionnaire(DEFAULT_QUESTIONNAIRE, LANGUAGES)
    first = read_answers(
        loaded, lambda n: {"role": ["saw"]}.get(n, []), long_text_limit=9, up_to_page=1
    )
    assert [question.id for question in first.shown] == ["role"] and first.problems == {}


def test_only_the_questions_asked_are_sealed_with_the_notice_an_insider_read() -> None:
    loaded = load_questionnaire(DEFAULT_QUESTIONNAIRE, LANGUAGES)
    insider = answers_for({"role": ["took_part"], "consent": ["yes"]})
    sealed = loaded.sealed("ko", insider.shown)
    ids = [item.id for item in sealed.questions]
    assert ids == [question.id for question in insider.shown]
    notice = sealed.questions[1]
    assert notice.type == "notice" and "기소" in notice.help
    assert (
        "prosecut"
        in next(question for question in loaded.questions if question.id == "insider_notice").help[
            "en"
        ]
    )


def test_a_followup_asks_consent_again_with_the_same_as_before() -> None:
    loaded = load_questionnaire(DEFAULT_QUESTIONNAIRE, LANGUAGES)
    followup = loaded.followup()
    assert [question.id for question in followup.questions] == ["testimony", "files", "consent"]
    consent = followup.question("consent")
    assert consent is not None and consent.required
    assert [c.id for c in consent.choices] == ["same", *q.Consent]
    answers = read_answers(followup, lambda n: [], long_text_limit=9)
    assert answers.problems == {"consent": Problem.REQUIRED}
    same = read_answers(followup, lambda n: {"consent": ["same"]}.get(n, []), long_text_limit=9)
    assert same.values == {"consent": "same"}
    # The main form never offers it.
    assert answers_for({"consent": ["same"]}).problems == {"consent": Problem.BAD_CHOICE}


# ------------------------------------------------------------------ fuzzing


_PIECES = [
    "[[questions]]", "[[questions.choices]]", "id = ", '"', "=", "{", "}", "[", "]", "\n",
    "label", ".en", "true", "42", 'type = "files"', "# x", "\\", "é", "\0",
]  # fmt: skip


@settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    cut=st.integers(0, len(VALID)),
    length=st.integers(0, 40),
    insert=st.lists(st.sampled_from(_PIECES), max_size=4).map("".join),
)
def test_any_damaged_questionnaire_is_refused_with_a_line_never_a_crash(
    tmp_path: Path, cut: int, length: int, insert: str
) -> None:
    text = VALID[:cut] + insert + VALID[cut + length :]
    path = tmp_path / "fuzzed.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_questionnaire(path, LANGUAGES)
    except QuestionnaireError as exc:
        last = text.count("\n") + 1
        assert exc.problems and all(1 <= line <= last for line, _ in exc.problems), exc.problems
        assert str(exc).startswith(f"questionnaire {path} line ")
