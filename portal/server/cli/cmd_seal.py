"""`testimony-portal seal [--all]`: the seal, run by hand (with a bucket: publish the spool now)."""

from __future__ import annotations

import argparse
import contextlib

from portal.core.exitstatus import ExitStatus
from portal.server.archive import open_archive
from portal.server.cli.context import Context
from portal.server.mailbox import MailboxError, ReplyStore
from portal.server.seal import SealError, seal
from portal.server.store import Archive, ArchiveUnavailable, StoreError, SubmissionStore


def run(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    """Rewrite recent submissions into fresh files so no file time tells their order."""
    config, stdout, stderr = ctx.config, ctx.stdout, ctx.stderr
    store = SubmissionStore(config.data_dir)
    if not store.submissions_dir.is_dir() or not store.staging_dir.is_dir():
        print(
            f"seal failed: {config.data_dir} is not a portal data directory; check "
            "PORTAL_DATA_DIR (start the server once to create it). Nothing was changed.",
            file=stderr,
        )
        return ExitStatus.ERROR
    archive = open_archive(config, store)
    if archive.root is None:
        return _publish(ctx, archive)
    try:
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(store.maintenance(wait=False))
            except BlockingIOError:
                print("waiting for a running seal, export or purge to finish...", file=stderr)
                stack.enter_context(store.maintenance())
            reserve = config.min_free_mb * 1024 * 1024
            report = seal(store, everything=args.all, reserve_bytes=reserve)
            replies_kept = ReplyStore(config.data_dir).reseal(config.reply_days)
    except (SealError, StoreError) as exc:
        print(f"seal failed: {exc}", file=stderr)
        return ExitStatus.ERROR
    except KeyboardInterrupt:
        print("seal interrupted; every submission is in place. Run it again later.", file=stderr)
        return ExitStatus.INTERRUPTED
    except OSError as exc:
        print(
            f"seal failed: {exc.strerror or exc} ({exc.filename}); check that the data "
            "directory belongs to this user. Run the command again: nothing was lost.",
            file=stderr,
        )
        return ExitStatus.ERROR
    print(
        f"sealed: {report.rewritten} submission(s) rewritten into fresh files, "
        f"{report.already_sealed} sealed before, {report.arrived_during_seal} arrived during "
        f"the seal (sealed next time); {replies_kept} reply(ies) rewritten",
        file=stdout,
    )
    for submission_id, reason in report.not_sealed.items():
        print(f"not sealed: {submission_id}: {reason}", file=stderr)
    return ExitStatus.OK if report.ok else ExitStatus.ERROR


def _publish(ctx: Context, archive: Archive) -> ExitStatus:
    """Move every submission of this node's spool into the bucket, in random order."""
    config, store = ctx.config, archive.spool
    try:
        archive.verify()
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(store.maintenance(wait=False))
            except BlockingIOError:
                ctx.err("waiting for a running seal, export or purge to finish...")
                stack.enter_context(store.maintenance())
            report = archive.publish(reserve_bytes=config.min_free_mb * 1024 * 1024)
            kept = archive.replies().reseal(config.reply_days) if report.stopped is None else 0
    except (ArchiveUnavailable, MailboxError) as exc:
        ctx.err(f"seal failed: {exc}. The spool keeps every submission; run it again later.")
        return ExitStatus.ERROR
    except KeyboardInterrupt:
        ctx.err("seal interrupted; what was not published waits in the spool. Run it again.")
        return ExitStatus.INTERRUPTED
    ctx.out(
        f"published: {report.published} submission(s) moved from the spool to the bucket in "
        f"random order ({report.requests} requests); {len(store.ids())} wait in the spool; "
        f"{kept} reply(ies) in the bucket"
    )
    if report.stopped is not None:
        ctx.err(f"seal stopped: {report.stopped}. The rest waits in the spool; run it again.")
    for submission_id, reason in report.failed.items():
        ctx.err(f"not published: {submission_id}: {reason}")
    return ExitStatus.OK if report.ok else ExitStatus.ERROR
