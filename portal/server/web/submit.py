"""The submission form and its handling."""

from __future__ import annotations

from flask import Blueprint, render_template

from portal.core.questionnaire import Answers
from portal.core.receipt import Receipt, new_receipt
from portal.server.intake import Submission
from portal.server.web.extensions import portal_state
from portal.server.web.followup import conversation
from portal.server.web.forms import SubmissionForm
from portal.server.web.onetime import AlreadyStored
from portal.server.web.questions import current_questionnaire, form_questions, read_posted_answers
from portal.server.web.storing import store_once

bp = Blueprint("submit", __name__)


def _new_form() -> SubmissionForm:
    state = portal_state()
    return SubmissionForm(max_chars=state.config.max_testimony_chars, signer=state.forms)


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
    return render_template("submit.html", form=form.fresh(), questions=questions), status


def _received_page(page_state: bytes) -> tuple[str, int]:
    # `page_state` is what this page shows of its own submission; a repeated
    # form gets the same bytes back from the ledger. The receipt is never
    # kept there: it is shown on the first answer only (received.html says so).
    return render_template("received.html"), 200


@bp.get("/submit", defaults={"lang": "en"})
@bp.get("/<lang:lang>/submit")
def form(lang: str) -> tuple[str, int]:
    return _form_page(_new_form(), lang)


@bp.post("/submit", defaults={"lang": "en"})
@bp.post("/<lang:lang>/submit")
def receive(lang: str) -> tuple[str, int]:
    form = _new_form()
    answers = read_posted_answers(portal_state().config.max_testimony_chars)
    form.answered_other_questions = answers.has_text
    if not form.validate() or answers.problems or form.once is None:
        # Files already streamed in are discarded when the request ends;
        # the page tells the witness that nothing was saved.
        return _form_page(form, lang, answers, status=400)
    testimony = form.testimony.data or ""

    def commit(submission: Submission) -> Receipt:
        # The receipt is drawn in memory and never kept; only its seed (one
        # SHA-256 of it) is sealed, inside the encrypted manifest, for the
        # reviewer to derive the witness's recipient offline: no memory-hard
        # derivation on the submission path (portal.core.replykey).
        receipt = new_receipt()
        submission.commit(
            {"testimony": testimony, **answers.values},
            language=lang,
            reply_key=conversation().keys.reply_key(receipt),
            questionnaire=current_questionnaire().sealed(lang),
        )
        return receipt

    stored = store_once(form.once, commit)
    if isinstance(stored, AlreadyStored):
        # A reload, a double click or a replay: stored once already.
        return _received_page(stored.page_state)
    return render_template(
        "received.html",
        receipt=stored.value.display(),
        testimony_chars=len(testimony),
        arrived=stored.submission.committed_attachments,
    ), 200
