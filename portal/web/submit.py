"""The submission form and its handling."""

from __future__ import annotations

from flask import Blueprint, render_template

from portal.receipt import new_receipt
from portal.web.extensions import portal_state
from portal.web.followup import conversation
from portal.web.forms import SubmissionForm
from portal.web.intake import current_submission

bp = Blueprint("submit", __name__)


def _form_page(form: SubmissionForm, status: int = 200) -> tuple[str, int]:
    # The limits shown on the form come from the pages blueprint's context processor.
    return render_template("submit.html", form=form), status


@bp.get("/submit", defaults={"lang": "en"})
@bp.get("/<lang:lang>/submit")
def form(lang: str) -> tuple[str, int]:
    return _form_page(SubmissionForm(max_chars=portal_state().config.max_testimony_chars))


@bp.post("/submit", defaults={"lang": "en"})
@bp.post("/<lang:lang>/submit")
def receive(lang: str) -> tuple[str, int]:
    form = SubmissionForm(max_chars=portal_state().config.max_testimony_chars)
    if not form.validate():
        # Files already streamed in are discarded when the request ends;
        # the page tells the witness that nothing was saved.
        return _form_page(form, status=400)
    submission = current_submission(create=True)
    assert submission is not None
    # The receipt is drawn and turned into the witness's recipient in
    # memory; only that recipient is kept, inside the encrypted manifest.
    receipt = new_receipt()
    identity = conversation().keys.derive(receipt)
    testimony = form.testimony.data or ""
    submission.commit({"testimony": testimony}, language=lang, reply_to=str(identity.recipient))
    return render_template(
        "received.html",
        receipt=receipt.display(),
        testimony_chars=len(testimony),
        arrived=submission.committed_attachments,
    ), 200
