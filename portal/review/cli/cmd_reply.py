"""`reply`: a reply encrypted to the witness alone, logged, put in the outbox."""

from __future__ import annotations

import argparse
from pathlib import Path

from portal.core.exitstatus import ExitStatus
from portal.review import keys
from portal.review.cli.context import (
    SIGNING_KEY_ENV,
    Context,
    IntegrityError,
    UserError,
    custody_session,
    unlock_source,
)
from portal.review.custody import Action
from portal.review.outcomes import OpenFailure
from portal.review.report import human_size
from portal.review.sealed import SealedIndex


def cmd_reply(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    from portal.review.reply import ReplyError, ReplyUnproven, read_message, write_reply

    try:
        message = read_message(Path(args.message_file))
    except ReplyError as exc:
        raise UserError(str(exc)) from None
    key_file = args.signing_key or ctx.env.get(SIGNING_KEY_ENV)
    if not key_file:
        raise UserError(
            "a reply must be signed: give --signing-key FILE (or set "
            f"{SIGNING_KEY_ENV}), the key `testimony-review keygen --signing` made; the "
            "server refuses unsigned replies"
        )
    signing_key = keys.load_signing_key(Path(key_file), unlock_source(ctx, args.passphrase_file))
    log = ctx.custody(args.custody)
    with custody_session(ctx, log, "The reply was written but not logged.") as session:
        try:
            sent = write_reply(
                Path(args.source),
                args.id,
                message,
                Path(args.out),
                signing_key=signing_key,
                sealed=SealedIndex.from_session(session),
            )
        except ReplyUnproven as exc:
            raise IntegrityError(str(exc)) from None
        except ReplyError as exc:
            raise UserError(str(exc)) from None
        except OpenFailure as exc:
            raise IntegrityError(f"{args.id}: {exc}. Nothing was written") from None
        session.append(
            Action.REPLY,
            ctx.reviewer(args.reviewer),
            submission=args.id,
            thread=sent.thread,
            mailbox=sent.mailbox,
            reply=sent.file_entry(),
        )
    return ctx.done(
        sent.path,
        f"Wrote the reply for {args.id} to {sent.path} ({human_size(sent.size)}), encrypted "
        "to the witness alone. Carry the whole outbox folder to the server and run "
        f"`testimony-portal import-replies {args.out}` there.",
    )
