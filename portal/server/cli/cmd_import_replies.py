"""`testimony-portal import-replies OUTBOX`: replies written offline, stored for the witnesses."""

from __future__ import annotations

import argparse
import contextlib

from portal.core.exitstatus import ExitStatus
from portal.server.archive import open_archive
from portal.server.cli.context import Context
from portal.server.mailbox import MailboxError, import_outbox
from portal.server.store import StoreError, SubmissionStore


def printable(text: str) -> str:
    """`text` on one line with nothing a terminal would act on: controls and odd characters escaped.

    File names in an outbox come from a USB stick: a newline in one would
    forge a line of this command's output (say, "0 refused"), and escape
    sequences could rewrite the terminal.
    """
    return "".join(
        ch if ch.isprintable() and ch not in "\\" else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


def run(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    """Store the replies of an outbox written by `testimony-review reply`."""
    config, outbox, stdout, stderr = ctx.config, args.outbox, ctx.stdout, ctx.stderr
    if not outbox.is_dir():
        print(
            f"testimony-portal: no outbox folder at {outbox}: give the folder that "
            "`testimony-review reply --out` wrote",
            file=stderr,
        )
        return ExitStatus.ERROR
    # The archive's replies: the data directory's, or the bucket's, where
    # every node reads them.
    archive = open_archive(config)
    store = archive.replies()
    # The daily seal rewrites the local replies/ too: never import in the middle of it.
    held = (
        SubmissionStore(config.data_dir).maintenance()
        if archive.root is not None
        else contextlib.nullcontext()
    )
    try:
        with held:
            store.initialise()
            result = import_outbox(store, outbox)
            expired = store.purge_older_than(config.reply_days)
    except (MailboxError, StoreError, OSError) as exc:
        print(f"testimony-portal: import-replies: {printable(str(exc))}", file=stderr)
        return ExitStatus.ERROR
    for problem in result.rejected:
        print(f"testimony-portal: NOT imported: {printable(problem)}", file=stderr)
    print(
        f"{result.added} reply(ies) imported, {result.already} already here, "
        f"{len(result.rejected)} refused; {expired} older than PORTAL_REPLY_DAYS="
        f"{config.reply_days} deleted",
        file=stdout,
    )
    return ExitStatus.OK if not result.rejected else ExitStatus.ERROR
