"""`testimony-portal export DEST [--purge] [--same-disk]`: a verified copy to transfer media."""

from __future__ import annotations

import argparse

from portal.core.exitstatus import ExitStatus
from portal.server.archive import open_archive
from portal.server.cli.context import Context
from portal.server.export import ExportError, export_submissions


def run(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    """Copy committed submissions to DEST, verified; purge the verified ones with --purge."""
    config, stdout, stderr = ctx.config, ctx.stdout, ctx.stderr

    def progress(message: str) -> None:
        print(message, file=stderr, flush=True)

    # The archive is only read, and purged from with --purge: the data
    # directory's staging area is never swept, so an export can run beside a
    # live server; a bucket is read directly, whichever node published.
    archive = open_archive(config)
    try:
        report = export_submissions(
            archive, args.dest, purge=args.purge, same_disk=args.same_disk, progress=progress
        )
    except ExportError as exc:
        print(f"export failed: {exc}. Nothing was copied or deleted.", file=stderr)
        return ExitStatus.ERROR
    except KeyboardInterrupt:
        print(
            "export interrupted. Submissions not yet verified on DEST are untouched on the "
            "server; run the same command again to continue (verified copies are skipped).",
            file=stderr,
        )
        return ExitStatus.INTERRUPTED
    done = len(report.copied) + len(report.already_present)
    print(
        f"{done} submission(s) on {args.dest} and verified "
        f"({len(report.copied)} copied now, {len(report.already_present)} already there, "
        f"{report.bytes_copied} bytes written); {len(report.purged)} purged from the "
        f"{'bucket' if archive.root is None else 'server'}.",
        file=stdout,
    )
    if report.ok:
        return ExitStatus.OK
    if report.stopped:
        print(
            f"export stopped: {report.stopped}. {len(report.failed) + len(report.not_attempted)} "
            "submission(s) were NOT exported and remain on the server untouched. "
            "Free space or use another medium, then run the command again; "
            "verified copies are skipped.",
            file=stderr,
        )
    for submission_id, reason in report.failed.items():
        if reason != report.stopped:
            print(f"not exported: {submission_id}: {reason}", file=stderr)
    return ExitStatus.ERROR
