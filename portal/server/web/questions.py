"""The questionnaire on the form: what each page draws, and the answers a POST carries.

The questions come from `portal.core.questionnaire`; this module only puts them
in the witness's language, keeps what the witness sent when a page is drawn
again, and words each problem for them.

A questionnaire of several pages works without JavaScript and without the
server keeping anything between pages: every answer given so far travels in
the form itself, as hidden fields, from page to page and back. Nothing of an
unfinished answer is stored, logged or put in the session cookie; it exists
only in the witness's browser and, for the moment a page is drawn, in the
server's memory. Files are chosen on the last page only: a file cannot travel
in a hidden field.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from flask import Flask, current_app, request
from flask_babel import gettext as _

from portal.core import questionnaire as q
from portal.core.questionnaire import Answers, Problem, Question, QuestionKind, Questionnaire

_EXTENSION = "questionnaire"


@dataclass(frozen=True)
class ChoiceView:
    id: str
    label: str
    html_id: str
    checked: bool


@dataclass(frozen=True)
class QuestionView:
    """One question as the template draws it, in the witness's language."""

    id: str
    type: QuestionKind
    name: str
    html_id: str
    label: str
    help: str
    required: bool
    value: str = ""
    choices: tuple[ChoiceView, ...] = ()
    errors: tuple[str, ...] = ()
    max_chars: int = 0

    @property
    def grouped(self) -> bool:
        """Radio buttons and check boxes sit in a fieldset with a legend."""
        return bool(self.choices)

    @property
    def paragraphs(self) -> list[str]:
        """A notice's text, paragraph by paragraph (blank lines separate them)."""
        return [part.strip() for part in self.help.split("\n\n") if part.strip()]

    @property
    def target(self) -> str:
        """Where the error summary links: the field, or the first box of a group."""
        return self.choices[0].html_id if self.choices else self.html_id

    @property
    def described_by(self) -> str:
        ids = (
            [f"{self.html_id}-hint"]
            if self.help or self.type in (QuestionKind.FILES, QuestionKind.DATE)
            else []
        )
        if self.errors:
            ids.append(f"{self.html_id}-error")
        return " ".join(ids)


@dataclass
class FormQuestions:
    """One page of the form: its questions (consent kept apart for the end) and what it carries."""

    questions: list[QuestionView] = field(default_factory=list)
    consent: QuestionView | None = None
    page: int = 1
    last_page: int = 1
    # Answers given on the other pages, sent again as hidden fields.
    carried: list[tuple[str, str]] = field(default_factory=list)
    # Whether an earlier page asks anything (the page draws a Back button).
    has_back: bool = False

    @property
    def is_last(self) -> bool:
        return self.page >= self.last_page

    @property
    def has_testimony(self) -> bool:
        return any(view.id == q.TESTIMONY_ID for view in self.questions)

    @property
    def has_files(self) -> bool:
        return any(view.type == QuestionKind.FILES for view in self.questions)

    @property
    def errors(self) -> list[QuestionView]:
        shown = [*self.questions, *([self.consent] if self.consent else [])]
        return [view for view in shown if view.errors]


def init_app(app: Flask, questionnaire: Questionnaire) -> None:
    app.extensions[_EXTENSION] = questionnaire


def current_questionnaire() -> Questionnaire:
    questionnaire: Questionnaire = current_app.extensions[_EXTENSION]
    return questionnaire


def read_posted_answers(
    long_text_limit: int,
    *,
    questionnaire: Questionnaire | None = None,
    up_to_page: int | None = None,
    skip_testimony: bool = True,
) -> Answers:
    """The answers in this POST; on the last page the testimony is the form's to read."""
    return q.read_answers(
        questionnaire or current_questionnaire(),
        request.form.getlist,
        long_text_limit=long_text_limit,
        skip=(q.TESTIMONY_ID,) if skip_testimony else (),
        up_to_page=up_to_page,
    )


def posted_page() -> int:
    """The page this POST came from, as the form says (checked; a wrong one draws page 1)."""
    last = current_questionnaire().last_page
    try:
        page = int(request.form.get("page", ""))
    except ValueError:
        return 1
    return page if 1 <= page <= last else 1


def page_of(answers: Answers) -> int:
    """The first page with a problem, or the last page when the problems are the form's own."""
    questionnaire = current_questionnaire()
    pages = [question.page for question in answers.shown if question.id in answers.problems] or [
        questionnaire.last_page
    ]
    return min(pages)


def neighbour_page(page: int, step: int, long_text_limit: int) -> int:
    """The next (step 1) or previous (step -1) page that asks something of this witness."""
    questionnaire = current_questionnaire()
    target = page + step
    while 1 <= target <= questionnaire.last_page:
        answers = read_posted_answers(long_text_limit, up_to_page=target)
        if any(question.page == target for question in answers.shown):
            return target
        target += step
    return page


def problem_text(problem: Problem, question: Question, limit: int) -> str:
    if problem is Problem.REQUIRED:
        return str(_("Please answer this question."))
    if problem is Problem.BAD_CHOICE:
        return str(_("Please choose one of the answers shown."))
    if problem is Problem.BAD_DATE:
        return str(
            _("Please write the date as a year (2019), a month (2019-05) or a day (2019-05-14).")
        )
    return str(
        _(
            "Your answer is longer than %(max)s characters. Please shorten it.",
            max=question.max_chars(limit),
        )
    )


def _carried(questions: Iterable[Question], drawn: set[str]) -> list[tuple[str, str]]:
    """Every answer this POST sent for a question not drawn on the page, to send again."""
    carried = []
    for question in questions:
        if not question.answered or question.form_name in drawn:
            continue
        for value in request.form.getlist(question.form_name):
            if isinstance(value, str) and value.strip():
                carried.append((question.form_name, q.normalise_line_breaks(value)))
    return carried


def form_questions(
    language: str,
    long_text_limit: int,
    answers: Answers | None = None,
    testimony: str | None = None,
    testimony_errors: tuple[str, ...] = (),
    *,
    page: int | None = None,
    questionnaire: Questionnaire | None = None,
    show_errors: bool = True,
    carry: bool = False,
) -> FormQuestions:
    """The questions of one page, holding the witness's answers and, if asked, their problems.

    `answers` are those read up to this page (they decide which questions
    are asked); `carry` puts every other answer of this POST in hidden fields.
    """
    questionnaire = questionnaire or current_questionnaire()
    answers = answers or q.read_answers(
        questionnaire, lambda name: [], long_text_limit=long_text_limit, up_to_page=page or 1
    )
    number = page or 1
    result = FormQuestions(page=number, last_page=questionnaire.last_page)
    shown = [question for question in answers.shown if question.page == number]
    result.has_back = any(question.page < number for question in answers.shown)
    for question in shown:
        result_view = _view(question, language, long_text_limit, answers, show_errors)
        if question.id == q.TESTIMONY_ID and testimony is not None:
            result_view = _with(
                result_view, value=testimony, errors=(*result_view.errors, *testimony_errors)
            )
        if question.id == q.CONSENT_ID:
            result.consent = result_view
        else:
            result.questions.append(result_view)
    if carry:
        result.carried = _carried(questionnaire.questions, {view.name for view in _all(result)})
    return result


def _all(page: FormQuestions) -> list[QuestionView]:
    return [*page.questions, *([page.consent] if page.consent else [])]


def _with(view: QuestionView, **changes: Any) -> QuestionView:
    return replace(view, **changes)


def _view(
    question: Question,
    language: str,
    long_text_limit: int,
    answers: Answers,
    show_errors: bool,
) -> QuestionView:
    html_id = f"q-{question.id}"
    errors: tuple[str, ...] = ()
    if show_errors and question.id in answers.problems:
        errors = (problem_text(answers.problems[question.id], question, long_text_limit),)
    # A refused answer is kept in `values` too, drawn again for the witness to mend.
    value = answers.values.get(question.id, "")
    chosen = set()
    for sent in answers.chosen.get(question.id, []):
        chosen.update(sent.split(q.CHOICE_SEPARATOR))
    return QuestionView(
        id=question.id,
        type=question.type,
        name=question.form_name,
        html_id=html_id,
        label=question.label[language],
        help=question.help.get(language, ""),
        required=question.required,
        value=value,
        choices=tuple(
            ChoiceView(c.id, c.label[language], f"{html_id}-{c.id}", c.id in chosen)
            for c in question.choices
        ),
        errors=errors,
        max_chars=question.max_chars(long_text_limit),
    )
