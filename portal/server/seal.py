"""The daily seal: forget, at rest, when each submission arrived.

A commit coarsens modification times to the day, but the file system keeps
more: every file and folder has a ctime and a birth time (statx) of the
exact moment it was written, inode numbers grow in order of arrival, and
`submissions/` and `staging/` change their own times with every attempt.
The seal rewrites what arrived since the last seal into fresh files and
folders, one submission after another in a random order, and puts them in a
fresh `submissions/` folder that is swapped in atomically. Afterwards every
ctime and birth time under the data directory lies inside the seal's own run,
in an order chosen at random, and mtimes say only the day. Ids do not change,
so export, purge and the reviewer's copies keep working.

Crash safety rests on two rules. A copy is assembled under a name that is
not an id (`.part-<id>`) and renamed to its id only once every byte and
folder is fsynced, so any entry named by an id is complete; and an original
leaves `submissions/` (by rename, to the trash) only after its copy is
complete. `recover_interrupted_seal()` therefore moves every complete entry
back into `submissions/` and deletes the rest: whatever the moment of the
crash, nothing is lost and nothing half-copied survives.

Work folder (inside the data directory, so every rename stays on one file
system)::

    .seal/new/      the next `submissions/`; after the swap, the old one
    .seal/old/      the old `submissions/` (only if RENAME_EXCHANGE is missing)
    .seal/trash/    originals whose copies are complete, being deleted
    .seal/staging   the next `staging/`, then the old one
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import errno
import fcntl
import os
import random
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from portal.core.fsio import (
    CHUNK,
    DIR_MODE,
    READ_FLAGS,
    flocked,
    fsync_dir,
    new_file,
    replace_file,
    write_all,
)
from portal.core.layout import (
    MANIFEST_NAME,
    STAGING_DIR,
    LayoutError,
    day_date,
    day_floor,
    day_timestamp,
    is_valid_id,
    submission_files,
)
from portal.server.store import SubmissionStore

WORK_DIR = ".seal"
STATE_FILE = ".sealed"
PART_PREFIX = ".part-"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2

Checkpoint = Callable[[str], None]


class SealError(Exception):
    """The seal could not finish; the data directory was left complete."""


@dataclass
class SealReport:
    rewritten: int = 0
    already_sealed: int = 0
    arrived_during_seal: int = 0
    not_sealed: dict[str, str] = field(default_factory=dict)
    staging_recreated: bool = False

    @property
    def ok(self) -> bool:
        return not self.not_sealed


def exchange(first: Path, second: Path) -> None:
    """Swap two paths in one step (renameat2 with RENAME_EXCHANGE).

    Raises:
        OSError: ENOSYS or EINVAL when the C library or file system lacks it.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available", str(first))
    result = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(first))


def _read_state(store: SubmissionStore) -> tuple[dt.datetime, float] | None:
    """The last seal's start, and the midnight from which the next must rewrite."""
    try:
        lines = (store.root / STATE_FILE).read_text("ascii").split()
        started = dt.datetime.fromisoformat(lines[0]).astimezone(dt.UTC)
        rewrite_from = day_timestamp(started)
        if len(lines) == 3 and lines[1] == "rewrite-from":
            day = dt.date.fromisoformat(lines[2])
            rewrite_from = min(rewrite_from, day_timestamp(dt.datetime(*day.timetuple()[:3])))
        return started, rewrite_from
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return None


def last_seal_start(store: SubmissionStore) -> dt.datetime | None:
    """When the last completed seal started (UTC), or None if never or unreadable."""
    state = _read_state(store)
    return None if state is None else state[0]


def _write_state(store: SubmissionStore, started: dt.datetime, rewrite_from: float) -> None:
    """Record the seal; the next one rewrites what is dated `rewrite_from` or later.

    That is the day this seal started (a commit during the seal carries
    that day) or, if a submission could not be sealed, the day of the
    oldest such one, so it is tried again.
    """
    day = day_date(rewrite_from)
    text = f"{started.strftime('%Y-%m-%dT%H:%M:%SZ')}\nrewrite-from {day}\n"
    # The seal fsyncs the data directory itself once it has tidied up.
    replace_file(store.root / STATE_FILE, text.encode("ascii"), sync_dir=False)


def recover_if_idle(store: SubmissionStore) -> bool:
    """At start-up: finish the clean-up of a seal that was killed; True if there was one.

    Skipped (False) while a seal, an export or a purge runs: that process
    owns the seal's work folder.
    """
    try:
        with flocked(store.maintenance_lock, fcntl.LOCK_EX | fcntl.LOCK_NB):
            return recover_interrupted_seal(store)
    except BlockingIOError:
        return False


def recover_interrupted_seal(store: SubmissionStore) -> bool:
    """Undo what a killed seal left: complete entries go back, the rest is deleted.

    Call it holding the maintenance lock. Returns True if there was anything
    to recover.
    """
    work = store.root / WORK_DIR
    if not work.exists() and not work.is_symlink():
        return False
    if work.is_symlink() or not work.is_dir():
        work.unlink()
        return True
    # With the two-rename fallback a crash can leave no `submissions/`.
    store.submissions_dir.mkdir(mode=DIR_MODE, exist_ok=True)
    for name in ("new", "old"):
        folder = work / name
        if folder.is_symlink() or not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            target = store.submissions_dir / entry.name
            if entry.name.startswith(PART_PREFIX) or target.exists() or target.is_symlink():
                continue  # an unfinished copy, or a copy of what is still in place
            os.rename(entry.path, target)
    fsync_dir(store.submissions_dir)
    shutil.rmtree(work)
    fsync_dir(store.root)
    return True


class _Sealer:
    def __init__(
        self,
        store: SubmissionStore,
        rng: random.Random,
        checkpoint: Checkpoint | None,
        everything: bool,
        reserve_bytes: int,
    ) -> None:
        self.store = store
        self.reserve_bytes = reserve_bytes
        self.rng = rng
        self.checkpoint = checkpoint or (lambda _step: None)
        self.work = store.root / WORK_DIR
        self.new = self.work / "new"
        self.trash = self.work / "trash"
        self.started = dt.datetime.now(dt.UTC)
        previous = None if everything else _read_state(store)
        # Whatever was committed on or after the day the last seal started
        # may postdate it; older submissions were rewritten by it or before.
        self.sealed_before = None if previous is None else previous[1]
        self.rewrite_from = day_timestamp(self.started)
        self.report = SealReport()

    def run(self) -> SealReport:
        for folder in (self.work, self.new, self.trash):
            folder.mkdir(mode=DIR_MODE)
        fsync_dir(self.store.root)
        self.checkpoint("work folder created")
        ids = self.store.ids()
        self.rng.shuffle(ids)
        for submission_id in ids:
            self._seal_one(submission_id)
        fsync_dir(self.new)
        self._swap()
        _write_state(self.store, self.started, self.rewrite_from)
        self.checkpoint("state written")
        # What is left is the old, now empty `submissions/` and `staging/`;
        # recovery deletes them, and would rescue anything that was not.
        recover_interrupted_seal(self.store)
        midnight = day_timestamp(self.started)
        os.utime(self.store.root, (midnight, midnight))
        fsync_dir(self.store.root)
        return self.report

    def _seal_one(self, submission_id: str) -> None:
        source = self.store.submissions_dir / submission_id
        day: float | None = None
        try:
            day = day_floor((source / MANIFEST_NAME).lstat().st_mtime)
            if self.sealed_before is not None and day < self.sealed_before:
                os.rename(source, self.new / submission_id)
                self.report.already_sealed += 1
                self.checkpoint("moved a sealed submission")
                return
            files = submission_files(source)
            size = sum(path.lstat().st_size for path in files)
        except (OSError, LayoutError) as exc:
            # Left where it is; the swap carries it over unchanged, and the
            # next seal tries again.
            self.report.not_sealed[submission_id] = str(exc)
            if day is not None:
                self.rewrite_from = min(self.rewrite_from, day)
            return
        if self.store.free_bytes() - size < self.reserve_bytes:
            # The copy would eat into the room kept for witnesses' uploads.
            self.rewrite_from = min(self.rewrite_from, day)
            self.report.not_sealed[submission_id] = (
                f"not enough free disk space to copy its {size} bytes and keep "
                "PORTAL_MIN_FREE_MB free; export and purge, then seal again"
            )
            return
        self._rewrite(submission_id, source, files, day)
        self.report.rewritten += 1

    def _rewrite(self, submission_id: str, source: Path, files: list[Path], day: float) -> None:
        part = self.new / f"{PART_PREFIX}{submission_id}"
        part.mkdir(mode=DIR_MODE)
        folders = {part}
        for path in files:
            relative = path.relative_to(source)
            target = part / relative
            if target.parent not in folders:
                target.parent.mkdir(mode=DIR_MODE)
                folders.add(target.parent)
            _copy_file(path, target)
            os.utime(target, (day, day))
            self.checkpoint("copied a file")
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            fsync_dir(folder)
            os.utime(folder, (day, day))
        os.rename(part, self.new / submission_id)
        fsync_dir(self.new)
        self.checkpoint("copy complete")
        # Only now may the original leave `submissions/`.
        os.rename(source, self.trash / submission_id)
        fsync_dir(self.store.submissions_dir)
        self.checkpoint("original moved to the trash")
        shutil.rmtree(self.trash / submission_id)
        self.checkpoint("original deleted")

    def _swap(self) -> None:
        midnight = day_timestamp(self.started)
        # Commits and new staging folders wait for the few renames below.
        with flocked(self.store.commit_lock, fcntl.LOCK_EX):
            # Submissions committed during the seal, and anything that is not
            # ours, move over unchanged: the next seal rewrites the former.
            late = list(os.scandir(self.store.submissions_dir))
            self.rng.shuffle(late)
            for entry in late:
                os.rename(entry.path, self.new / entry.name)
                if is_valid_id(entry.name) and entry.name not in self.report.not_sealed:
                    self.report.arrived_during_seal += 1
            fsync_dir(self.new)
            os.utime(self.new, (midnight, midnight))
            self.checkpoint("late arrivals moved")
            try:
                exchange(self.store.submissions_dir, self.new)
            except OSError as exc:
                if exc.errno not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
                    raise
                # Two renames: a crash between them leaves no `submissions/`,
                # which recovery recreates from `.seal/new` and `.seal/old`.
                os.rename(self.store.submissions_dir, self.work / "old")
                os.rename(self.new, self.store.submissions_dir)
            fsync_dir(self.store.root)
            self.checkpoint("submissions swapped")
            self._renew_staging(midnight)
            fsync_dir(self.store.root)
            self.checkpoint("staging renewed")

    def _renew_staging(self, midnight: float) -> None:
        """A fresh `staging/` when no upload is in progress; otherwise only its times reset."""
        staging = self.store.staging_dir
        if not any(os.scandir(staging)):
            fresh = self.work / STAGING_DIR
            fresh.mkdir(mode=DIR_MODE)
            os.utime(fresh, (midnight, midnight))
            try:
                exchange(staging, fresh)
            except OSError as exc:
                if exc.errno not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
                    raise
            else:
                self.report.staging_recreated = True
                return
        # Setting the mtime also sets the ctime to now: the seal's time.
        os.utime(staging, (midnight, midnight))


def _copy_file(source: Path, target: Path) -> None:
    """Copy `source` to a new file `target`, fsynced; the caller fsyncs the folder."""
    src = os.open(source, READ_FLAGS)
    try:
        with new_file(target, sync_dir=False) as out:
            dst = out.fileno()
            size = os.fstat(src).st_size
            offset = 0
            while offset < size:
                try:
                    copied = os.copy_file_range(src, dst, size - offset)
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
                        raise
                    copied = 0
                if copied == 0:
                    break
                offset += copied
            # Fallback (and a file that grew): plain reads and writes.
            os.lseek(src, offset, os.SEEK_SET)
            os.lseek(dst, offset, os.SEEK_SET)
            while chunk := os.read(src, CHUNK):
                write_all(dst, chunk)
    finally:
        os.close(src)


def seal(
    store: SubmissionStore,
    *,
    everything: bool = False,
    rng: random.Random | None = None,
    checkpoint: Checkpoint | None = None,
    reserve_bytes: int = 0,
) -> SealReport:
    """Rewrite what arrived since the last seal into fresh files, in random order.

    Call it holding `store.maintenance()`. A submission that cannot be read
    as one (a planted file, a symlink) is left as it is and reported.
    `checkpoint` is called after each durable step (tests kill the process
    there). With `everything`, submissions sealed before are rewritten too.
    A submission whose copy would leave less than `reserve_bytes` free is
    left unsealed and reported: witnesses' uploads come first.

    Raises:
        SealError: the seal stopped (a full disk, an I/O error); the data
            directory has been restored to complete submissions.
    """
    recover_interrupted_seal(store)
    sealer = _Sealer(store, rng or secrets.SystemRandom(), checkpoint, everything, reserve_bytes)
    try:
        return sealer.run()
    except BaseException as exc:
        # Put every submission back in place now rather than at the next
        # start (also after Ctrl-C); if even that fails, the next start does.
        with contextlib.suppress(OSError):
            recover_interrupted_seal(store)
        if not isinstance(exc, OSError):
            raise
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        reason = "the disk is full" if full else (exc.strerror or str(exc))
        raise SealError(f"the seal stopped: {reason}; no submission was lost") from exc
