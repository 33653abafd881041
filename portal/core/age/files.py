"""Decrypting to a file on disk without ever leaving partial plaintext behind."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from portal.core.age.age import Identity, Reader

_TEMP_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


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
        digest = hashlib.sha256()
        size = 0
        with open(fd, "wb", closefd=False) as out:
            for chunk in reader.chunks():
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            out.flush()
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
    return size, digest.hexdigest()


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry itself is synced.
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
