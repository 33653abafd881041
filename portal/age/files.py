"""Decrypting to a file on disk without ever leaving partial plaintext behind."""

from __future__ import annotations

import hashlib
import os
import queue
import secrets
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from portal.age.age import Identity, Reader

_TEMP_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


class _PlaintextWriter:
    """Writes and hashes verified plaintext on a helper thread, beside decryption.

    The write and the hash both release the GIL, so while the caller reads
    and decrypts the next chunks they run on another core: decryption,
    hashing and writing overlap instead of taking turns. Chunks are handed
    over 1 MiB at a time through a short queue (bounded memory) and written
    with one writev each. A write error (a full disk) is raised by the next
    `write()` or by `close()`.
    """

    BATCH_CHUNKS = 16
    QUEUE_DEPTH = 4

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.digest = hashlib.sha256()
        self.size = 0
        self._batch: list[bytes] = []
        self._queue: queue.Queue[list[bytes] | None] = queue.Queue(maxsize=self.QUEUE_DEPTH)
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="age-plaintext", daemon=True)
        self._thread.start()

    def write(self, chunk: bytes) -> None:
        self._batch.append(chunk)
        if len(self._batch) >= self.BATCH_CHUNKS:
            self._hand_over()

    def _hand_over(self) -> None:
        if self._error is not None:
            raise self._error
        if self._batch:
            self._queue.put(self._batch)
            self._batch = []

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is not None:
                continue  # keep emptying the queue so the caller never blocks
            try:
                for chunk in batch:
                    self.digest.update(chunk)
                    self.size += len(chunk)
                _writev_all(self._fd, batch)
            except OSError as exc:
                self._error = exc

    def close(self) -> None:
        """Write out what is left and stop the thread; raise a write error."""
        try:
            self._hand_over()
        finally:
            self._stop()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """Stop the thread after an error elsewhere; whatever it wrote is discarded."""
        self._batch = []
        self._stop()

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


def _writev_all(fd: int, chunks: list[bytes]) -> None:
    written = os.writev(fd, chunks)
    if written < sum(len(chunk) for chunk in chunks):
        # A short write is rare (a signal, a nearly full disk): finish plainly.
        rest = memoryview(b"".join(chunks))[written:]
        while rest:
            rest = rest[os.write(fd, rest) :]


def decrypt_to_path(
    src: BinaryIO, identities: Sequence[Identity], dest: Path, *, mode: int = 0o600
) -> tuple[int, str]:
    """Decrypt `src` into `dest`, which appears only if the whole file verified.

    A truncated or corrupted age file releases authentic plaintext before the
    error is detected, so the plaintext goes to a temporary file next to
    `dest` (created exclusively, with `mode`) and is renamed over `dest` only
    after the final chunk has verified and the data is on disk. On any error
    the temporary file is removed and the error re-raised.

    Returns:
        The plaintext size and its SHA-256 as lowercase hex.
    """
    dest = Path(dest)
    reader = Reader(src, identities)
    temp = dest.with_name(f".{dest.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, _TEMP_FLAGS, mode)
    try:
        # The umask may have narrowed the mode at creation; make it exact.
        os.fchmod(fd, mode)
        out = _PlaintextWriter(fd)
        try:
            for chunk in reader.chunks():
                out.write(chunk)
        except BaseException:
            # The thread must stop before the file is closed and removed.
            out.abandon()
            raise
        out.close()
        os.fsync(fd)
        fd, open_fd = -1, fd
        os.close(open_fd)
        os.replace(temp, dest)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(dest.parent)
    return out.size, out.digest.hexdigest()


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry itself is synced.
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
