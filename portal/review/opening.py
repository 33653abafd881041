"""Opening submissions: decrypt, check every hash, and write them out safely.

For each `submissions/<id>/` under the source, the encrypted manifest is
decrypted and checked (format, shape, and that its `id` is the directory's
name, so a manifest moved between submissions is caught). Each attachment is
decrypted straight to disk with bounded memory, and its size and SHA-256 are
compared with the manifest. Everything is written into a private work folder
`DIR/.partial-<id>/` that is renamed to `DIR/<id>/` only when the whole
submission checked out; a damaged or tampered submission leaves nothing
behind. An `opened.json` record inside makes re-runs skip what is done.
"""

from __future__ import annotations

import codecs
import datetime as dt
import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from portal.core.age import (
    AgeError,
    ArmorError,
    HeaderError,
    HMACError,
    NoIdentityMatchError,
    PayloadError,
    PrivateKey,
    Reader,
)
from portal.core.fsio import (
    CHUNK,
    DIR_MODE,
    FILE_MODE,
    ThreadedSha256,
    create_new,
    fsync_dir,
    new_file,
    replace_with_chunks,
    write_all,
)
from portal.core.layout import MANIFEST_NAME, is_valid_id
from portal.core.manifest import (
    Attachment,
    Manifest,
    ManifestError,
    parse_manifest,
    parse_manifest_text,
)
from portal.review import inert, report
from portal.review.discovery import (
    PARTIAL_PREFIX,
    find_submissions,
    leftovers,
    listed_files,
    open_ciphertext,
    remove_tree,
)
from portal.review.outcomes import Conflict, NoKey, OpenFailure, Status, Tampered, Unexpected
from portal.review.recheck import changed_since, check_ciphertext, check_opened_files
from portal.review.record import (
    MANIFEST_JSON,
    RECORD_NAME,
    IgnoredPart,
    LongField,
    OpenedAttachment,
    OpenedRecord,
    RecordedManifest,
    RecordError,
    is_plain_name,
    read_record,
)
from portal.review.safenames import NameAllocator

RESERVED_NAMES = (MANIFEST_JSON, RECORD_NAME, report.PAGE_NAME)
# A manifest holds text fields and a list of attachments; the server caps
# both far below this. A larger one is not trusted into memory. The server
# pads a manifest to a power of two, so the limit is one whole bucket plus
# age's overhead: a 16-byte tag per 64 KiB chunk and room for the header.
MAX_MANIFEST_PLAINTEXT = 64 * 1024 * 1024
MAX_MANIFEST_CIPHERTEXT = (
    MAX_MANIFEST_PLAINTEXT + 16 * (MAX_MANIFEST_PLAINTEXT // 65536 + 1) + 65536
)

SayFn = Callable[[str], None]
BytesFn = Callable[[int], None]
OpenedFn = Callable[[OpenedRecord], None]


@dataclass
class Outcome:
    submission_id: str
    status: Status
    # Set when the status is FAILED: why, with its kind and label.
    failure: OpenFailure | None = None

    @property
    def reason(self) -> str:
        return str(self.failure) if self.failure is not None else ""

    @property
    def kind(self) -> str:
        return self.failure.label if self.failure is not None else ""


@dataclass
class OpenReport:
    outcomes: list[Outcome] = field(default_factory=list)
    index_path: Path | None = None

    def _with(self, status: Status) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def opened(self) -> list[Outcome]:
        return self._with(Status.OPENED)

    @property
    def skipped(self) -> list[Outcome]:
        return self._with(Status.ALREADY_OPENED)

    @property
    def failed(self) -> list[Outcome]:
        return self._with(Status.FAILED)


class _Cancelled(Exception):
    """Raised inside a worker when the run or its submission is being abandoned."""


class HashingReader:
    """A read-only file wrapper that hashes and counts every byte read through it.

    With `threaded`, the hash runs on a helper thread (`fsio.ThreadedSha256`)
    beside the decryption: `open` of a large file hashes its ciphertext and
    its plaintext, and doing one of the two beside the rest took a 1 GiB
    `open` from 424-490 to 652-682 MiB/s on the 2-core machine
    (bench/bench_speed.py, issue 14). Use it with `with`, which ends the thread.
    """

    def __init__(
        self, raw: BinaryIO, on_bytes: BytesFn | None = None, *, threaded: bool = False
    ) -> None:
        self._raw = raw
        self._on_bytes = on_bytes
        self.sha256: ThreadedSha256 | hashlib._Hash = (
            ThreadedSha256() if threaded else hashlib.sha256()
        )
        self.size = 0

    def __enter__(self) -> HashingReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        if isinstance(self.sha256, ThreadedSha256):
            self.sha256.close()

    def read(self, size: int = -1, /) -> bytes:
        data = self._raw.read(size)
        if data:
            self.sha256.update(data)
            self.size += len(data)
            if self._on_bytes:
                self._on_bytes(len(data))
        return data

    def readinto(self, buffer: memoryview) -> int:
        # The age reader fills its own buffer with this when it exists,
        # which saves allocating and copying a bytes object per read.
        count = self._raw.readinto(buffer) or 0  # type: ignore[attr-defined]
        if count:
            self.sha256.update(buffer[:count])
            self.size += count
            if self._on_bytes:
                self._on_bytes(count)
        return count

    def drain(self) -> None:
        """Read (and hash) whatever the decryptor left, so the hash covers the whole file."""
        while self.read(CHUNK):
            pass

    def hexdigest(self) -> str:
        return self.sha256.hexdigest()


def _age_failure(what: str, exc: AgeError, *, attachment: bool = False) -> OpenFailure:
    if isinstance(exc, NoIdentityMatchError) and attachment:
        # The manifest opened with these identities, so an honest server
        # encrypted every file of this submission to the same keys.
        return Tampered(
            f"{what} is encrypted to another key than its manifest: it was substituted "
            "or its header was altered",
        )
    if isinstance(exc, NoIdentityMatchError):
        return NoKey(
            f"{what}: none of the given identities can open it (it may be encrypted to "
            "another key: pass that identity too with another --identity), or its header "
            "was altered",
        )
    if isinstance(exc, HMACError):
        detail = "its header was altered (header MAC mismatch)"
    elif isinstance(exc, PayloadError):
        detail = "its encrypted content is truncated or altered"
    elif isinstance(exc, ArmorError | HeaderError):
        detail = "it is not a well-formed age file"
    else:
        detail = str(exc)
    return Tampered(f"{what}: {detail}")


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
        self._files: ThreadPoolExecutor | None = None

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
                self._files = files
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
        failures = {o.submission_id: f"{o.kind}: {o.reason}" for o in result.failed}
        checked = {o.submission_id: o.status for o in [*result.opened, *result.skipped]}
        result.index_path = report.write_index(
            self.out_dir, load_opened(self.out_dir), failures, checked
        )
        return result

    def _prepare_one(self, source_dir: Path, submission_id: str) -> _Prepared:
        try:
            return self._prepare_checked(source_dir, submission_id)
        except _Cancelled:
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
        try:
            record, manifest = self._decrypt_into(source_dir, submission_id, work)
            page = report.render_submission_page(
                record, manifest.document, text_previews(work, record)
            )
            report.write_atomically(work / report.PAGE_NAME, page)
            create_new(work / RECORD_NAME, record.to_bytes(), sync_dir=False)
            fsync_dir(work)
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

    def _decrypt_into(
        self, source_dir: Path, submission_id: str, work: Path
    ) -> tuple[OpenedRecord, Manifest]:
        by_rel = listed_files(source_dir)
        if MANIFEST_NAME not in by_rel:
            raise Tampered(f"{MANIFEST_NAME} is missing")
        text, manifest_hash, manifest_cipher_hash = self._decrypt_manifest(
            by_rel[MANIFEST_NAME], work / MANIFEST_JSON
        )
        try:
            manifest = parse_manifest_text(text)
        except ManifestError as exc:
            raise Tampered(str(exc)) from None
        del text
        if manifest.id != submission_id:
            raise Tampered(
                "the manifest belongs to another submission (its id does not match the folder "
                "name): it was moved or substituted",
            )
        allocator = NameAllocator(work, reserved=RESERVED_NAMES)
        jobs = []
        for entry in manifest.attachments:
            cipher_path = by_rel.get(entry.path)
            if cipher_path is None:
                raise Tampered(f"{entry.path}, listed in the manifest, is missing")
            jobs.append((entry, cipher_path, allocator.create(entry.name)))
        attachments = self._decrypt_attachments(jobs, work)
        long_fields = _write_long_fields(manifest, allocator, work)
        listed = {entry.path for entry in manifest.attachments} | {MANIFEST_NAME}
        ignored = tuple(
            IgnoredPart(rel, self._check_unlisted(by_rel[rel], rel))
            for rel in sorted(set(by_rel) - listed)
        )
        record = OpenedRecord(
            id=submission_id,
            opened=self.now().replace(microsecond=0).isoformat(),
            received=manifest.received,
            preview=report.preview(manifest.testimony),
            language=manifest.language,
            thread=manifest.thread,
            manifest=RecordedManifest(MANIFEST_JSON, manifest_hash, manifest_cipher_hash),
            attachments=attachments,
            long_fields=long_fields,
            ignored_empty_parts=ignored,
            ciphertext_sizes={rel: path.stat().st_size for rel, path in by_rel.items()},
        )
        return record, manifest

    def _decrypt_manifest(self, path: Path, dest: Path) -> tuple[str, str, str]:
        """Decrypt the manifest into `dest`; return its text and plaintext and ciphertext hashes.

        Streamed: the plaintext goes to disk and through the hash and the
        UTF-8 decoder chunk by chunk, so a 60 MB testimony is held in memory
        only as the decoded text (the bytes and the ciphertext never are).
        """
        with open_ciphertext(path) as raw:
            if os.fstat(raw.fileno()).st_size > MAX_MANIFEST_CIPHERTEXT:
                raise Tampered(f"{MANIFEST_NAME} is implausibly large")
            reader = HashingReader(raw)
            decoder = codecs.getincrementaldecoder("utf-8")()
            digest = hashlib.sha256()
            parts = []
            try:
                # The work folder is fsynced once, when it is complete.
                with new_file(dest, sync_dir=False) as out:
                    for chunk in Reader(cast(BinaryIO, reader), self.identities).chunks():
                        digest.update(chunk)
                        write_all(out, chunk)
                        parts.append(decoder.decode(chunk))
                    parts.append(decoder.decode(b"", final=True))
            except AgeError as exc:
                raise _age_failure(MANIFEST_NAME, exc) from None
            except UnicodeDecodeError:
                raise Tampered("manifest is not UTF-8") from None
            reader.drain()
        text = "".join(parts)
        del parts
        return text, digest.hexdigest(), reader.hexdigest()

    def _decrypt_attachments(
        self, jobs: list[tuple[Attachment, Path, str]], work: Path
    ) -> tuple[OpenedAttachment, ...]:
        """Decrypt and check a submission's attachments concurrently; all or nothing."""
        abandon = threading.Event()
        pool = self._files
        assert pool is not None
        futures = [
            pool.submit(self._decrypt_attachment, entry, path, work, name, abandon)
            for entry, path, name in jobs
        ]
        wait(futures, return_when=FIRST_EXCEPTION)
        if any(f.done() and f.exception() is not None for f in futures):
            abandon.set()
        wait(futures)
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            # A real failure explains more than the cancellations it caused.
            real = [e for e in errors if not isinstance(e, _Cancelled)]
            raise (real or errors)[0]  # type: ignore[misc]
        return tuple(future.result() for future in futures)

    def _decrypt_attachment(
        self, entry: Attachment, path: Path, work: Path, name: str, abandon: threading.Event
    ) -> OpenedAttachment:
        def check(count: int) -> None:
            if abandon.is_set() or self._cancel.is_set():
                raise _Cancelled("cancelled")
            if self.on_bytes:
                self.on_bytes(count)

        dest = work / name
        with open_ciphertext(path) as raw, HashingReader(raw, check, threaded=True) as reader:
            try:
                # The plaintext appears under its name only once every chunk
                # has verified: a cut or altered file leaves nothing behind.
                plaintext = Reader(cast(BinaryIO, reader), self.identities).chunks()
                size, digest = replace_with_chunks(dest, plaintext, mode=FILE_MODE)
            except AgeError as exc:
                raise _age_failure(entry.path, exc, attachment=True) from None
            reader.drain()
            ciphertext_sha256 = reader.hexdigest()
        if size != entry.size or digest != entry.sha256:
            raise Tampered(
                f"{entry.path}: the decrypted file's SHA-256 does not match the manifest"
            )
        view = inert.decide(name, inert.read_head(dest))
        return OpenedAttachment(
            path=entry.path,
            name=entry.name,
            type=entry.type,
            file=name,
            size=size,
            sha256=digest,
            ciphertext_sha256=ciphertext_sha256,
            view=view.kind,
            view_reason=view.reason,
        )

    def _check_unlisted(self, path: Path, rel: str) -> str:
        # The server stores the empty, unnamed file part a browser sends when
        # no file was chosen, but leaves it out of the manifest. Such a file
        # decrypts to nothing; anything more is not what the server wrote.
        with open_ciphertext(path) as raw:
            reader = HashingReader(raw)
            try:
                for chunk in Reader(cast(BinaryIO, reader), self.identities).chunks():
                    if chunk:
                        raise Tampered(f"{rel} holds data but is not listed in the manifest")
            except AgeError as exc:
                raise _age_failure(rel, exc) from None
            reader.drain()
        return reader.hexdigest()


def _write_long_fields(
    manifest: Manifest, allocator: NameAllocator, work: Path
) -> tuple[LongField, ...]:
    """Write each field the page cannot show in full to a text file of its own.

    The text is encoded and written a slice at a time, so a 60 MB testimony
    costs no second copy in memory.
    """
    written = []
    shown = report.shown_chars(manifest.fields)
    for field_name, value in manifest.fields.items():
        if shown[field_name] >= len(value):
            continue
        name = allocator.create(f"{field_name or 'field'}.txt")
        digest, size = hashlib.sha256(), 0
        fd = os.open(work / name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            for start in range(0, len(value), CHUNK):
                data = value[start : start + CHUNK].encode("utf-8")
                digest.update(data)
                size += len(data)
                write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        written.append(LongField(field_name, name, size, digest.hexdigest()))
    return tuple(written)


def text_previews(folder: Path, record: OpenedRecord) -> dict[str, str]:
    """The start of each plain-text attachment, to show (escaped) on the submission page."""
    previews = {}
    for entry in record.attachments:
        if entry.view == inert.TEXT and is_plain_name(entry.file):
            head = inert.read_head(folder / entry.file)
            previews[entry.file] = head.decode("utf-8", errors="replace")
    return previews


def load_opened(out_dir: Path) -> list[tuple[OpenedRecord, dict[str, Any]]]:
    """Every opened submission in `out_dir`: its record and what the index shows of it.

    The index needs the date, the language and the start of the testimony,
    which the record keeps; reading every manifest again would cost a run
    over thousands of submissions (or one of 60 MB) far more. A folder whose
    record is damaged is left out (`verify` names it).
    """
    found = []
    for entry in sorted(os.scandir(out_dir), key=lambda e: e.name):
        if not is_valid_id(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        folder = Path(entry.path)
        try:
            record = read_record(folder)
        except RecordError:
            continue
        if record is None:
            continue
        preview = record.preview
        if preview is None:
            # Opened by an older version, which kept no preview.
            try:
                manifest = parse_manifest((folder / MANIFEST_JSON).read_bytes())
            except (OSError, ManifestError):
                continue
            preview = report.preview(manifest.testimony)
        shown = {
            "thread": record.thread,
            "received": record.received,
            "language": record.language,
            "fields": {"testimony": preview},
        }
        found.append((record, shown))
    return found


__all__ = [
    "OpenReport",
    "Opener",
    "Outcome",
    "load_opened",
]
