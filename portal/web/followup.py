"""The follow-up page: a receipt opens the replies and lets the witness send more.

The receipt only ever travels in a POST body. Every receipt that passes the
typo check is treated alike: its identity is derived, its mailbox read, and
the same page drawn, "no replies yet" when there are none. A guessed
receipt therefore gets exactly what a real one with no replies gets; the
server cannot tell them apart and does not pretend to.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, Flask, current_app, render_template
from werkzeug.exceptions import BadRequest

from portal.age import X25519Identity
from portal.config import Config, ConfigError
from portal.mailbox import (
    MailboxError,
    ReceiptKeys,
    Reply,
    ReplyStore,
    configured_cost,
    ensure_salt,
)
from portal.receipt import Receipt, ReceiptError, parse_receipt
from portal.web.forms import FollowupForm, ReceiptForm, ReplyDeleteForm
from portal.web.intake import current_submission

bp = Blueprint("followup", __name__)


@dataclass
class Conversation:
    keys: ReceiptKeys
    replies: ReplyStore


def conversation() -> Conversation:
    state: Conversation = current_app.extensions["portal.conversation"]
    return state


def init_app(app: Flask) -> None:
    config: Config = app.extensions["portal"].config
    try:
        replies = ReplyStore(config.data_dir)
        replies.initialise()
        replies.purge_older_than(config.reply_days)
        cost = configured_cost(config.receipt_kdf_ops, config.receipt_kdf_memory_kib)
        keys = ReceiptKeys(ensure_salt(config.data_dir), cost, config.receipt_kdf_concurrency)
    except MailboxError as exc:
        # A damaged salt or an impossible cost: the operator must act.
        raise ConfigError(str(exc)) from None
    app.extensions["portal.conversation"] = Conversation(keys=keys, replies=replies)
    app.register_blueprint(bp)


def _login_page(form: ReceiptForm, status: int = 200) -> tuple[str, int]:
    return render_template("followup_login.html", form=form), status


def _checked_receipt(typed: str | None) -> Receipt:
    try:
        return parse_receipt(typed or "")
    except ReceiptError:
        raise BadRequest() from None


def _mailbox_page(
    receipt: Receipt, identity: X25519Identity, *, deleted: int | None = None
) -> tuple[str, int]:
    replies: list[Reply] = conversation().replies.read(identity)
    return render_template(
        "followup.html",
        receipt=receipt.display(),
        replies=replies,
        deleted=deleted,
        delete_form=ReplyDeleteForm(),
        send_form=FollowupForm(max_chars=_max_chars()),
    ), 200


def _max_chars() -> int:
    max_chars: int = current_app.extensions["portal"].config.max_testimony_chars
    return max_chars


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
    return _mailbox_page(receipt, conversation().keys.derive(receipt))


@bp.post("/followup/delete", defaults={"lang": "en"})
@bp.post("/<lang:lang>/followup/delete")
def delete(lang: str) -> tuple[str, int]:
    form = ReplyDeleteForm()
    if not form.validate():
        raise BadRequest()
    receipt = _checked_receipt(form.receipt.data)
    identity = conversation().keys.derive(receipt)
    deleted = conversation().replies.delete(identity, form.reply_ids())
    return _mailbox_page(receipt, identity, deleted=deleted)


@bp.post("/followup/send", defaults={"lang": "en"})
@bp.post("/<lang:lang>/followup/send")
def send(lang: str) -> tuple[str, int]:
    form = FollowupForm(max_chars=_max_chars())
    if not form.validate():
        # Files already streamed in are discarded when the request ends.
        return render_template("followup_failed.html", form=form), 400
    receipt = _checked_receipt(form.receipt.data)
    identity = conversation().keys.derive(receipt)
    submission = current_submission(create=True)
    assert submission is not None
    testimony = form.testimony.data or ""
    submission.commit({"testimony": testimony}, language=lang, reply_to=str(identity.recipient))
    return render_template(
        "received.html",
        receipt=None,
        followup=True,
        testimony_chars=len(testimony),
        arrived=submission.committed_attachments,
    ), 200
