"""The opener: a run over every submission under SRC, in parallel, each all or nothing.

Each submission is decrypted (`decrypt`) and completed (`folder`) in a
private work folder `DIR/.partial-<id>/`, which is renamed to `DIR/<id>/`
only when the whole submission checked out: a damaged or tampered
submission leaves nothing behind. A submission opened before is checked
again, every hash against its record. The run ends with the index page.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from portal.core.age import PrivateKey
from portal.core.fsio import DIR_MODE, fsync_dir
from portal.review import report
from portal.review.discovery import PARTIAL_PREFIX, find_submissions, leftovers, remove_tree
from portal.review.opening.decrypt import Cancelled, Decryptor
from portal.review.opening.folder import folder_names, load_opened, write_record
from portal.review.outcomes import (
    Conflict,
    OpenFailure,
    OpenReport,
    Outcome,
    Status,
    Unexpected,
)
from portal.review.recheck import changed_since, check_ciphertext, check_opened_files
from portal.review.record import RECORD_NAME, OpenedRecord, RecordError, read_record

SayFn = Callable[[str], None]
BytesFn = Callable[[int], None]
OpenedFn = Callable[[OpenedRecord], None]


@dataclass
class _Prepared:
    """A submission decrypted and verified in its work folder, not yet in place."""

    outcome: Outcome
    work: Path | None = None
    record: OpenedRecord | None = None


class Opener:
    """Opens submissions from one source folder into one output folder.

    Attachments are decrypted on `jobs` threads (hashing and ChaCha20 both
    release the GIL), a few submissions at a time. Everything that must
    happen in order, the custody log and the final rename, happens on the
    calling thread.
    """

    def __init__(
        self,
        out_dir: Path,
        identities: Sequence[PrivateKey],
        *,
        say: SayFn | None = None,
        on_bytes: BytesFn | None = None,
        on_opened: OpenedFn | None = None,
        now: Callable[[], dt.datetime] | None = None,
        jobs: int | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.identities = list(identities)
        self.say = say or (lambda _message: None)
        self.on_bytes = on_bytes
        self.on_opened = on_opened
        self.now = now or (lambda: dt.datetime.now(dt.UTC))
        self.jobs = max(1, jobs or os.cpu_count() or 1)
        self._cancel = threading.Event()
        self._decryptor: Decryptor | None = None

    def prepare(self) -> None:
        """Create the output folder (0700) and sweep what a killed run left behind."""
        self.out_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        for path in leftovers(self.out_dir):
            remove_tree(path)

    def open_all(self, source: Path) -> OpenReport:
        base, ids = find_submissions(source)
        self.prepare()
        result = OpenReport()
        self._cancel.clear()
        try:
            with (
                ThreadPoolExecutor(self.jobs, thread_name_prefix="submission") as submissions,
                ThreadPoolExecutor(self.jobs, thread_name_prefix="attachment") as files,
            ):
                self._decryptor = Decryptor(self.identities, files, self._cancel, self.on_bytes)
                futures = [submissions.submit(self._prepare_one, base / i, i) for i in ids]
                try:
                    for number, future in enumerate(as_completed(futures), start=1):
                        outcome = self._finish(future.result())
                        result.outcomes.append(outcome)
                        where = f"[{number}/{len(ids)}] {outcome.submission_id}"
                        if outcome.status == Status.FAILED:
                            self.say(f"{where}: NOT OPENED ({outcome.kind}): {outcome.reason}")
                        else:
                            self.say(f"{where}: {outcome.status}")
                except BaseException:
                    # Stop the workers at their next read; leaving the `with`
                    # waits for them to finish.
                    self._cancel.set()
                    for future in futures:
                        future.cancel()
                    raise
        except BaseException:
            # Submissions decrypted but not yet moved into place (and so not
            # yet in the custody log) must not stay behind as plaintext.
            self.prepare()
            raise
        result.outcomes.sort(key=lambda o: o.submission_id)
        result.index_path = self._write_index(result)
        return result

    def _write_index(self, result: OpenReport) -> Path:
        failures = {o.submission_id: f"{o.kind}: {o.reason}" for o in result.failed}
        checked = {o.submission_id: o.status for o in [*result.opened, *result.skipped]}
        return report.write_index(self.out_dir, load_opened(self.out_dir), failures, checked)

    def _prepare_one(self, source_dir: Path, submission_id: str) -> _Prepared:
        try:
            return self._prepare_checked(source_dir, submission_id)
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 (one hostile submission must not stop the run)
            detail = " ".join(str(exc).split())[:300]
            return _Prepared(
                Outcome(
                    submission_id,
                    Status.FAILED,
                    Unexpected(
                        f"{type(exc).__name__}: {detail}. Keep its ciphertext; please report "
                        "this (without any testimony in the report)"
                    ),
                )
            )

    def _prepare_checked(self, source_dir: Path, submission_id: str) -> _Prepared:
        final = self.out_dir / submission_id
        if final.exists() or final.is_symlink():
            try:
                self._check_existing(source_dir, final, submission_id)
            except OpenFailure as exc:
                return _Prepared(Outcome(submission_id, Status.FAILED, exc))
            return _Prepared(Outcome(submission_id, Status.ALREADY_OPENED))
        work = self.out_dir / f"{PARTIAL_PREFIX}{submission_id}"
        remove_tree(work)
        work.mkdir(mode=DIR_MODE)
        assert self._decryptor is not None
        try:
            names = folder_names(work)
            decrypted = self._decryptor.decrypt_into(source_dir, submission_id, work, names)
            opened = self.now().replace(microsecond=0).isoformat()
            record = write_record(work, decrypted, names, opened)
        except OpenFailure as exc:
            remove_tree(work)
            return _Prepared(Outcome(submission_id, Status.FAILED, exc))
        except BaseException:
            remove_tree(work)
            raise
        return _Prepared(Outcome(submission_id, Status.OPENED), work, record)

    def _finish(self, prepared: _Prepared) -> Outcome:
        if prepared.work is None or prepared.record is None:
            return prepared.outcome
        final = self.out_dir / prepared.outcome.submission_id
        try:
            # The custody entry is written before the submission appears: an
            # interruption in between costs a second entry when the next run
            # opens it again, never an opening without an entry.
            if self.on_opened:
                self.on_opened(prepared.record)
            os.rename(prepared.work, final)
            fsync_dir(self.out_dir)
        except BaseException:
            remove_tree(prepared.work)
            raise
        return prepared.outcome

    def _check_existing(self, source_dir: Path, final: Path, submission_id: str) -> None:
        """Check an opened submission again: every file hashed, against what was recorded.

        Sizes alone are not evidence: a second export with other ciphertext of
        the same sizes, a flipped bit, or an edited opened file must all show.
        """
        try:
            record = read_record(final)
        except RecordError as exc:
            raise changed_since(final, f"{RECORD_NAME} was damaged ({exc})") from None
        if record is None or record.id != submission_id:
            raise Conflict(
                f"{final} exists but was not completely opened by this tool; "
                "move it aside and run again",
            )
        check_opened_files(final, record)
        check_ciphertext(source_dir, record)
