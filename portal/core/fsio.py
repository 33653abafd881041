"""The file-system primitives every part of the portal writes its files with.

One small module, so that the flags and the durability steps are written
(and audited) once: standard library only, no Flask and no project imports,
so the store, the seal, the export, the mailbox and the reviewer's tool can
all use it. (`portal/core/age` stays standalone and writes no files: the
reviewer's tool writes what it decrypts with `replace_with_chunks`.)

The rules it applies everywhere:

- A new file is created exclusively (`O_EXCL`): it never overwrites or
  truncates anything, and with `O_NOFOLLOW` it never writes through a
  symbolic link planted at its name. `O_CLOEXEC` keeps the descriptor out
  of any child process (the `age` CLI, a browser).
- Files are `FILE_MODE` (0600) and folders `DIR_MODE` (0700): only the
  service's own user can read them, whatever the umask.
- Durable means: the data fsynced before the file is closed, then its folder
  fsynced so that the new name survives a power cut too.
- Some file systems refuse to fsync a directory (vfat and exFAT, the usual
  file systems of USB drives, answer EINVAL; some FUSE ones ENOTSUP). On
  those a directory entry cannot be made durable separately; the file data
  itself was fsynced, so `fsync_dir` accepts exactly those two answers and
  raises every other error (EIO on a failing drive, for one).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import queue
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

FILE_MODE = 0o600
DIR_MODE = 0o700
# Read and hash in blocks of 1 MiB: large enough that the system-call cost
# vanishes, small enough that memory stays bounded for any file size.
CHUNK = 1 << 20

# Exclusive creation: never an existing file, never through a link, never
# inherited by a child process.
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
APPEND_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
# The answers of a file system that cannot fsync a directory (see above).
_DIR_FSYNC_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP})

Data = bytes | bytearray | memoryview


class Writable(Protocol):
    """A raw file object: `write` may take only part of the data (or return None)."""

    def write(self, data: memoryview, /) -> int | None: ...


def write_all(out: int | Writable, data: Data) -> None:
    """Write all of `data` to a raw descriptor or an unbuffered file.

    `os.write` and the `write` of an unbuffered file may each write only part
    of what they are given (a pipe, a signal, a nearly full disk); this loops
    until every byte is written. A file object's `write` returning None is
    taken as all written (what buffered files do).
    """
    view = memoryview(data).cast("B")
    while view:
        written = os.write(out, view) if isinstance(out, int) else out.write(view)
        view = view[len(view) if written is None else written :]


def fsync_dir(path: Path) -> None:
    """Make the entries of a directory (a new file, a rename) durable.

    A file system that cannot fsync a directory at all (vfat, exFAT: EINVAL;
    some FUSE ones: ENOTSUP) is accepted silently: there the file data,
    already fsynced by the writer, is all that can be made durable. Any other
    error is raised.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fsync_dir_fd(fd)
    finally:
        os.close(fd)


def fsync_dir_fd(fd: int) -> None:
    """`fsync_dir` of a directory the caller already holds open."""
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _DIR_FSYNC_UNSUPPORTED:
            raise


def open_new(path: Path, mode: int = FILE_MODE) -> int:
    """Create `path` exclusively for writing and return its raw descriptor.

    A umask can only take bits away, so the file is never more open than
    `mode`. (No fchmod: vfat on a USB drive refuses it with EPERM.) The
    caller owns, and closes, the descriptor.

    Raises:
        FileExistsError: something (a file, a link, a folder) is at `path`.
    """
    return os.open(path, CREATE_FLAGS, mode)


def _write_and_close(fd: int, data: Data, *, fsync: bool) -> None:
    """Write all of `data` to `fd`, fsync it if asked; `fd` is closed in every case."""
    try:
        write_all(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _remove_failed(path: Path) -> None:
    # The file was created by this very call (O_EXCL), so removing it on
    # failure removes nothing that was there before.
    with contextlib.suppress(OSError):
        os.unlink(path)


def create_new(
    path: Path, data: Data, *, mode: int = FILE_MODE, fsync: bool = True, sync_dir: bool = True
) -> None:
    """Create `path` (never an existing file or a link), write `data` whole, make it durable.

    With `fsync` the data is fsynced before the file is closed and, unless
    `sync_dir` is False (a caller that renames the file next, or fsyncs the
    folder once for many files), the folder too. If anything fails the
    partial file is removed.

    Raises:
        FileExistsError: something is already at `path`.
        OSError: the write or an fsync failed (the disk is full, for one).
    """
    fd = open_new(path, mode)
    try:
        _write_and_close(fd, data, fsync=fsync)
    except BaseException:
        _remove_failed(path)
        raise
    if fsync and sync_dir:
        fsync_dir(path.parent)


def open_unbuffered(fd: int) -> BinaryIO:
    """A raw descriptor as an unbuffered file (it then owns the descriptor).

    Every write goes to the kernel at once, so an fsync sees it all; a write
    may take only part of the data (see `write_all`).
    """
    return open(fd, "wb", buffering=0)


@contextlib.contextmanager
def new_file(
    path: Path,
    *,
    mode: int = FILE_MODE,
    sync_dir: bool = True,
    opener: Callable[[int], BinaryIO] = open_unbuffered,
) -> Iterator[BinaryIO]:
    """Create `path` exclusively and yield it as a file, for writes streamed into it.

    When the block ends normally the file is flushed, fsynced and closed,
    then (unless `sync_dir` is False) its folder is fsynced. When the block
    or any of those steps raises, the file is closed and removed. `opener`
    turns the raw descriptor into the file object and owns it from then on
    (default: an unbuffered file; tests inject faults through it).

    Raises:
        FileExistsError: something is already at `path`.
    """
    fd = open_new(path, mode)
    try:
        out = opener(fd)
    except BaseException:
        os.close(fd)
        _remove_failed(path)
        raise
    try:
        yield out
        out.flush()
        os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            out.close()
        _remove_failed(path)
        raise
    out.close()
    if sync_dir:
        fsync_dir(path.parent)


def append_file(path: Path, data: Data, *, mode: int = FILE_MODE) -> None:
    """Append `data` to `path` (created `mode` if missing, never through a link), durably.

    The data is fsynced, and the folder too, in case the file was new.
    """
    _write_and_close(os.open(path, APPEND_FLAGS, mode), data, fsync=True)
    fsync_dir(path.parent)


def replace_file(path: Path, data: Data, *, mode: int = FILE_MODE, sync_dir: bool = True) -> None:
    """Replace `path` with `data` in one step: temporary file, fsync, rename, folder fsync.

    A reader sees the old content or the new, never a mix, also after a
    crash; the temporary file is removed if anything fails. With `sync_dir`
    False the caller fsyncs the folder itself (the new name is not durable
    until it does).
    """
    temp = _temporary_beside(path)
    create_new(temp, data, mode=mode, sync_dir=False)
    _move_into_place(temp, path, sync_dir=sync_dir)


def replace_with_chunks(
    path: Path,
    chunks: Iterable[Data],
    *,
    mode: int = FILE_MODE,
    sync_dir: bool = True,
    behind: bool = False,
    written: Callable[[Data], object] | None = None,
) -> tuple[int, str]:
    """`replace_file` for data that arrives in pieces: `path` changes only if all of them came.

    The pieces go to a temporary file beside `path` (created as `open_new`
    creates a file), which is fsynced and renamed over `path` only once
    `chunks` is exhausted. If the iterator raises (a decryption that finds
    the rest of the file truncated or altered, after releasing authentic
    pieces), or a write fails, the temporary file is removed, `path` is left
    as it was, and the error is raised.

    With `behind`, the pieces after the first `CHUNK` bytes are hashed and
    written on a helper thread (`_WriteBehind`) while the iterator makes the
    next ones: the caller must not change a piece it has yielded until
    `written(piece)` is called (on whichever thread wrote it), once the
    piece is hashed and written; from then on it may reuse it. Either way,
    the kernel is asked to start writing a large file out every
    `WRITEBACK_EVERY` bytes, so that the final fsync has little left to do.

    Returns:
        The size of the data and its SHA-256 as lowercase hex.
    """
    temp = _temporary_beside(path)
    fd = open_new(temp, mode)
    try:
        writer = _WriteBehind(fd, inline_bytes=CHUNK if behind else None, written=written)
        try:
            for chunk in chunks:
                writer.write(chunk)
            size, digest = writer.finish()
            os.fsync(fd)
        finally:
            writer.close()
            os.close(fd)
    except BaseException:
        _remove_failed(temp)
        raise
    _move_into_place(temp, path, sync_dir=sync_dir)
    return size, digest


# How much of a large file being written may be left unwritten before the
# kernel is asked to start writing it out (`start_writeback`). Each call
# blocks while the kernel queues that much for the disk, so smaller steps
# stall the writer less at a time: for `open` of 256 MiB, 8 MiB took the
# write-behind thread's waits from 0.044 to 0.028 s and the final fsync
# from 0.014 to 0.005 s, and the whole attachment from 0.45 to 0.40 s
# (alternated, docs/BENCHMARKS.md, "Round 5"). 4 MiB was no better.
WRITEBACK_EVERY = 8 * 1024 * 1024


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing a file's dirty pages out, without waiting.

    On Linux, POSIX_FADV_DONTNEED starts write-back of the dirty pages and
    drops the clean ones. It makes nothing durable (the writer's fsync still
    does): it keeps the disk busy while the writer goes on, so that the final
    fsync of a large file has little left to do, without stopping the writer
    the way fdatasync would.
    """
    with contextlib.suppress(OSError, AttributeError):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


class _WriteBehind:
    """Hashes and writes a file's pieces, from `inline_bytes` on (None: never) on a helper thread.

    hashlib and os.write release the GIL, so with a free core the helper
    hashes and writes one piece while the caller makes the next (decrypts
    it, for `open`). The first `inline_bytes` are done by the caller, so a
    small file starts no thread. At most `depth` pieces wait; `write()`
    blocks beyond that, so memory stays bounded. A failure on the helper is
    raised by the next `write()` or by `finish()`. `close()` (always, after
    `finish()` or instead of it) ends the helper.
    """

    def __init__(
        self,
        fd: int,
        *,
        inline_bytes: int | None,
        depth: int = 2,
        written: Callable[[Data], object] | None = None,
    ) -> None:
        self._fd = fd
        self._written = written
        self._digest = hashlib.sha256()
        self._size = 0
        self._unwritten = 0
        self._inline_left = inline_bytes
        self._queue: queue.Queue[Data | None] = queue.Queue(maxsize=depth)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _put(self, data: Data) -> None:
        write_all(self._fd, data)
        self._digest.update(data)
        self._size += len(data)
        self._unwritten += len(data)
        if self._unwritten >= WRITEBACK_EVERY:
            # The disk writes while the next pieces are made.
            start_writeback(self._fd)
            self._unwritten = 0
        if self._written is not None:
            self._written(data)

    def _run(self) -> None:
        while (piece := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._put(piece)
                except BaseException as exc:  # noqa: BLE001 (raised on the caller's thread)
                    self._error = exc

    def write(self, data: Data) -> None:
        if self._error is not None:
            raise self._error
        if self._thread is None:
            if self._inline_left is None or len(data) <= self._inline_left:
                if self._inline_left is not None:
                    self._inline_left -= len(data)
                self._put(data)
                return
            self._thread = threading.Thread(target=self._run, name="write-behind", daemon=True)
            self._thread.start()
        self._queue.put(data)

    def finish(self) -> tuple[int, str]:
        """Wait until every piece is written; return the size and the SHA-256 (hex)."""
        self.close()
        if self._error is not None:
            raise self._error
        return self._size, self._digest.hexdigest()

    def close(self) -> None:
        if self._thread is not None:
            # The helper drains the queue whatever happened, so this never blocks for good.
            self._queue.put(None)
            self._thread.join()
            self._thread = None


def _temporary_beside(path: Path) -> Path:
    # A dot name ending in .tmp: the reviewer's tool sweeps such leftovers
    # of a killed run (review/discovery.py).
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")


def _move_into_place(temp: Path, path: Path, *, sync_dir: bool) -> None:
    """Rename a complete, fsynced temporary file over `path`; then fsync the folder."""
    try:
        os.replace(temp, path)
    except BaseException:
        _remove_failed(temp)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def sha256_file(path: Path, *, drop_cache: bool = False) -> str:
    """The SHA-256 (hex) of a file read in `CHUNK` blocks; a link is refused (ELOOP).

    With `drop_cache`, the file's pages are first dropped from the page cache
    (they are clean once fsynced), so the bytes hashed are read back from the
    device: how the export checks that the medium holds what was written.
    """
    digest = hashlib.sha256()
    fd = os.open(path, READ_FLAGS)
    try:
        if drop_cache and hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        while chunk := os.read(fd, CHUNK):
            digest.update(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


def open_lock_file(path: Path) -> int:
    """Open (creating it `FILE_MODE` if missing) a lock file; return the descriptor to flock.

    Never through a link, never inherited by a child process.
    """
    return os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)


@contextlib.contextmanager
def flocked(path: Path, operation: int) -> Iterator[None]:
    """Hold an flock on `path` (created 0600 if missing) for the block.

    Raises:
        BlockingIOError: `operation` includes LOCK_NB and the lock is held.
    """
    fd = open_lock_file(path)
    try:
        fcntl.flock(fd, operation)
        yield
    finally:
        # Closing the descriptor releases the lock; so does the death of the
        # process, which is why a killed worker never leaves a lock behind.
        os.close(fd)
