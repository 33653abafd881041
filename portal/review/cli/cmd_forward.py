"""`forward` (an encrypted bundle for a partner) and `table` (answers as CSV or JSON Lines)."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from portal.core.age import (
    KeyFormatError,
    parse_recipient,
)
from portal.core.cliutil import UsageError
from portal.core.exitstatus import ExitStatus
from portal.review import consent, table
from portal.review.cleaning import CleanedCopy, cleaned_copies
from portal.review.cli.context import (
    PROG,
    Context,
    IntegrityError,
    UserError,
    custody_session,
)
from portal.review.custody import (
    Action,
    Entry,
)
from portal.review.forward import collect, extra_member, write_bundle
from portal.review.report import human_size


def cmd_forward(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    ids = [*args.ids, *args.id]
    if not ids:
        raise UsageError(
            f"{PROG} forward: error: give at least one submission ID (an id that starts with "
            "`-` goes after `--`, or as --id=ID)"
        )
    if args.override_consent is not None and not args.override_consent.strip():
        raise UsageError(
            f"{PROG} forward: error: --override-consent needs a reason, for example "
            '--override-consent "witness agreed by phone on 2026-11-20"'
        )
    try:
        recipient = parse_recipient(args.to)
    except KeyFormatError as exc:
        raise UserError(
            f"--to is not an age public key ({exc}); ask the partner for the age1pq1... "
            "or age1... line that `age-keygen` printed for them"
        ) from None
    log = ctx.custody(args.custody)
    with custody_session(ctx, log, "Nothing was sent.") as session:
        members, listing = collect(Path(args.source), ids, args.omit_field)
        decisions = consent.check_folder(
            Path(args.source), ids, args.omit_field, args.override_consent
        )
        entries = log.entries_for(set(ids))
        if missing := sorted(set(ids) - _logged_ids(entries)):
            raise IntegrityError(
                f"the custody log {log.path} has no entry for the opening of "
                f"{', '.join(missing)}: it is not the log they were opened with, or it "
                "was emptied. Nothing was sent. Give the right log with --custody"
            )
        with _cleaned(args.clean_metadata, Path(args.source), ids) as cleaned:
            result = write_bundle(
                Path(args.out),
                members
                + [
                    extra_member(c.name, c.path, c.sha256, c.size)
                    for c in cleaned
                    if c.path is not None and c.sha256 is not None
                ],
                recipient,
                custody_lines=entries,
                submission_ids=ids,
                omit_fields=args.omit_field,
                mtime=int(time.time()) // 86400 * 86400,
                consent_note=consent.bundle_note(decisions) + _cleaning_note(cleaned),
                consent_records=[d.as_record() for d in decisions],
            )
        extra = {"cleaned": [c.as_record() for c in cleaned]} if args.clean_metadata else {}
        session.append(
            Action.FORWARD,
            ctx.reviewer(args.reviewer),
            submissions=sorted(set(ids)),
            recipient=str(recipient),
            bundle=result.file_entry(),
            omitted_fields=sorted(set(args.omit_field)),
            files=listing,
            consent=[d.as_record() for d in decisions],
            **extra,
        )
    return ctx.done(
        result.path,
        f"Wrote {result.path} ({human_size(result.size)}, SHA-256 {result.sha256}) for {recipient}."
        "\nThe partner opens it with:  age -d -i THEIR-KEY -o bundle.tar FILE && tar -xf bundle.tar"
        "\nand checks it with:  sha256sum -c SHA256SUMS",
    )


def cmd_table(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    count = table.write_table(Path(args.source), Path(args.out), args.format)
    ctx.err(f"Wrote {args.out}: {count} submission(s), one row each ({args.format}).")
    return ExitStatus.OK


@contextlib.contextmanager
def _cleaned(wanted: bool, source: Path, ids: Sequence[str]) -> Iterator[list[CleanedCopy]]:
    if not wanted:
        yield []
        return
    with cleaned_copies(source, ids) as copies:
        yield copies


def _cleaning_note(cleaned: Sequence[CleanedCopy]) -> str:
    if not cleaned:
        return ""
    lines = [
        "\nMetadata-cleaned copies (made with mat2) are beside the originals, under",
        "<id>/cleaned/. The originals are untouched; SHA256SUMS lists both.",
    ]
    lines += [f"  {c.submission}/{c.file}: not cleaned ({c.problem})" for c in cleaned if c.problem]
    return "\n".join(lines) + "\n"


def _logged_ids(entries: Sequence[Entry]) -> set[str]:
    return {e.entry.opening.submission for e in entries if e.entry.opening is not None}
