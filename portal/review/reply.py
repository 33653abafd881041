"""Replies written on the air-gapped machine, encrypted to the witness alone.

`testimony-review reply ID --from OPENED_DIR --message-file FILE --out OUTBOX`
checks the opened submission again, takes the witness's recipient from its
manifest (`reply_to`, or derived offline from its `reply_key`), encrypts the
message to that recipient only, and writes `OUTBOX/<mailbox>/<hash>.age` for
the drive that goes to the server.
The server can store and serve that file but never read it; only the
witness's receipt opens it.

A copy of what was sent (the text, the date, the ciphertext's hash) stays in
`OPENED_DIR/replies/`, so the overview page shows each conversation with the
replies sent to it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

from portal.core.age import X25519Recipient, encrypt
from portal.core.conversation import mailbox_name
from portal.core.fsio import DIR_MODE, create_new
from portal.core.layout import is_valid_id
from portal.review.outcomes import OpenFailure
from portal.review.recheck import check_opened_files
from portal.review.record import SENT_REPLIES_DIR, RecordError, ReplyCopy, require_record

# The server refuses reply files over 256 KiB; a message this long in any
# script stays well under that once encrypted.
MAX_MESSAGE_BYTES = 64 * 1024


class ReplyError(Exception):
    """The reply cannot be written; the message says why and what to do."""


@dataclass(frozen=True)
class SentReply:
    path: Path
    mailbox: str
    thread: str
    sha256: str
    size: int

    def file_entry(self) -> dict[str, object]:
        """The reply file as its custody entry names it."""
        return {"file": str(self.path), "sha256": self.sha256, "size": self.size}


def read_message(path: Path) -> str:
    """The reply's text: UTF-8, not empty, of a sane length.

    Raises:
        ReplyError: naming the file and the fix.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReplyError(f"cannot read the message file {path}: {exc.strerror}") from None
    if len(data) > MAX_MESSAGE_BYTES:
        raise ReplyError(
            f"{path} is {len(data)} bytes; a reply may be at most {MAX_MESSAGE_BYTES} bytes. "
            "Shorten it, or send it in parts"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ReplyError(f"{path} is not UTF-8 text; save it as UTF-8 and run again") from None
    if not text.strip():
        raise ReplyError(f"{path} is empty; write the reply in it first")
    return text


def write_reply(
    opened_dir: Path,
    submission_id: str,
    message: str,
    outbox: Path,
    *,
    today: dt.date | None = None,
) -> SentReply:
    """Encrypt `message` to the witness of one opened submission and put it in the outbox.

    Raises:
        ReplyError: the submission is not opened here, has changed since, or
            carries no reply recipient.
        OpenFailure: the opened files no longer match their record.
    """
    if not is_valid_id(submission_id):
        raise ReplyError(f"{submission_id!r} is not a submission id")
    folder = opened_dir / submission_id
    try:
        record = require_record(folder)
    except RecordError as exc:
        raise ReplyError(
            f"{exc}; open it first (testimony-review open ... --out {opened_dir})"
        ) from None
    manifest = check_opened_files(folder, record)
    # A version 2 receipt's submission seals a seed: this runs argon2id.
    reply_to = manifest.reply_recipient()
    if reply_to is None:
        raise ReplyError(
            f"submission {submission_id} was sent before the portal gave receipts: there is "
            "no way to reply to its witness. Nothing was written"
        )
    recipient = X25519Recipient.parse(reply_to)
    ciphertext = encrypt(message.encode("utf-8"), [recipient])
    digest = hashlib.sha256(ciphertext).hexdigest()
    mailbox = mailbox_name(reply_to)
    box = outbox / mailbox
    box.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    target = box / f"{digest[:32]}.age"
    create_new(target, ciphertext)

    sent = (today or dt.datetime.now(dt.UTC).date()).isoformat()
    copies = opened_dir / SENT_REPLIES_DIR
    copies.mkdir(mode=DIR_MODE, exist_ok=True)
    copy = ReplyCopy(submission_id, manifest.thread, sent, message, digest)
    create_new(copies / f"{digest[:32]}.json", copy.to_bytes())
    return SentReply(
        path=target, mailbox=mailbox, thread=manifest.thread, sha256=digest, size=len(ciphertext)
    )


__all__ = ["OpenFailure", "ReplyError", "SentReply", "read_message", "write_reply"]
