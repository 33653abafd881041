"""`open`: decrypt and verify submissions into a folder, logging each opening."""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from portal.core.exitstatus import ExitStatus
from portal.review import keys
from portal.review.cli.context import (
    Context,
    IntegrityError,
    UserError,
    custody_session,
    unlock_source,
)
from portal.review.custody import (
    Action,
    LoggedFile,
)
from portal.review.opening import Opener
from portal.review.record import (
    OpenedRecord,
    opened_ids,
)
from portal.review.report import human_size
from portal.review.sealed import SealedIndex, record_sha256


class _Progress:
    """Byte progress on a terminal, at most a few updates a second."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.total = 0
        self.started = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()

    def on_bytes(self, count: int) -> None:
        # Called from the decrypting threads.
        with self._lock:
            self.total += count
            now = time.monotonic()
            if not self.enabled or now - self._last < 0.5:
                return
            self._last = now
            rate = self.total / max(now - self.started, 1e-6)
            self.stream.write(
                f"\r  {human_size(self.total)} decrypted ({human_size(int(rate))}/s)   "
            )
            self.stream.flush()

    def say(self, message: str) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 60 + "\r")
        print(message, file=self.stream, flush=True)


def cmd_open(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: give 1 or more files to decrypt at a time")
    src_root, out_root = Path(args.src).resolve(), Path(args.out).resolve()
    if out_root == src_root or src_root in out_root.parents:
        # Opened files are plaintext: inside SRC they would land on the
        # export drive (which travels) or in a data directory, and the
        # extra entries would make the submissions look tampered.
        raise UserError(
            f"--out {args.out} is inside SRC {args.src}: opened files are plaintext and "
            "must not be written onto the export drive or into a data directory; give a "
            "folder on the reviewer machine's encrypted disk"
        )
    log = ctx.custody(args.custody)
    reviewer = ctx.reviewer(args.reviewer)
    identities = keys.load_identities(
        [Path(p) for p in args.identity], unlock_source(ctx, args.passphrase_file)
    )
    out = Path(args.out)
    progress = _Progress(ctx.stderr, enabled=ctx.stderr.isatty() and not args.quiet)
    with custody_session(ctx, log, "Nothing was opened.", head_on_error=True) as session:
        opened_before = opened_ids(out)
        if session.count == 0 and opened_before:
            raise IntegrityError(
                f"{out} holds {len(opened_before)} opened submission(s), but the custody "
                f"log {log.path} is missing or empty: it was deleted, emptied or is not "
                "the log they were opened with. Nothing was opened. Give the right log "
                "with --custody, restore it from your backup, or open into a new --out "
                "folder"
            )

        sealed = SealedIndex.from_session(session)

        def log_opened(record: OpenedRecord) -> None:
            line = session.append(
                Action.OPEN,
                reviewer,
                submission=record.id,
                manifest=asdict(record.manifest),
                record_sha256=record_sha256(record),
                attachments=[
                    asdict(LoggedFile(e.path, e.file, e.size, e.sha256, e.ciphertext_sha256))
                    for e in record.attachments
                ],
            )
            if (opening := line.entry.opening) is not None:
                sealed.add(line.line_number, opening)

        opener = Opener(
            out,
            identities,
            sealed=sealed,
            say=progress.say,
            on_bytes=progress.on_bytes,
            on_opened=log_opened,
            jobs=args.jobs,
        )
        result = opener.open_all(Path(args.src))
    ctx.err(
        f"{len(result.opened)} opened, {len(result.skipped)} already opened (every hash "
        f"checked again), {len(result.failed)} NOT opened. Overview: {result.index_path}"
    )
    for outcome in result.failed:
        ctx.err(f"NOT OPENED: {outcome.submission_id}: {outcome.kind}: {outcome.reason}")
    if any(o.failure is not None and o.failure.integrity for o in result.failed):
        ctx.err(
            "Tampered, damaged or changed submissions were not written out. Keep their "
            "ciphertext and compare it with the server's copy or another export."
        )
        return ExitStatus.INTEGRITY
    return ExitStatus.ERROR if result.failed else ExitStatus.OK
