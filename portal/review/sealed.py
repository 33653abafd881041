"""What was sealed: an opened submission checked against the first `open` entry of the custody log.

`testimony.json` and `opened.json` are plain files in a folder that anyone
with write access can edit, and `open` wrote both: checking one against the
other proves nothing once both were edited. The custody log is chained and
its head is anchored outside the folder, and its first `open` entry for a
submission recorded, when it was decrypted, the SHA-256 of the manifest and
its ciphertext, of each attachment, and (since issue 21) of `opened.json`
itself. Everything `forward`, `table`, `reply`, `verify` and the index page
decide on or show is checked here against that first entry first.

A later entry never replaces what an earlier one recorded: a second `open`
entry for the same submission that records other hashes is a finding (the
log was appended to by someone, or the ciphertext changed between exports),
and the submission is not trusted until someone looks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from portal.core.manifest import Manifest
from portal.review import report
from portal.review.custody import CustodyLog, Entry, Opening, Session
from portal.review.outcomes import Changed
from portal.review.recheck import read_opened_manifest
from portal.review.record import RECORD_NAME, OpenedRecord


class NotSealed(Changed, label="differs from the custody log", integrity=True):
    """An opened submission differs from what the custody log recorded when it was opened."""


@dataclass(frozen=True)
class SealedOpening:
    """The first `open` entry's hashes of one submission, and where it is in the log."""

    line: int
    opening: Opening

    def fingerprint(self) -> tuple[object, ...]:
        """What must never change between two openings of the same ciphertext."""
        items = sorted(
            (str(i.get("path")), str(i.get("sha256")), str(i.get("ciphertext_sha256")))
            for i in self.opening.attachments
        )
        return (
            self.opening.manifest_sha256,
            self.opening.manifest_ciphertext_sha256,
            tuple(items),
        )


@dataclass
class SealedIndex:
    """The first `open` entry of each submission in a custody log, and every contradiction."""

    first: dict[str, SealedOpening] = field(default_factory=dict)
    # Submission id -> what a later entry contradicts.
    conflicts: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_entries(cls, entries: Iterable[Entry]) -> SealedIndex:
        index = cls()
        for line in entries:
            opening = line.entry.opening
            if opening is not None:
                index.add(line.line_number, opening)
        return index

    @classmethod
    def from_session(cls, session: Session) -> SealedIndex:
        """The openings a locked custody session read while verifying the log."""
        index = cls()
        for line, opening in session.openings:
            index.add(line, opening)
        return index

    @classmethod
    def from_log(cls, log: CustodyLog) -> SealedIndex:
        """Raises CustodyError when the log itself is damaged."""
        return cls.from_entries(log.entries())

    def add(self, line: int, opening: Opening) -> None:
        sealed = SealedOpening(line, opening)
        earlier = self.first.get(opening.submission)
        if earlier is None:
            self.first[opening.submission] = sealed
        elif earlier.fingerprint() != sealed.fingerprint():
            self.conflicts.setdefault(
                opening.submission,
                f"custody log line {line} records other hashes for {opening.submission} than "
                f"its first opening (line {earlier.line}): an entry was appended to the log, "
                "or the submission was opened again from other ciphertext",
            )

    def check_new(self, record: OpenedRecord) -> None:
        """A submission about to be opened (and logged) again must match its first opening.

        Raises:
            NotSealed: it decrypted to other hashes than when first opened.
        """
        earlier = self.first.get(record.id)
        if earlier is None:
            return
        attachments = tuple(
            sorted((a.path, a.sha256, a.ciphertext_sha256) for a in record.attachments)
        )
        now = (record.manifest.sha256, record.manifest.ciphertext_sha256, attachments)
        if now != earlier.fingerprint():
            raise NotSealed(
                f"it decrypts to other contents than when it was first opened (custody log "
                f"line {earlier.line}): this copy of the ciphertext differs from that one. "
                "Compare the two exports before trusting either"
            )

    def check(self, folder: Path, record: OpenedRecord, manifest: Manifest | None = None) -> None:
        """Check an opened submission's record (and manifest, if read) against the log.

        `manifest` is the parsed `testimony.json`, whose SHA-256 the caller
        has checked against `record.manifest.sha256`; here that hash is held
        to the log. Records written before issue 21 carry no hash of
        themselves in the log: their members are then compared with the
        manifest one by one.

        Raises:
            NotSealed: naming what differs, and what to do.
        """
        sid = record.id
        if sid in self.conflicts:
            raise NotSealed(f"{self.conflicts[sid]}. Do not use it until the log is examined")
        sealed = self.first.get(sid)
        if sealed is None:
            raise NotSealed(
                "the custody log has no entry for its opening: it is not the log "
                f"{sid} was opened with, or it was emptied. Give the right log with --custody"
            )
        opening = sealed.opening
        if record.manifest.sha256 != opening.manifest_sha256:
            raise NotSealed(
                f"{folder}: its manifest differs from the one the custody log recorded when it "
                f"was opened (line {sealed.line}): testimony.json and {RECORD_NAME} were edited"
            )
        logged = {(i.get("file"), i.get("sha256")) for i in opening.attachments}
        if logged != {(a.file, a.sha256) for a in record.attachments}:
            raise NotSealed(
                f"{folder}: its attachments differ from those the custody log recorded when it "
                f"was opened (line {sealed.line}): {RECORD_NAME} was edited"
            )
        if opening.record_sha256 is not None:
            try:
                data = (folder / RECORD_NAME).read_bytes()
            except OSError as exc:
                raise NotSealed(f"{folder / RECORD_NAME} cannot be read: {exc.strerror}") from None
            if hashlib.sha256(data).hexdigest() != opening.record_sha256:
                raise NotSealed(
                    f"{folder / RECORD_NAME} differs from the one the custody log recorded "
                    f"(line {sealed.line}): it was edited after opening. Open the submission "
                    "again from the ciphertext into a new folder"
                )
        else:
            if manifest is None:
                _data, manifest = read_opened_manifest(folder, record)
            _check_legacy_members(folder, record, manifest)

    def trusts(self, folder: Path, record: OpenedRecord) -> bool:
        """Whether the index page may show this record (see `check`)."""
        try:
            self.check(folder, record)
        except Changed:
            return False
        return True


def _check_legacy_members(folder: Path, record: OpenedRecord, manifest: Manifest) -> None:
    """A record without a logged hash: every member that shows or decides, against the manifest."""
    by_path = {a.path: a for a in manifest.attachments}
    differs = [
        name
        for name, ok in (
            ("received", record.received == manifest.received),
            ("language", record.language == manifest.language),
            ("thread", record.thread in (manifest.thread, manifest.document.get("thread"))),
            (
                "preview",
                record.preview is None or record.preview == report.preview(manifest.testimony),
            ),
            (
                "attachments",
                all(
                    (a.path in by_path)
                    and (by_path[a.path].name, by_path[a.path].type) == (a.name, a.type)
                    and a.status in ("", "verified")
                    for a in record.attachments
                ),
            ),
        )
        if not ok
    ]
    if differs:
        raise NotSealed(
            f"{folder / RECORD_NAME}: {', '.join(differs)} differ from the manifest: it was edited"
        )


def record_sha256(record: OpenedRecord) -> str:
    """The SHA-256 of `opened.json` as `open` writes it, for its custody entry."""
    return hashlib.sha256(record.to_bytes()).hexdigest()
