"""The questionnaire on the form: what the template draws, and the answers a POST carries.

The questions come from `portal.core.questionnaire`; this module only puts them
in the witness's language, keeps what the witness sent when the page is
drawn again after a mistake, and words each problem for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    """Every question of the form, with the consent question kept apart for the end."""

    questions: list[QuestionView] = field(default_factory=list)
    consent: QuestionView | None = None

    @property
    def has_testimony(self) -> bool:
        return any(view.id == q.TESTIMONY_ID for view in self.questions)

    @property
    def errors(self) -> list[QuestionView]:
        shown = [*self.questions, *([self.consent] if self.consent else [])]
        return [view for view in shown if view.errors]


def init_app(app: Flask, questionnaire: Questionnaire) -> None:
    app.extensions[_EXTENSION] = questionnaire


def current_questionnaire() -> Questionnaire:
    questionnaire: Questionnaire = current_app.extensions[_EXTENSION]
    return questionnaire


def read_posted_answers(long_text_limit: int) -> Answers:
    """The answers in this POST; the testimony text itself is the form's to read."""
    return q.read_answers(
        current_questionnaire(),
        request.form.getlist,
        long_text_limit=long_text_limit,
        skip=(q.TESTIMONY_ID,),
    )


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


def form_questions(
    language: str,
    long_text_limit: int,
    answers: Answers | None = None,
    testimony: str = "",
    testimony_errors: tuple[str, ...] = (),
) -> FormQuestions:
    """The questions to draw, holding the witness's answers and problems when drawn again."""
    answers = answers or Answers()
    result = FormQuestions()
    for question in current_questionnaire().questions:
        html_id = f"q-{question.id}"
        errors: tuple[str, ...] = ()
        if question.id in answers.problems:
            errors = (problem_text(answers.problems[question.id], question, long_text_limit),)
        value = answers.values.get(question.id, "")
        if question.id == q.TESTIMONY_ID:
            value = testimony
            errors = (*errors, *testimony_errors)
        chosen = set()
        for sent in answers.chosen.get(question.id, []):
            chosen.update(sent.split(q.CHOICE_SEPARATOR))
        view = QuestionView(
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
        if question.id == q.CONSENT_ID:
            result.consent = view
        else:
            result.questions.append(view)
    return result
