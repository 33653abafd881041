"""The follow-up page: a receipt opens the replies and lets the witness send more.

The receipt only ever travels in a POST body. Every receipt that passes the
typo check is treated alike: its identity is derived, its mailbox read, and
the same page drawn, "no replies yet" when there are none. A guessed
receipt therefore gets exactly what a real one with no replies gets; the
server cannot tell them apart and does not pretend to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from flask import Blueprint, Flask, current_app, render_template
from werkzeug.exceptions import BadRequest, ServiceUnavailable

from portal.core.age import X25519Identity
from portal.core.questionnaire import Answers
from portal.core.receipt import Receipt, ReceiptError, parse_receipt
from portal.server.config import Config, ConfigError, load_reply_signers
from portal.server.intake import Submission
from portal.server.mailbox import (
    MailboxError,
    ReceiptKeys,
    Reply,
    ReplyBox,
    configured_cost,
)
from portal.server.store import StoreError
from portal.server.web.admission import refuse_unless_token
from portal.server.web.errors import PortalHTTPError
from portal.server.web.extensions import PortalState, portal_state
from portal.server.web.forms import FollowupForm, ReceiptForm, ReplyDeleteForm
from portal.server.web.onetime import AlreadyStored
from portal.server.web.questions import (
    FormQuestions,
    current_questionnaire,
    form_questions,
    read_posted_answers,
)
from portal.server.web.ratelimit import TokenBucket
from portal.server.web.storing import store_once

bp = Blueprint("followup", __name__)
T = TypeVar("T")


class RepliesUnavailable(PortalHTTPError, ServiceUnavailable):
    """The archive holding the replies (a bucket) cannot be reached right now."""

    description = "Replies cannot be read right now."


def _replies_or_503(read: Callable[[], T]) -> T:
    """Replies from the archive, or a 503 "try later": never "no replies" when unknown."""
    try:
        return read()
    except StoreError:
        raise RepliesUnavailable() from None


@dataclass
class Conversation:
    keys: ReceiptKeys
    replies: ReplyBox
    # The follow-up logins' own budget (see `_login_bucket`).
    logins: TokenBucket


def portal_state_of(app: Flask) -> PortalState:
    state: PortalState = app.extensions["portal"]
    return state


def conversation() -> Conversation:
    state: Conversation = current_app.extensions["portal.core.conversation"]
    return state


def init_app(app: Flask) -> None:
    config: Config = app.extensions["portal"].config
    archive = portal_state_of(app).archive
    try:
        signers = load_reply_signers(config.reply_signers_file)
        replies = archive.replies(signers, reply_days=config.reply_days)
        replies.initialise()
        replies.purge_older_than(config.reply_days)
        cost = configured_cost(config.receipt_kdf_ops, config.receipt_kdf_memory_kib)
        keys = ReceiptKeys(archive.receipt_salt(cost), cost, config.receipt_kdf_concurrency)
    except (MailboxError, StoreError) as exc:
        # A damaged or missing salt, an impossible cost, a bucket gone: the operator must act.
        raise ConfigError(str(exc)) from None
    app.extensions["portal.core.conversation"] = Conversation(
        keys=keys, replies=replies, logins=_login_bucket(config, keys)
    )
    app.register_blueprint(bp)


# Follow-up logins may use at most this share of one core for their
# derivations, whatever the flood; the rest is the witnesses'.
LOGIN_CPU_SHARE = 0.25
# Bounds on the logins' rate per second when it is sized from the cost.
LOGIN_RATE_RANGE = (1.0, 50.0)


def _login_bucket(config: Config, keys: ReceiptKeys) -> TokenBucket:
    """The follow-up logins' budget, separate from the submissions'.

    Each login that passes the receipt's check digits runs one argon2id
    derivation. Unless PORTAL_LOGIN_PER_MINUTE says otherwise, the rate is
    sized from the CPU time one derivation takes at the configured cost
    (measured once at start), so that a flood of logins uses at most
    `LOGIN_CPU_SHARE` of one core. Created before gunicorn forks, like the
    submissions' bucket, so every worker shares it.
    """
    if config.login_per_minute:
        per_second = config.login_per_minute / 60
    else:
        low, high = LOGIN_RATE_RANGE
        per_second = min(high, max(low, LOGIN_CPU_SHARE / keys.measure_cpu_seconds()))
    burst = config.login_burst or max(5, int(per_second * 2))
    return TokenBucket(rate_per_second=per_second, burst=burst)


def _spend_login_budget() -> None:
    """A login that will derive a key spends one token of the logins' budget.

    Called once the receipt has passed its check digits: a typo'd receipt
    costs no derivation and spends nothing anywhere. The submissions'
    budget is never touched, so logins cannot refuse or delay a witness's
    submission, nor date one for an observer.
    """
    refuse_unless_token(conversation().logins)


def _followup_form() -> FollowupForm:
    state = portal_state()
    return FollowupForm(max_chars=state.config.max_testimony_chars, signer=state.forms)


def _login_page(form: ReceiptForm, status: int = 200) -> tuple[str, int]:
    return render_template("followup_login.html", form=form), status


def _checked_receipt(typed: str | None) -> Receipt:
    try:
        return parse_receipt(typed or "")
    except ReceiptError:
        raise BadRequest() from None


def _send_questions(lang: str, form: FollowupForm, answers: Answers | None = None) -> FormQuestions:
    """The follow-up's questions: its text, files and consent asked again (nothing chosen)."""
    return form_questions(
        lang,
        portal_state().config.max_testimony_chars,
        answers,
        testimony=form.testimony.data or "",
        testimony_errors=tuple(str(e) for e in form.testimony.errors),
        questionnaire=current_questionnaire().followup(),
    )


def _mailbox_page(
    receipt: Receipt, identity: X25519Identity, lang: str, *, deleted: int | None = None
) -> tuple[str, int]:
    replies: list[Reply] = _replies_or_503(lambda: conversation().replies.read(identity))
    send_form = _followup_form()
    return render_template(
        "followup.html",
        receipt=receipt.display(),
        replies=replies,
        deleted=deleted,
        delete_form=ReplyDeleteForm(),
        send_form=send_form.fresh(),
        send_questions=_send_questions(lang, send_form),
    ), 200


@bp.get("/followup", defaults={"lang": "en"})
@bp.get("/<lang:lang>/followup")
def form(lang: str) -> tuple[str, int]:
    return _login_page(ReceiptForm())


@bp.post("/followup", defaults={"lang": "en"})
@bp.post("/<lang:lang>/followup")
def mailbox(lang: str) -> tuple[str, int]:
    form = ReceiptForm()
    if not form.validate():
        return _login_page(form, status=400)
    receipt = parse_receipt(form.receipt.data or "")
    _spend_login_budget()
    return _mailbox_page(receipt, conversation().keys.derive(receipt), lang)


@bp.post("/followup/delete", defaults={"lang": "en"})
@bp.post("/<lang:lang>/followup/delete")
def delete(lang: str) -> tuple[str, int]:
    form = ReplyDeleteForm()
    if not form.validate():
        raise BadRequest()
    receipt = _checked_receipt(form.receipt.data)
    _spend_login_budget()
    identity = conversation().keys.derive(receipt)
    deleted = _replies_or_503(lambda: conversation().replies.delete(identity, form.reply_ids()))
    return _mailbox_page(receipt, identity, lang, deleted=deleted)


@bp.post("/followup/send", defaults={"lang": "en"})
@bp.post("/<lang:lang>/followup/send")
def send(lang: str) -> tuple[str, int]:
    form = _followup_form()
    followup = current_questionnaire().followup()
    answers = read_posted_answers(portal_state().config.max_testimony_chars, questionnaire=followup)
    form.answered_other_questions = answers.has_text
    if not form.validate() or answers.problems or form.once is None:
        # Files already streamed in are discarded when the request ends.
        # The receipt came in this POST; the form is drawn again with the
        # witness's words, without the replies (the next visit shows them).
        receipt_ok = _typed_receipt(form.receipt.data)
        return render_template(
            "followup_failed.html",
            form=form.fresh(),
            receipt=receipt_ok,
            send_questions=_send_questions(lang, form, answers),
        ), 400
    receipt = _checked_receipt(form.receipt.data)
    testimony = form.testimony.data or ""

    def commit(submission: Submission) -> None:
        # The same conversation as the receipt's first submission: a version
        # 2 receipt seals its seed (no derivation), a version 1 its recipient.
        keys = conversation().keys
        fields = {"testimony": testimony, **answers.values}
        sealed = followup.sealed(lang)
        if receipt.version == 1:
            # Its recipient is sealed with the witness's own signature, so a
            # submission that only names the recipient cannot join (issue 21).
            identity = keys.derive(receipt)
            submission.commit(fields, language=lang, reply_identity=identity, questionnaire=sealed)
        else:
            submission.commit(
                fields, language=lang, reply_key=keys.reply_key(receipt), questionnaire=sealed
            )

    # One submission per form, as on the main form: a reload stores nothing.
    stored = store_once(form.once, commit)
    back = {"conversation_receipt": receipt.display(), "back_form": ReceiptForm()}
    if isinstance(stored, AlreadyStored):
        return render_template("received.html", receipt=None, followup=True, **back), 200
    return render_template(
        "received.html",
        receipt=None,
        followup=True,
        testimony_chars=len(testimony),
        arrived=stored.submission.committed_attachments,
        **back,
    ), 200


def _typed_receipt(typed: str | None) -> str | None:
    """The receipt as the form sent it, in its display form, or None if it is not one."""
    try:
        return parse_receipt(typed or "").display()
    except ReceiptError:
        return None
