"""The ciphertext store on disk (staging, commit, list, purge), and the archive seam.

`SubmissionStore` is the local disk every node writes to as a witness's
bytes arrive. `Archive` is the one seam behind which committed submissions
rest until they are exported: the data directory itself (`LocalArchive`,
portal/server/archive.py, the default) or an S3-compatible bucket shared by
several nodes (`ObjectArchive`, portal/server/objectstore.py). Nothing above
the seam (the web app, the seal, export, the mailbox) knows which is in use.

Layout under the data directory (see docs/FORMAT.md)::

    staging/<random>/     a submission being received; removed on failure,
                          swept at start-up
    submissions/<id>/     committed: testimony.age and files/<n>.age

The store only ever sees ciphertext; it knows nothing of age or Flask. Every
path it hands out is resolved under its root, and it refuses symlinks, so a
tampered data directory cannot make it read or delete anything elsewhere.
Its files are created, written and fsynced through `portal.core.fsio`.

The folder names, ids, the attachment path grammar and the rounding of
times to the day live in `portal.core.layout`, which the reviewer shares.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import queue
import random
import shutil
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from portal.core.fsio import (
    DIR_MODE,
    flocked,
    fsync_dir,
    fsync_dir_fd,
    open_new,
    open_unbuffered,
    start_writeback,
    write_all,
)
from portal.core.layout import (
    FILES_DIR,
    MANIFEST_NAME,
    STAGING_DIR,
    SUBMISSIONS_DIR,
    LayoutError,
    day_timestamp,
    is_valid_id,
    new_id,
    submission_files,
)

# Lock files at the top of the data directory. They are created once and
# never written, so their times say only when the directory was set up.
# Maintenance (seal, export, purge) holds MAINTENANCE_LOCK exclusively; a
# commit or a new staging folder holds COMMIT_LOCK shared, and the seal takes
# it exclusively only while it swaps directories.
MAINTENANCE_LOCK = ".maintenance.lock"
COMMIT_LOCK = ".commit.lock"


class StoreError(Exception):
    """The store could not do what was asked; nothing was committed."""


class StorageFullError(StoreError):
    """The disk filled up (or hit a quota) while writing a submission."""


class UnknownSubmissionError(StoreError):
    """No committed submission has that id (or the id is malformed)."""


class ArchiveUnavailable(StoreError):
    """The archive cannot be reached or used now; the message names what to fix.

    For a bucket this is an unreachable endpoint, refused credentials, a
    missing bucket or a missing permission. Submissions already in a node's
    spool stay there and are published when the archive is back.
    """


def translate_os_error(exc: OSError) -> StoreError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError("the disk is full")
    return StoreError(f"storage error: {exc.strerror or exc}")


class SharedSync:
    """One directory's fsync, shared by the threads that need it at the same moment.

    A commit is durable once its rename is, that is once an fsync of the
    directory that *started after* the rename has returned. While one thread
    runs that fsync, the commits that arrive wait; the next fsync, started
    when the running one ends, covers every one of them at once, instead of
    one fsync each. No caller ever returns before an fsync that began after
    its call; if that fsync fails, its caller gets the error and the others
    it would have covered run one of their own.
    """

    def __init__(self, sync: Callable[[], None]) -> None:
        self._sync = sync
        self._lock = threading.Condition()
        self._tickets = 0  # calls so far: a call's ticket is taken after its change
        self._durable = 0  # every ticket up to this one is covered by a finished fsync
        self._running = False
        self.syncs = 0  # fsyncs run, for tests and benchmarks

    def __call__(self) -> None:
        with self._lock:
            self._tickets += 1
            ticket = self._tickets
            while self._durable < ticket:
                if self._running:
                    self._lock.wait()
                    continue
                # No fsync is running: this thread runs one for every ticket
                # taken so far, its own included, all taken before it starts.
                covers = self._tickets
                self._running = True
                self._lock.release()
                try:
                    self._sync()
                    self.syncs += 1
                finally:
                    self._lock.acquire()
                    self._running = False
                    self._lock.notify_all()
                self._durable = max(self._durable, covers)


class StagedFile:
    """A write-only file inside a staging directory, durably closed with `finish()`.

    Writes are handed to a helper thread, so the disk copies one chunk of
    ciphertext while the request thread parses and encrypts the next (the
    kernel's write and fsync release the GIL). The queue is bounded, so
    memory stays bounded however fast the witness sends. Every `SYNC_EVERY`
    bytes the thread asks the kernel to start writing the file out, without
    waiting for it (an fdatasync here stopped the writer, and so the upload,
    while the disk caught up), so the final fsync of a large upload has
    little left to do. An error in the thread (a full disk) is
    raised by the next `write()` or by `finish()`.

    The first `INLINE_BYTES` are written by the caller itself, and the
    thread starts only for a file that grows past them: most files (every
    manifest, a short attachment) are a few kilobytes, and starting and
    joining a thread for them cost more than the write.

    Past them, writes are gathered into pieces of `PIECE_BYTES` before they
    are handed over: the age writer produces 64 KiB chunks, and waking the
    thread for each one cost more CPU than the hashing of it (issue 14). At
    most `QUEUE_DEPTH` pieces wait, plus the one being gathered, so a file
    being written holds at most (QUEUE_DEPTH + 1) x PIECE_BYTES = 2.25 MiB.
    """

    QUEUE_DEPTH = 8
    PIECE_BYTES = 256 * 1024
    SYNC_EVERY = 32 * 1024 * 1024
    INLINE_BYTES = 1024 * 1024

    def __init__(self, raw: BinaryIO, path: Path) -> None:
        self._raw = raw
        self.path = path
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=self.QUEUE_DEPTH)
        self._error: OSError | None = None
        self._closed = False
        self._inline = 0
        self._thread: threading.Thread | None = None
        # What the writer thread has not been handed yet (under PIECE_BYTES).
        self._piece = bytearray()
        self._keep_inline = False
        self._unsynced = 0

    def _drain(self) -> None:
        unsynced = 0
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue  # keep emptying the queue so the writer never blocks
            try:
                write_all(self._raw, item)
                unsynced += len(item)
                if unsynced >= self.SYNC_EVERY:
                    start_writeback(self._raw.fileno())  # the server never reads it back
                    unsynced = 0
            except OSError as exc:
                self._error = exc

    def _raise_pending(self) -> None:
        if self._error is not None:
            raise translate_os_error(self._error) from self._error

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._raise_pending()
        if self._closed:
            raise StoreError("write to a finished file")
        if self._thread is None:
            if self._keep_inline or self._inline + len(data) <= self.INLINE_BYTES:
                try:
                    write_all(self._raw, data)
                    self._unsynced += len(data)
                    if self._unsynced >= self.SYNC_EVERY:
                        start_writeback(self._raw.fileno())  # the server never reads it back
                        self._unsynced = 0
                except OSError as exc:
                    self._error = exc
                    raise translate_os_error(exc) from exc
                self._inline += len(data)
                return len(data)
            self._thread = threading.Thread(target=self._drain, name="staged-write", daemon=True)
            self._thread.start()
        # Gathering copies: the caller (the age writer) reuses its buffer.
        self._piece += data
        if len(self._piece) >= self.PIECE_BYTES:
            self._hand_over()
        return len(data)

    def _hand_over(self) -> None:
        if self._piece:
            self._queue.put(bytes(self._piece))
            self._piece.clear()

    def fileno(self) -> int:
        """The file's descriptor, for a sealer that writes it (`portal.server.sealer`)."""
        return self._raw.fileno()

    def keep_inline(self) -> None:
        """Write every byte on the caller's thread, however large the file grows.

        For a caller that is itself a helper thread (the intake's
        `PieceWorker`, which encrypts an upload beside the request's
        thread): a second thread would only add hand-overs and copies. The
        request's thread is still never the one that waits for the disk.
        """
        if self._thread is None:
            self._keep_inline = True

    @property
    def threaded(self) -> bool:
        """Whether this file grew large enough to be written by a helper thread."""
        return self._thread is not None

    def _stop(self) -> None:
        if not self._closed:
            self._closed = True
            if self._thread is not None:
                self._hand_over()
                self._queue.put(None)
                self._thread.join()

    def finish(self) -> None:
        """Write out, fsync and close: after this the bytes are on disk."""
        try:
            self._stop()
            self._raise_pending()
            self._raw.flush()
            os.fsync(self._raw.fileno())
        except OSError as exc:
            raise translate_os_error(exc) from exc
        finally:
            self._close_raw()

    def abandon(self) -> None:
        self._stop()
        self._close_raw()

    def _close_raw(self) -> None:
        # Closing may itself fail with ENOSPC when buffered bytes are flushed;
        # a failed file is deleted with its staging directory, so that error
        # changes nothing.
        with contextlib.suppress(OSError):
            self._raw.close()


class Staging:
    """A submission being received: a private directory that holds ciphertext only."""

    def __init__(self, store: SubmissionStore, path: Path, owner_fd: int) -> None:
        self._store = store
        self.path = path
        # An open descriptor of the staging folder holding an exclusive
        # flock: the sign that a live request owns it. The kernel drops the
        # lock when the worker dies, and the sweep then removes the folder.
        # A request that forgets its staging releases it when collected.
        self._owner = weakref.finalize(self, os.close, owner_fd)
        self.owner_fd = owner_fd  # also fsyncs the folder at commit
        # The id is chosen now, not at commit, so that the encrypted manifest
        # can name it: the reviewer then detects a manifest moved between
        # submission directories. The staging name is a different random
        # value, so nothing links a staging directory to its submission.
        self.submission_id = new_id()
        self._open: list[StagedFile] = []
        self._attachments = 0
        self.closed = False

    def _create(self, relpath: str) -> StagedFile:
        if self.closed:
            raise StoreError("this submission is already committed or discarded")
        path = self.path / relpath
        try:
            if path.parent != self.path:  # files/ for attachments; the manifest sits at the top
                path.parent.mkdir(mode=DIR_MODE, exist_ok=True)
                if path.parent.is_symlink():
                    raise StoreError(f"{path.parent} is a symbolic link; refusing to use it")
            fd = open_new(path)
            raw = self._store.opener(fd)
        except OSError as exc:
            raise translate_os_error(exc) from exc
        staged = StagedFile(raw, path)
        self._open.append(staged)
        return staged

    def create_attachment(self) -> tuple[str, StagedFile]:
        """Open the next `files/<n>.age`; returns its path relative to the submission."""
        self._attachments += 1
        relpath = f"{FILES_DIR}/{self._attachments}.age"
        return relpath, self._create(relpath)

    def create_manifest(self) -> StagedFile:
        return self._create(MANIFEST_NAME)

    def tree(self) -> list[tuple[Path, list[str]]]:
        """Each folder of this staging directory with its files, innermost first.

        A submission without attachments holds its manifest only, and says
        so without reading the folder back; any other is walked.
        """
        if self._attachments == 0:
            manifest = self.path / MANIFEST_NAME
            return [
                (self.path, [MANIFEST_NAME] if any(f.path == manifest for f in self._open) else [])
            ]
        return [(Path(top), files) for top, _dirs, files in os.walk(self.path, topdown=False)]

    def discard(self) -> None:
        """Delete everything staged. Safe to call more than once."""
        if self.closed:
            return
        self.closed = True
        for staged in self._open:
            staged.abandon()
        shutil.rmtree(self.path, ignore_errors=True)
        self.release()

    def release(self) -> None:
        """Give up ownership of the folder (after commit or discard)."""
        self._owner()  # closes the descriptor once; later calls do nothing


class SubmissionStore:
    """The data directory: staging and committed submissions, ciphertext only."""

    def __init__(self, root: Path, *, opener: Callable[[int], BinaryIO] | None = None) -> None:
        self.root = Path(root)
        self.staging_dir = self.root / STAGING_DIR
        self.submissions_dir = self.root / SUBMISSIONS_DIR
        # The opener turns a raw descriptor into a file object. It is a seam
        # for tests that inject faults such as ENOSPC half-way through a file.
        self.opener: Callable[[int], BinaryIO] = opener or open_unbuffered
        self.maintenance_lock = self.root / MAINTENANCE_LOCK
        self.commit_lock = self.root / COMMIT_LOCK
        # Commits of one worker's threads at the same moment share the fsync
        # that makes their renames into submissions/ durable.
        self.sync_submissions_dir = SharedSync(lambda: fsync_dir(self.submissions_dir))

    def initialise(self) -> None:
        """Create the directories (0700) and the lock files.

        A seal killed half way is finished by `seal.recover_if_idle`, which
        the server runs at start-up: the store knows nothing of the seal.
        """
        for path in (self.root, self.staging_dir, self.submissions_dir):
            path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            if path.is_symlink():
                raise StoreError(f"{path} is a symbolic link; refusing to use it")
            os.chmod(path, DIR_MODE)
        for lock in (self.maintenance_lock, self.commit_lock):
            with flocked(lock, fcntl.LOCK_SH):
                pass  # creates the file once; its times never change after
        self.sweep_staging()

    @contextlib.contextmanager
    def maintenance(self, *, wait: bool = True) -> Iterator[None]:
        """Hold the maintenance lock: one seal, export or purge at a time.

        Raises:
            BlockingIOError: `wait` is false and another process holds it.
        """
        operation = fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(flocked(self.maintenance_lock, operation))
            except OSError as exc:
                # A read-only data directory (a mounted copy) cannot hold a
                # new lock file, and nothing can seal or purge it either.
                if exc.errno != errno.EROFS:
                    raise
            yield

    def sweep_staging(self) -> int:
        """Remove every staging directory; run at start-up, before any request."""
        removed = 0
        for entry in os.scandir(self.staging_dir):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
            removed += 1
        return removed

    def sweep_abandoned_staging(self) -> int:
        """Remove staging folders that no live request owns; safe while serving.

        A request holds an exclusive flock on its folder until it commits or
        discards. A folder whose lock can be taken was left by a worker that
        died (SIGKILL, the OOM killer, a hung-worker timeout): nothing will
        ever finish it, and its ciphertext is useless without its manifest.
        """
        removed = 0
        for entry in os.scandir(self.staging_dir):
            path = Path(entry.path)
            if not entry.is_dir(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                removed += 1
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue  # committed or discarded meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # a live request owns it
            try:
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
            finally:
                os.close(fd)
        return removed

    def begin(self) -> Staging:
        while True:
            path = self.staging_dir / new_id()
            try:
                with flocked(self.commit_lock, fcntl.LOCK_SH):
                    path.mkdir(mode=DIR_MODE)
                owner_fd = _lock_directory(path)
            except OSError as exc:
                raise translate_os_error(exc) from exc
            if owner_fd is not None:
                return Staging(self, path, owner_fd)

    def commit(self, staging: Staging) -> str:
        """Make a staged submission durable and visible, atomically.

        Every file was fsynced when finished; here the directories are
        fsynced, times coarsened to the day, and the whole directory renamed
        into `submissions/` in one step, so a crash leaves either nothing or
        a complete submission.
        """
        if staging.closed:
            raise StoreError("this submission is already committed or discarded")
        submission_id = staging.submission_id
        target = self.submissions_dir / submission_id
        stamp = day_timestamp()
        try:
            for dirpath, filenames in staging.tree():
                for name in filenames:
                    os.utime(os.path.join(dirpath, name), (stamp, stamp))
                if dirpath == staging.path:
                    fsync_dir_fd(staging.owner_fd)  # open already, as its owner
                else:
                    fsync_dir(dirpath)
                os.utime(dirpath, (stamp, stamp))
            # Shared with other commits; a seal takes it exclusively while it
            # swaps `submissions/`, so no commit lands in the old copy. Every
            # commit waiting for the shared fsync still holds its own share,
            # so the fsync is always of the `submissions/` it renamed into.
            with flocked(self.commit_lock, fcntl.LOCK_SH):
                os.rename(staging.path, target)
                self.sync_submissions_dir()
                # The rename moved the directories' clocks to now: set them back.
                os.utime(self.submissions_dir, (stamp, stamp))
                os.utime(self.staging_dir, (stamp, stamp))
        except OSError as exc:
            staging.discard()
            raise translate_os_error(exc) from exc
        staging.closed = True
        staging.release()
        return submission_id

    def ids(self) -> list[str]:
        """Committed submission ids, sorted (they are random, so this reveals no order)."""
        return sorted(
            entry.name
            for entry in os.scandir(self.submissions_dir)
            if entry.is_dir(follow_symlinks=False) and is_valid_id(entry.name)
        )

    def path(self, submission_id: str) -> Path:
        """The directory of one committed submission, refusing anything odd."""
        if not is_valid_id(submission_id):
            raise UnknownSubmissionError(f"not a submission id: {submission_id!r}")
        path = self.submissions_dir / submission_id
        if path.is_symlink() or not path.is_dir():
            raise UnknownSubmissionError(f"no submission {submission_id}")
        return path

    def files(self, submission_id: str) -> Iterator[Path]:
        """The ciphertext files of one submission: the manifest first, then attachments."""
        try:
            return iter(submission_files(self.path(submission_id)))
        except LayoutError as exc:
            raise StoreError(str(exc)) from exc

    def purge(self, submission_id: str) -> None:
        """Delete one committed submission; call it holding `maintenance()`."""
        shutil.rmtree(self.path(submission_id))
        fsync_dir(self.submissions_dir)

    def free_bytes(self) -> int:
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize


def _lock_directory(path: Path) -> int | None:
    """Open `path` and hold an exclusive flock on it; None if a sweep removed it first."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # A sweep may have taken the lock between mkdir and flock and
        # deleted the folder: then this descriptor names a removed folder.
        held = os.fstat(fd)
        if held.st_nlink == 0 or os.stat(path).st_ino != held.st_ino:
            raise FileNotFoundError(path)
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


class FormClaim(Enum):
    """What the archive says of a form's one-time value, across every node."""

    CLAIMED = "claimed"  # this request now holds it
    STORING = "storing"  # another request (perhaps on another node) is storing it
    STORED = "stored"  # a submission was stored with it


@dataclass
class PublishReport:
    """What one publish (at the seal) did: how many submissions reached the archive."""

    published: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    stopped: str | None = None
    requests: int = 0
    claims_forgotten: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed and self.stopped is None


if TYPE_CHECKING:
    from collections.abc import Sequence

    from portal.core.replykey import KdfCost
    from portal.core.replysig import ReplySigner
    from portal.server.mailbox import ReplyBox


class Archive(Protocol):
    """Where committed submissions rest until export; what the nodes of a deployment share.

    Every node writes a witness's ciphertext into its own `spool` (a
    `SubmissionStore`) and answers "received" once it is durable there.
    `publish()`, run at the seal, moves what the spool holds into the
    archive. Export reads and purges through `ids`, `files`, `open_file` and
    `purge`. Replies, the receipts' salt and the claims of one-time form
    values live here too, so that a witness may reach any node.
    """

    kind: str
    spool: SubmissionStore
    #: The local folder the archive keeps submissions in, or None for a bucket.
    root: Path | None

    def describe(self) -> str:
        """One line naming where submissions rest (for `check` and `serve`)."""
        ...

    def verify(self) -> list[str]:
        """Prove the archive usable (reach, credentials, bucket, write); notes to show.

        Raises:
            ArchiveUnavailable: one line naming the setting to fix.
        """
        ...

    def publish(self, *, rng: random.Random | None = None, reserve_bytes: int = 0) -> PublishReport:
        """At the seal: make what the spool holds part of the archive, in random order.

        Call it holding `spool.maintenance()`.
        """
        ...

    def exclusive(self, on_wait: Callable[[], None] | None = None) -> AbstractContextManager[None]:
        """Hold the archive for an export or purge (one at a time, never mid-seal).

        `on_wait` is called once if it must first wait for another holder.
        """
        ...

    def ids(self) -> list[str]:
        """Ids of the complete submissions in the archive, sorted."""
        ...

    def files(self, submission_id: str) -> list[str]:
        """One submission's files, relative to it: the manifest first, then attachments."""
        ...

    def open_file(self, submission_id: str, relpath: str) -> AbstractContextManager[BinaryIO]:
        """Read one file of a submission, as stored."""
        ...

    def file_time(self, submission_id: str, relpath: str) -> float:
        """The file's time, coarsened to the day, to keep on an exported copy."""
        ...

    def purge(self, submission_id: str) -> None:
        """Delete one submission from the archive; call it inside `exclusive()`."""
        ...

    def replies(self, signers: Sequence[ReplySigner] = (), *, reply_days: int = 90) -> ReplyBox:
        """The replies waiting for witnesses; only those signed by `signers` are kept or shown."""
        ...

    def receipt_salt(self, cost: KdfCost | None = None) -> bytes:
        """The deployment's receipt salt, created the first time (shared by every node).

        With `cost`, also that it is the cost the receipts were made with (issue 21).
        """
        ...

    def claim_form(self, key: str) -> FormClaim:
        """Claim a form's one-time value (a keyed hash of it) for this request."""
        ...

    def form_stored(self, key: str) -> None:
        """Record that the form claimed with `key` was stored."""
        ...

    def release_form(self, key: str) -> None:
        """Give a claim back: its submission was not stored, the form may be sent again."""
        ...
