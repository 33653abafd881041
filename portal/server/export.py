"""Export across the air gap: a verified copy of committed ciphertext to transfer media.

It reads through the archive seam (`portal.server.store.Archive`): the data
directory, or the bucket several nodes publish to.

`testimony-portal export DEST [--purge]` copies every committed submission
into `DEST/submissions/<id>/` (the server's own layout, so `testimony-review
open DEST` reads it directly) and records each file's SHA-256 in
`DEST/SHA256SUMS`, which `sha256sum -c` checks on any machine.

Each file is written under a temporary name, fsynced, renamed into place, its
folder fsynced, then read back from the device and compared with the hash of
the bytes read from the server. Only when every file of a submission has been
verified does `--purge` delete the server's copy. Nothing here ever writes to
the data directory or overwrites a file on DEST: a different file already at
a destination path is reported and that submission left alone on the server.
Only ciphertext moves; this module never sees a key.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from portal.core.fsio import (
    CHUNK,
    DIR_MODE,
    append_file,
    fsync_dir,
    new_file,
    sha256_file,
    write_all,
)
from portal.core.layout import FILES_DIR, SUBMISSIONS_DIR
from portal.server.archive import LocalArchive
from portal.server.store import (
    Archive,
    ArchiveUnavailable,
    StoreError,
    SubmissionStore,
    UnknownSubmissionError,
)

SUMS_NAME = "SHA256SUMS"

Progress = Callable[[str], None]
# One file of a submission in the archive: its id and its path inside it.
Source = tuple[str, str]
Opener = Callable[[int], BinaryIO]


class ExportError(Exception):
    """The export cannot go on (DEST full, read-only or gone); the server data is untouched."""


class VerificationError(Exception):
    """A copy on DEST does not match the server's file."""


@dataclass
class ExportReport:
    copied: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    purged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    not_attempted: list[str] = field(default_factory=list)
    stopped: str | None = None
    bytes_copied: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed and self.stopped is None and not self.not_attempted


def _is_fatal(exc: OSError, dest: Path) -> str | None:
    """A reason to stop the whole export (the medium is unusable), or None."""
    if exc.filename and not Path(os.fsdecode(exc.filename)).is_relative_to(dest):
        # A problem with a file on the server side concerns one submission.
        return None
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "DEST is full"
    if exc.errno == errno.EROFS:
        return "DEST is read-only"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "DEST is not writable (permission denied)"
    if exc.errno in (errno.EIO, errno.ENODEV, errno.ENXIO, errno.ENOENT):
        return "DEST failed or was removed"
    return None


def _default_opener(fd: int) -> BinaryIO:
    return open(fd, "wb", buffering=0)


class _Exporter:
    def __init__(self, archive: Archive, dest: Path, opener: Opener) -> None:
        self.archive = archive
        self.dest = dest
        self.opener = opener
        self.sums_path = dest / SUMS_NAME
        self.sums = self._read_sums()

    def _read_sums(self) -> dict[str, str]:
        sums: dict[str, str] = {}
        try:
            text = self.sums_path.read_text("utf-8")
        except FileNotFoundError:
            return sums
        for line in text.splitlines():
            digest, sep, name = line.partition("  ")
            if sep and len(digest) == 64:
                sums[name] = digest
        return sums

    def _append_sums(self, entries: list[tuple[str, str]]) -> None:
        new = [(name, digest) for name, digest in entries if self.sums.get(name) != digest]
        if not new:
            return
        data = "".join(f"{digest}  {name}\n" for name, digest in new).encode()
        append_file(self.sums_path, data)
        self.sums.update(dict(new))

    def _copy(self, source: Source, target: Path) -> tuple[str, int]:
        """Copy one file via a temporary name; return the SHA-256 of what was read."""
        submission_id, relpath = source
        temp = target.parent / f".{target.name}.{secrets.token_hex(8)}.partial"
        digest = hashlib.sha256()
        size = 0
        try:
            # The folder is fsynced once the temporary file has its final name.
            with (
                self.archive.open_file(submission_id, relpath) as src,
                new_file(temp, opener=self.opener, sync_dir=False) as out,
            ):
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    write_all(out, chunk)
            # Keep the archive's day-coarse times: nothing finer should travel.
            stamp = self.archive.file_time(submission_id, relpath)
            os.utime(temp, (stamp, stamp))
            if target.exists() or target.is_symlink():
                raise FileExistsError(errno.EEXIST, "appeared during the copy", str(target))
            os.rename(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        fsync_dir(target.parent)
        return digest.hexdigest(), size

    def _source_hash(self, source: Source) -> str:
        digest = hashlib.sha256()
        with self.archive.open_file(*source) as src:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def _verify_or_copy(
        self, source: Source, target: Path, report: ExportReport
    ) -> tuple[str, bool]:
        """Make `target` a verified copy of `source`; return its hash and whether it was copied."""
        # A link planted on the export medium (`submissions -> /etc`) would
        # make the copy land wherever it points: no folder below DEST may be one.
        for folder in target.relative_to(self.dest).parents:
            if folder != Path(".") and (self.dest / folder).is_symlink():
                raise VerificationError(
                    f"{self.dest / folder} is a symbolic link; refusing to write through it"
                )
        target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        if target.is_symlink():
            raise VerificationError(f"{target} is a symbolic link; refusing to touch it")
        if target.exists():
            source_hash = self._source_hash(source)
            if sha256_file(target) != source_hash:
                raise VerificationError(
                    f"{target} already exists and differs from the server's file; "
                    "it was not overwritten (move it aside and re-run)"
                )
            return source_hash, False
        source_hash, size = self._copy(source, target)
        report.bytes_copied += size
        if sha256_file(target, drop_cache=True) != source_hash:
            os.unlink(target)
            raise VerificationError(
                f"{target} did not read back as written (the medium may be failing); "
                "the bad copy was removed"
            )
        return source_hash, True

    def export_one(self, submission_id: str, report: ExportReport) -> bool:
        """Copy and verify one submission; True if anything was copied.

        A new submission is assembled in `submissions/.incoming-<id>/` and
        renamed to `<id>` only when all its files are verified, so DEST never
        shows a partial submission under a real id (the reviewer would take
        it for a tampered one).
        """
        parent = self.dest / SUBMISSIONS_DIR
        final_dir = parent / submission_id
        if final_dir.is_symlink():
            raise VerificationError(f"{final_dir} is a symbolic link; refusing to touch it")
        incoming = not final_dir.exists()
        work_dir = parent / f".incoming-{submission_id}" if incoming else final_dir
        if incoming and (work_dir.is_symlink() or work_dir.exists()):
            # Left by an interrupted run: a partial copy of ciphertext the
            # server still holds. Starting again is simpler than trusting it.
            if work_dir.is_symlink() or not work_dir.is_dir():
                os.unlink(work_dir)
            else:
                shutil.rmtree(work_dir)
        copied_any = False
        verified: list[tuple[str, str]] = []
        try:
            for rel in self.archive.files(submission_id):
                digest, copied = self._verify_or_copy((submission_id, rel), work_dir / rel, report)
                copied_any = copied_any or copied
                verified.append((f"{SUBMISSIONS_DIR}/{submission_id}/{rel}", digest))
            for directory in (work_dir / FILES_DIR, work_dir):
                if directory.is_dir():
                    fsync_dir(directory)
            if incoming:
                os.rename(work_dir, final_dir)
            fsync_dir(parent)
        except BaseException:
            # A half-copied submission is of no use on DEST and takes space
            # that the next run needs; the server still holds all of it.
            if incoming:
                shutil.rmtree(work_dir, ignore_errors=True)
            raise
        self._append_sums(verified)
        return copied_any


def check_destination(dest: Path, data_dir: Path | None, *, same_disk: bool = False) -> None:
    """Refuse a `dest` that is not on a mounted medium, before anything is copied or purged.

    `export /media/NO-SUCH-DRIVE/export --purge` with the drive not mounted
    would otherwise create the whole path on the server's own disk, report
    success and purge the server's copy: the ciphertext would never leave
    the server, and the operator would believe it had. So the folder that
    holds `dest` must already exist (a mount point is never made here), and
    `dest` must be on another file system than the data directory unless
    `same_disk` says that is meant (a second disk mounted elsewhere is
    another file system; a folder beside the data directory is not). An
    export from an object store (`data_dir` None) has no disk to compare.
    """
    parent = dest.parent
    if not dest.is_dir() and not parent.is_dir():
        raise ExportError(
            f"{parent} does not exist: is the drive mounted? Mount it (or create the folder "
            "that holds DEST) and run the command again"
        )
    if data_dir is None:
        return
    probe = dest if dest.is_dir() else parent
    try:
        same = os.stat(probe).st_dev == os.stat(data_dir).st_dev
    except OSError as exc:
        raise ExportError(f"cannot examine {probe}: {exc.strerror or exc}") from exc
    if same and not same_disk:
        raise ExportError(
            f"{dest} is on the same disk as the data directory {data_dir}, so the copy would "
            "not leave the server: is the drive mounted? Add --same-disk if this is meant"
        )


def export_submissions(
    store: SubmissionStore | Archive,
    dest: Path,
    *,
    purge: bool = False,
    same_disk: bool = False,
    progress: Progress | None = None,
    opener: Opener | None = None,
) -> ExportReport:
    """Copy every committed submission to `dest`, verify it, and optionally purge the archive.

    `store` is the archive (or, for the local disk, the data directory's
    store). A submission is purged only after each of its files has been
    read back from `dest` and matched by SHA-256 (and, from a bucket, the
    download matched the SHA-256 its node recorded when publishing). The
    export holds the archive (`Archive.exclusive`: for the data directory,
    its maintenance lock, so it waits for a running seal and never sees
    submissions half-way through a swap). The export stops at the first sign
    that `dest` is unusable (full, read-only, removed) or that the archive
    cannot be reached, reporting what was done; a single submission that
    cannot be exported (a conflicting file on `dest`, a damaged copy) is
    reported and the rest go on.

    It prints nothing: `progress` gets one line per submission, and the
    command (`portal.server.cli`) reports the returned `ExportReport`.

    `dest` must be on another file system than the data directory (a
    mounted drive), unless `same_disk`; see `check_destination`.

    Raises:
        ExportError: the data directory is not a portal's, the archive
            cannot be reached, `dest` is not on a separate medium, or it
            cannot be prepared at all; nothing was copied or deleted.
        KeyboardInterrupt: passed on as it comes; what was verified on
            `dest` stays there and every other submission is untouched.
    """
    archive = LocalArchive(store) if isinstance(store, SubmissionStore) else store
    say = progress or (lambda _message: None)
    dest = Path(dest)
    opener = opener or _default_opener
    if archive.root is not None:
        if not (archive.root / SUBMISSIONS_DIR).is_dir():
            # The store is only read here (its staging area is never swept),
            # so an export can run beside a live server; a wrong path must
            # not look like an empty server.
            raise ExportError(
                f"{archive.root / SUBMISSIONS_DIR} does not exist; check PORTAL_DATA_DIR "
                "(it must be the server's data directory)"
            )
        if dest.resolve().is_relative_to(archive.root.resolve()):
            raise ExportError(f"{dest} is inside the data directory; export to a separate medium")
    check_destination(dest, archive.root, same_disk=same_disk)
    try:
        if dest.is_symlink() and not dest.is_dir():
            raise ExportError(f"{dest} is a broken symbolic link")
        if (dest / SUBMISSIONS_DIR).is_symlink():
            raise ExportError(
                f"{dest / SUBMISSIONS_DIR} is a symbolic link; export to a folder that holds "
                "none (a fresh folder on the medium)"
            )
        (dest / SUBMISSIONS_DIR).mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        reason = _is_fatal(exc, dest) or exc.strerror
        raise ExportError(f"cannot prepare {dest}: {reason}") from exc
    try:
        with archive.exclusive(
            lambda: say("waiting for a running seal, export or purge to finish...")
        ):
            return _export_all(archive, dest, purge, say, opener)
    except ArchiveUnavailable as exc:
        raise ExportError(str(exc)) from None
    except StoreError as exc:
        raise ExportError(str(exc)) from exc


def _export_all(
    archive: Archive, dest: Path, purge: bool, say: Progress, opener: Opener
) -> ExportReport:
    exporter = _Exporter(archive, dest, opener)
    ids = archive.ids()
    report = ExportReport()
    for index, submission_id in enumerate(ids, start=1):
        try:
            copied = exporter.export_one(submission_id, report)
        except ArchiveUnavailable as exc:
            report.stopped = str(exc)
            report.failed[submission_id] = str(exc)
            report.not_attempted = ids[index:]
            say(f"[{index}/{len(ids)}] {submission_id}: NOT exported: {exc}")
            break
        except (VerificationError, StoreError, UnknownSubmissionError) as exc:
            report.failed[submission_id] = str(exc)
            say(f"[{index}/{len(ids)}] {submission_id}: NOT exported: {exc}")
            continue
        except OSError as exc:
            fatal = _is_fatal(exc, dest)
            if fatal is None:
                report.failed[submission_id] = f"{exc.strerror or exc} ({exc.filename})"
                say(f"[{index}/{len(ids)}] {submission_id}: NOT exported: {exc}")
                continue
            report.stopped = fatal
            report.failed[submission_id] = fatal
            report.not_attempted = ids[index:]
            say(f"[{index}/{len(ids)}] {submission_id}: NOT exported: {fatal}")
            break
        (report.copied if copied else report.already_present).append(submission_id)
        state = "copied and verified" if copied else "already on DEST, verified"
        if purge:
            try:
                archive.purge(submission_id)
            except (ArchiveUnavailable, StoreError) as exc:
                report.failed[submission_id] = f"verified on DEST, but not purged: {exc}"
                say(f"[{index}/{len(ids)}] {submission_id}: verified, NOT purged: {exc}")
                continue
            report.purged.append(submission_id)
            state += ", purged from the server"
        say(f"[{index}/{len(ids)}] {submission_id}: {state}")
    return report
