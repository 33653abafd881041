"""`verify` (an opened folder hashed again) and `custody verify` (the log's chain)."""

from __future__ import annotations

import argparse
from pathlib import Path

from portal.core.exitstatus import ExitStatus
from portal.core.layout import is_valid_id
from portal.review import consent
from portal.review.cli.context import (
    Context,
    IntegrityError,
    UserError,
    known_questionnaires,
)
from portal.review.custody import CustodyDamaged, CustodyError
from portal.review.discovery import find_submissions, leftovers
from portal.review.outcomes import OpenFailure
from portal.review.recheck import check_ciphertext, check_opened_files
from portal.review.record import (
    RECORD_NAME,
    RecordError,
    opened_ids,
    read_record,
)
from portal.review.sealed import SealedIndex


def _verify_one(
    folder: Path,
    sealed: SealedIndex,
    source: Path | None,
    known: consent.KnownQuestionnaires | None = None,
) -> str | None:
    """What is wrong with one opened submission, or None if every hash holds."""
    try:
        record = read_record(folder)
    except RecordError as exc:
        return f"{RECORD_NAME} is damaged ({exc})"
    if record is None or record.id != folder.name:
        return f"{RECORD_NAME} is missing or damaged"
    try:
        manifest = check_opened_files(folder, record)
        # What the first `open` entry recorded is the reference; a later
        # entry never replaces it (issue 21).
        sealed.check(folder, record, manifest)
        if known is not None and known.vouch(manifest) == consent.RELABELLED:
            # Not changed since opening, but not what the server's form
            # showed either: its consent cannot be trusted (issue 21).
            return (
                "its sealed questionnaire claims the SHA-256 of a questionnaire you know but "
                "shows other words or flags (relabelled): it was crafted. Its consent counts "
                "as `ask`"
            )
        if source is not None:
            if not (source / folder.name).exists():
                return f"its ciphertext is not in {source}"
            check_ciphertext(source / folder.name, record)
    except OpenFailure as exc:
        return str(exc)
    return None


def cmd_verify(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    out = Path(args.dir)
    if not out.is_dir():
        raise UserError(f"{out} is not a folder written by `testimony-review open`")
    log = ctx.custody(args.custody)
    if not log.path.exists():
        raise IntegrityError(
            f"no custody log at {log.path}: give the log these submissions were opened with "
            "(--custody FILE)"
        )
    try:
        result = log.verify(expect_head=args.expect_head)
        sealed = SealedIndex.from_log(log)
    except CustodyDamaged as exc:
        raise IntegrityError(str(exc)) from None
    known = known_questionnaires(ctx, args)
    source = None
    if args.src:
        source, _ids = find_submissions(Path(args.src))
    ids = sorted(set(args.ids) | set(args.id)) or opened_ids(out)
    if not ids:
        # "0 of 0 verified" with exit 0 reads as a pass to whoever asked for
        # the check; an empty or wrong folder proves nothing.
        raise UserError(
            f"no opened submissions in {out}: give the folder `testimony-review open` "
            "wrote (its --out)"
        )
    bad = 0
    for submission_id in ids:
        folder = out / submission_id
        if not is_valid_id(submission_id) or folder.is_symlink() or not folder.is_dir():
            problem: str | None = f"{folder} is not an opened submission"
        else:
            problem = _verify_one(folder, sealed, source, known)
        if problem:
            bad += 1
            ctx.out(f"CHANGED {submission_id}: {problem}")
        else:
            ctx.out(f"ok {submission_id}")
    for path in leftovers(out):
        ctx.err(
            f"note: {path} was left by an interrupted `open` (it may hold plaintext); the "
            f"next `open` into {out} removes it"
        )
    what = "ciphertext, opened files" if source else "opened files"
    ctx.err(
        f"{len(ids) - bad} of {len(ids)} submission(s) verified ({what} and custody log "
        f"hashed again); custody log: {result.count} entries, head {result.head}"
    )
    return ExitStatus.INTEGRITY if bad else ExitStatus.OK


def cmd_custody_verify(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    log = ctx.custody(args.custody)
    if not log.path.exists() and not log.anchor_path.exists():
        raise UserError(f"no custody log at {log.path} (give its path with --custody)")
    try:
        result = log.verify(expect_head=args.expect_head)
        sealed = SealedIndex.from_log(log)
    except CustodyError as exc:
        raise IntegrityError(str(exc)) from None
    if sealed.conflicts:
        first = sorted(sealed.conflicts.values())[0]
        more = len(sealed.conflicts) - 1
        raise IntegrityError(
            f"{log.path}: {first}" + (f" (and {more} more submission(s))" if more else "")
        )
    ctx.out(f"ok: {result.count} entries, head {result.head}")
    if args.expect_head:
        later = result.count - (result.expected_head_line or 0)
        ctx.err(f"The recorded head is entry {result.expected_head_line}; {later} entries since.")
    ctx.err(
        "A hash chain cannot show entries cut off its end: write down the count and head "
        "above (or send them to a colleague) and check them later with --expect-head."
    )
    return ExitStatus.OK
