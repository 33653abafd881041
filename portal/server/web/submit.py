"""The submission form, page by page, and its handling.

Every page but the last posts to `submit.page`, which only draws another
page: it checks the answers of the page just left, stores nothing and
logs nothing, and sends every answer back in the next page's hidden fields
(see portal/server/web/questions.py). The last page posts to
`submit.receive`, the one request that stores a submission.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from flask import Blueprint, current_app, render_template, request
from flask_babel import force_locale
from flask_babel import gettext as _
from flask_wtf.csrf import generate_csrf

from portal.core import questionnaire as q
from portal.core.questionnaire import Answers
from portal.core.receipt import Receipt, new_receipt
from portal.server.intake import Submission
from portal.server.web.extensions import portal_state
from portal.server.web.followup import conversation
from portal.server.web.forms import SubmissionForm
from portal.server.web.i18n import LANGUAGES
from portal.server.web.onetime import AlreadyStored
from portal.server.web.pages import render_slotted
from portal.server.web.questions import (
    current_questionnaire,
    form_questions,
    neighbour_page,
    page_of,
    posted_page,
    read_posted_answers,
)
from portal.server.web.storing import store_once

bp = Blueprint("submit", __name__)

# What the buttons of a page that is not the last send as `go`.
NEXT, BACK, STAY = "next", "back", "stay"


def _new_form() -> SubmissionForm:
    state = portal_state()
    return SubmissionForm(max_chars=state.config.max_testimony_chars, signer=state.forms)


def _form_page(
    form: SubmissionForm,
    lang: str,
    answers: Answers | None = None,
    status: int = 200,
    *,
    page: int = 1,
    show_errors: bool = True,
    testimony_from_form: bool = True,
) -> tuple[str, int]:
    # The limits shown on the form come from the pages blueprint's context processor.
    # The witness's answers are drawn again; files cannot be.
    limit = portal_state().config.max_testimony_chars
    questions = form_questions(
        lang,
        limit,
        answers,
        # The last page leaves the testimony to the form; a page reads it as an answer.
        testimony=(form.testimony.data or "") if testimony_from_form else None,
        testimony_errors=tuple(str(e) for e in form.testimony.errors) if show_errors else (),
        page=page,
        show_errors=show_errors,
        carry=request.method == "POST",
    )
    return render_template("submit.html", form=form.fresh(), questions=questions), status


def _new_receipt_page(receipt: Receipt, testimony_chars: int, arrived: list[Any]) -> str:
    """The received page that shows a new receipt."""

    def draw(values: Mapping[str, str]) -> str:
        return render_template(
            "received.html",
            receipt=values["receipt"],
            receipt_notes=receipt_notes(),
            testimony_chars=values["chars"],
            arrived=arrived,
        )

    values = {"receipt": receipt.display(), "chars": str(testimony_chars)}
    if arrived:  # the files' names and fingerprints: drawn for this witness only
        return draw(values)
    return render_slotted("submit.received", draw, values)


def _received_page(page_state: bytes) -> tuple[str, int]:
    # `page_state` is what this page shows of its own submission; a repeated
    # form gets the same bytes back from the ledger. The receipt is never
    # kept there: it is shown on the first answer only (received.html says so).
    return render_template("received.html"), 200


@bp.get("/submit", defaults={"lang": "en"})
@bp.get("/<lang:lang>/submit")
def form(lang: str) -> tuple[str, int]:
    # The first page is the same for every witness but for the form's two
    # tokens: drawn once per language, then filled in (pages.render_slotted).
    tokens = {"csrf_token": generate_csrf(), "form_id": portal_state().forms.issue()}
    return render_slotted("submit.form", partial(_first_page, lang), tokens), 200


def _first_page(lang: str, tokens: Mapping[str, str]) -> str:
    form = _new_form().with_once(tokens["form_id"])
    questions = form_questions(lang, form.max_chars, testimony="", page=1, carry=False)
    return render_template(
        "submit.html", form=form, questions=questions, csrf_value=tokens["csrf_token"]
    )


@bp.post("/submit/page", defaults={"lang": "en"})
@bp.post("/<lang:lang>/submit/page")
def page(lang: str) -> tuple[str, int]:
    """Another page of the form: Continue checks the page left, Back and a language never do."""
    limit = portal_state().config.max_testimony_chars
    current = posted_page()
    go = request.form.get("go", NEXT)
    if go == NEXT:
        answers = read_posted_answers(limit, up_to_page=current, skip_testimony=False)
        if any(question.page == current for question in _refused(answers)):
            return _form_page(
                _new_form(), lang, answers, status=400, page=current, testimony_from_form=False
            )
        target = neighbour_page(current, 1, limit)
    else:
        target = neighbour_page(current, -1, limit) if go == BACK else current
    answers = read_posted_answers(limit, up_to_page=target, skip_testimony=False)
    return _form_page(
        _new_form(), lang, answers, page=target, show_errors=False, testimony_from_form=False
    )


def _refused(answers: Answers) -> list[q.Question]:
    return [question for question in answers.shown if question.id in answers.problems]


@bp.post("/submit", defaults={"lang": "en"})
@bp.post("/<lang:lang>/submit")
def receive(lang: str) -> tuple[str, int]:
    form = _new_form()
    answers = read_posted_answers(portal_state().config.max_testimony_chars)
    form.answered_other_questions = answers.has_text
    asked = {question.id for question in answers.shown}
    # A questionnaire without a testimony question still has the form's field.
    testimony_asked = q.TESTIMONY_ID in asked or not current_questionnaire().question(
        q.TESTIMONY_ID
    )
    if not testimony_asked:
        # Not asked on this witness's path: a text carried from another path is not theirs.
        form.testimony.data = ""
    if not form.validate() or answers.problems or form.once is None:
        # Files already streamed in are discarded when the request ends;
        # the page tells the witness that nothing was saved.
        return _form_page(form, lang, answers, status=400, page=page_of(answers))
    testimony = form.testimony.data or ""
    fields = {q.TESTIMONY_ID: testimony} if testimony_asked else {}

    def commit(submission: Submission) -> Receipt:
        # The receipt is drawn in memory and never kept; only its seed (one
        # SHA-256 of it) is sealed, inside the encrypted manifest, for the
        # reviewer to derive the witness's recipient offline: no memory-hard
        # derivation on the submission path (portal.core.replykey).
        receipt = new_receipt()
        submission.commit(
            {**fields, **answers.values},
            language=lang,
            reply_key=conversation().keys.reply_key(receipt),
            questionnaire=current_questionnaire().sealed(lang, answers.shown),
        )
        return receipt

    stored = store_once(form.once, commit)
    if isinstance(stored, AlreadyStored):
        # A reload, a double click or a replay: stored once already.
        return _received_page(stored.page_state)
    # Every written answer counts, the insider's (who has no `testimony`) too.
    chars = len(testimony) + sum(
        len(v) for k, v in answers.values.items() if k not in answers.chosen
    )
    return _new_receipt_page(stored.value, chars, stored.submission.committed_attachments), 200


def receipt_notes() -> dict[str, dict[str, Any]]:
    """What the received page's language menu shows in place, in each language.

    The page that shows a receipt is the only one that ever will: a language
    link that left it would lose the receipt for a witness who had not yet
    written it down. The menu leads to these notes instead (the receipt's
    instructions in the chosen language, then a link away).
    """
    kept: dict[str, dict[str, Any]] | None = current_app.extensions.get("portal.receipt_notes")
    if kept is not None:
        return kept
    notes = {}
    for code in LANGUAGES:
        with force_locale(code):
            notes[code] = {
                "title": _("Your receipt is shown only on this page"),
                "lines": [
                    _("Write it down now, on paper, exactly as shown. It is shown only once."),
                    _("Keep it hidden. Anyone who has it can read the replies to you."),
                    _(
                        "It is the only way to read replies from the organisation and to add "
                        "more to your testimony."
                    ),
                    _(
                        "Nobody can recover it for you: not the organisation, not the people "
                        "who run this server."
                    ),
                ],
                "leave": _("I have written down my receipt: go to the start page"),
            }
    # The same for every witness: made once (each language's catalogue is fixed at start-up).
    current_app.extensions["portal.receipt_notes"] = notes
    return notes
