"""The submission form and its handling."""

from __future__ import annotations

from flask import Blueprint, render_template

from portal.questionnaire import Answers
from portal.web.extensions import portal_state
from portal.web.forms import SubmissionForm
from portal.web.intake import current_submission
from portal.web.questions import current_questionnaire, form_questions, read_posted_answers

bp = Blueprint("submit", __name__)


def _form_page(
    form: SubmissionForm, lang: str, answers: Answers | None = None, status: int = 200
) -> tuple[str, int]:
    # The limits shown on the form come from the pages blueprint's context processor.
    # The witness's answers are drawn again after a mistake; files cannot be.
    questions = form_questions(
        lang,
        portal_state().config.max_testimony_chars,
        answers,
        testimony=form.testimony.data or "",
        testimony_errors=tuple(str(e) for e in form.testimony.errors),
    )
    return render_template("submit.html", form=form, questions=questions), status


@bp.get("/submit", defaults={"lang": "en"})
@bp.get("/<lang:lang>/submit")
def form(lang: str) -> tuple[str, int]:
    return _form_page(SubmissionForm(max_chars=portal_state().config.max_testimony_chars), lang)


@bp.post("/submit", defaults={"lang": "en"})
@bp.post("/<lang:lang>/submit")
def receive(lang: str) -> tuple[str, int]:
    form = SubmissionForm(max_chars=portal_state().config.max_testimony_chars)
    answers = read_posted_answers(portal_state().config.max_testimony_chars)
    form.answered_other_questions = answers.has_text
    if not form.validate() or answers.problems:
        # Files already streamed in are discarded when the request ends;
        # the page tells the witness that nothing was saved.
        return _form_page(form, lang, answers, status=400)
    submission = current_submission(create=True)
    assert submission is not None
    submission.commit(
        {"testimony": form.testimony.data or "", **answers.values},
        language=lang,
        questionnaire=current_questionnaire().sealed(lang),
    )
    return render_template("received.html"), 200
